"""Where a model loses the numbers it is asked to read: linear probes at each step from the HR tower to the LLM.

For every number drawn in held-out text, document and chart scenes (0-99), the features at four points of the
model's vision side are taken where the number is:
  hr cells     the HR tower's fused map, averaged over the number's box (what the read step trained)
  lr token     the LR (ViT) token whose patch holds the box's centre, before mining
  mined token  that token after patch info mining (LR token + what it drew from its HR window)
  llm token    that token after the projector: what the LLM reads
A linear classifier (100 classes) per point is trained on the numbers of training scenes and scored on held-out
ones; "answers" is the model's own exact answers to the held-out scenes' number, chart and document questions.
A point that names a number the next one cannot has lost it there; if the LLM token names it and the answers do
not, the loss is in the LLM's read-out (stage 2).  A diagnostic, not part of the recipe.

    python research/probe_number_tokens.py --train 3000 --test 500
    python research/probe_number_tokens.py --model runs/synthetic/export
"""

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minigemini.synthetic import world as synthetic
from minigemini.synthetic.regions import box_cells

POINTS = ("hr cells", "lr token", "mined token", "llm token")


def number_regions(seeds):
    """(image, [(box, number)], [(question, answer)]) per scene with at least one drawn number."""
    scenes = []
    for seed in seeds:
        scene = synthetic.make_scene(seed, kind=("text", "document", "chart")[seed % 3])
        numbers = [(r.box, int(r.text)) for r in scene.regions if r.text.isdigit()]
        questions = [(q.text, q.answer) for q in scene.questions if q.type in ("number", "chart", "document")]
        if numbers:
            scenes.append((scene.image, numbers, questions))
    return scenes


def centre_token(box, side: int) -> int:
    """Row-major index of the token of a side x side grid whose patch holds the box's centre."""
    row, column = (min(int((low + high) / 2 * side), side - 1) for low, high in ((box[1], box[3]), (box[0], box[2])))
    return row * side + column


@torch.no_grad()
def vision_side(model, processor, images):
    """(HR fused map, LR tokens, mined tokens, projected tokens) of a batch of images."""
    inner = model.model
    inputs = processor.image_processor(images)
    lr = inner.vision_tower(inputs["pixel_values"])
    hr = inner.vision_tower_aux(inputs["high_res_pixel_values"])
    mined = inner.mining(lr, hr)
    return hr, lr, mined, inner.mm_projector(mined)


def features(model, processor, scenes, batch_size=32):
    """{point: (R, D)} and labels (R,) over every number of ``scenes``."""
    side = model.config.tokens_per_side
    found = {point: [] for point in POINTS}
    labels = []
    for start in range(0, len(scenes), batch_size):
        chunk = scenes[start : start + batch_size]
        hr, lr, mined, projected = vision_side(model, processor, [image for image, *_ in chunk])
        for b, (_, numbers, _) in enumerate(chunk):
            for box, number in numbers:
                rows, columns = box_cells(box, hr.shape[-1])
                token = centre_token(box, side)
                found["hr cells"].append(hr[b][:, rows[:, None], columns[None, :]].mean(dim=(1, 2)))
                found["lr token"].append(lr[b, token])
                found["mined token"].append(mined[b, token])
                found["llm token"].append(projected[b, token])
                labels.append(number)
    return {point: torch.stack(rows).float() for point, rows in found.items()}, torch.tensor(labels)


def probe(train_x, train_y, test_x, test_y, epochs=400, lr=1e-2, classes=100):
    """Held-out accuracy of a linear classifier (standardised inputs, full-batch AdamW)."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    head = torch.nn.Linear(train_x.shape[1], classes)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-2)
    for _ in range(epochs):
        loss = F.cross_entropy(head(train_x), train_y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return (head(test_x).argmax(-1) == test_y).float().mean().item()


def load_model(folder):
    """The default model's export (vision weights + adapter), or any plain model folder."""
    from minigemini.modeling import MiniGeminiForConditionalGeneration
    from minigemini.processing import MiniGeminiProcessor
    from minigemini.synthetic.default_model import default_model_available, load_default_model

    if default_model_available(folder):
        return load_default_model(folder, dtype=torch.float32)
    model = MiniGeminiForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
    return model, MiniGeminiProcessor.from_pretrained(folder)


def answer_accuracy(model, processor, pairs, truth, max_new_tokens=8) -> float:
    """Mean accuracy of the model's answers to (image, question) ``pairs``, scored as the ablation table is."""
    from minigemini.evaluation.normalize import vqa_accuracy
    from minigemini.inference import batch_chat

    answers = batch_chat(model, pairs, processor, batch_size=16, max_new_tokens=max_new_tokens, progress=False)
    return sum(vqa_accuracy(a or "", [t]) for a, t in zip(answers, truth)) / len(truth)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model", action="append", help="model export or folder, repeatable (default: the committed default model)"
    )
    parser.add_argument("--train", type=int, default=3000, help="training scenes")
    parser.add_argument("--test", type=int, default=500, help="held-out scenes")
    args = parser.parse_args()
    torch.manual_seed(0)

    started = time.time()
    train_scenes = number_regions(range(200_000, 200_000 + args.train))
    test_scenes = number_regions(range(800_000, 800_000 + args.test))
    print(f"scenes drawn in {time.time() - started:.0f} s", flush=True)
    print("| model | numbers (train / test) | " + " | ".join(POINTS) + " | answers |")
    print("|---|---|" + "---|" * (len(POINTS) + 1))
    for export in args.model or ["minigemini/assets/default_model"]:
        model, processor = load_model(export)
        train_x, train_y = features(model, processor, train_scenes)
        test_x, test_y = features(model, processor, test_scenes)
        accuracy = [probe(train_x[p], train_y, test_x[p], test_y) for p in POINTS]
        pairs = [(image, question) for image, _, questions in test_scenes for question, _ in questions]
        truth = [answer for _, _, questions in test_scenes for _, answer in questions]
        accuracy.append(answer_accuracy(model, processor, pairs, truth))
        cells = " | ".join(f"{100 * a:.1f} %" for a in accuracy)
        print(f"| {export} | {len(train_y)} / {len(test_y)} | {cells} |", flush=True)
    print(f"({time.time() - started:.0f} s)")


if __name__ == "__main__":
    main()
