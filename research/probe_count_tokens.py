"""Does the vision side carry the count the model is asked for?  Linear probes beside the model's answers.

Shape scenes with one group of shapes (so the count is the number of shapes in the image): the image's 64 tokens,
mean-pooled, at three points -- the LR (ViT) tokens, after patch info mining, after the projector (what the LLM
reads) -- and a linear 9-class probe per point trained on training scenes and scored on held-out ones; "answers" is
the model's own exact answers to the held-out scenes' count question.  A mean over the tokens is what one attention
head with even weights hands the LLM, so a point that names the count this way gives the LLM an easy read; if the
answers fall short of it, the loss is in the read-out (stage 2), as `probe_number_tokens.py` finds for numbers.
A diagnostic, not part of the recipe.

    python research/probe_count_tokens.py --train 3000 --test 600
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from probe_number_tokens import answer_accuracy, load_model, probe, vision_side  # noqa: E402

from minigemini.synthetic import world as synthetic  # noqa: E402

POINTS = ("lr tokens", "mined tokens", "llm tokens")


def one_group_scenes(seeds):
    """(image, count, count question) per shape scene whose shapes all share one colour and kind."""
    scenes = []
    for seed in seeds:
        scene = synthetic.make_scene(seed, kind="shapes")
        questions = [q for q in scene.questions if q.type == "count"]
        if len(questions) == 1 and len({region.words[:2] for region in scene.regions}) == 1:
            scenes.append((scene.image, int(questions[0].answer), questions[0].text))
    return scenes


def pooled_features(model, processor, scenes, batch_size=32):
    """{point: (N, D)}: each image's tokens averaged, at each point."""
    found = {point: [] for point in POINTS}
    for start in range(0, len(scenes), batch_size):
        _, *tokens_at = vision_side(model, processor, [image for image, *_ in scenes[start : start + batch_size]])
        for point, tokens in zip(POINTS, tokens_at):
            found[point].append(tokens.float().mean(dim=1))
    return {point: torch.cat(rows) for point, rows in found.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minigemini/assets/default_model", help="model export or folder")
    parser.add_argument("--train", type=int, default=3000, help="training shape scenes (about half have one group)")
    parser.add_argument("--test", type=int, default=600, help="held-out shape scenes")
    args = parser.parse_args()
    torch.manual_seed(0)

    started = time.time()
    train = one_group_scenes(range(300_000, 300_000 + args.train))
    test = one_group_scenes(range(900_000, 900_000 + args.test))
    model, processor = load_model(args.model)
    train_x, test_x = pooled_features(model, processor, train), pooled_features(model, processor, test)
    train_y = torch.tensor([count - 1 for _, count, _ in train])
    test_y = torch.tensor([count - 1 for _, count, _ in test])
    accuracy = [probe(train_x[p], train_y, test_x[p], test_y, classes=9) for p in POINTS]
    pairs = [(image, question) for image, _, question in test]
    accuracy.append(answer_accuracy(model, processor, pairs, [str(count) for _, count, _ in test], max_new_tokens=4))
    print("| model | scenes (train / test) | " + " | ".join(POINTS) + " | answers |")
    print("|---|---|" + "---|" * (len(POINTS) + 1))
    cells = " | ".join(f"{100 * a:.1f} %" for a in accuracy)
    print(f"| {args.model} | {len(train)} / {len(test)} | {cells} |")
    print(f"({time.time() - started:.0f} s)")


if __name__ == "__main__":
    main()
