"""Do a model's visual tokens carry the words of what they show?  Token-level recall on held-out synthetic scenes.

For each scene (seeds the training world never drew) the world's regions say which words belong on which of the 8x8
visual tokens ("red", "star", "1", "top", "left" on the red star's).  For every token a region covers, the probe
ranks the candidate words by cosine between the token and the LLM's input embedding of the word and scores the share
of the token's own words among its top k (k = how many it has): 1.0 when every covered token resembles exactly its
region's words.  Per scene kind and overall.  It reads the vision side only: no LLM pass, no answers.

    python research/probe_token_binding.py minigemini/assets/default_model runs/synthetic/mining/aligned ...

Each argument is a whole model folder (an ``init``/``aligned``/``stage1`` step of the recipe) or an export.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minigemini.image_processing import MiniGeminiImageProcessor
from minigemini.synthetic.default_model import default_model_available, load_default_model
from minigemini.synthetic.recipe.alignment import (
    caption_targets,
    covered_tokens,
    recall_at_own_k,
    region_targets,
    word_tokens,
)
from minigemini.synthetic.world import NUMBER_WORDS, SHAPES, WORDS, make_scene


def load(folder: Path):
    if default_model_available(folder):
        return load_default_model(folder, dtype=torch.float32)
    from minigemini.modeling import MiniGeminiForConditionalGeneration
    from minigemini.processing import MiniGeminiProcessor

    model = MiniGeminiForConditionalGeneration.from_pretrained(str(folder), dtype=torch.float32).eval()
    return model, MiniGeminiProcessor.from_pretrained(str(folder))


def token_recall(folder: Path, scenes: list) -> dict[str, float]:
    model, processor = load(folder)
    config = model.config
    side = config.vision_config.image_size // config.vision_config.patch_size
    images = MiniGeminiImageProcessor(image_size=config.vision_config.image_size,
                                      image_size_aux=config.image_size_aux)  # fmt: skip
    regions = [[r.record() for r in s.regions] for s in scenes]
    words = {w for scene in regions for region in scene for w in region["words"]}
    candidates, _ = caption_targets([s.caption for s in scenes], processor.tokenizer, 0.5, words)
    vocabulary = F.normalize(model.get_input_embeddings().weight.detach().float(), dim=-1)
    wanted = torch.stack([region_targets(r, side, candidates, processor.tokenizer) for r in regions]).float()
    tokens = []
    with torch.inference_mode():
        for start in range(0, len(scenes), 50):
            pixels = images(images=[s.image for s in scenes[start : start + 50]], return_tensors="pt")
            tokens.append(model.model.get_image_features(pixels["pixel_values"], pixels["high_res_pixel_values"]))
    tokens = F.normalize(torch.cat(tokens).float(), dim=-1)
    similarity = tokens @ vocabulary[candidates].T
    covered = wanted.sum(-1) > 0
    result = {"all": recall_at_own_k(similarity[covered], wanted[covered])}
    for kind in sorted({s.kind for s in scenes}):
        rows = torch.tensor([s.kind == kind for s in scenes])[:, None] & covered
        result[kind] = recall_at_own_k(similarity[rows], wanted[rows])
    return result | written_named(tokens, regions, vocabulary, processor, side)


def _closest(similarity: torch.Tensor, choices: list[list[int]], k: int) -> list[int]:
    """The ``k`` choices (each a list of token columns) some covered token resembles most."""
    return torch.stack([similarity[:, columns].max() for columns in choices]).topk(k).indices.tolist()


def written_named(tokens, regions, embeddings, processor, side) -> dict[str, float]:
    """Shares of drawn words (numbers) whose covered tokens resemble that word (those digits) most, and of shape
    groups whose tokens resemble their count most (as a digit, as a word)."""
    words = [word_tokens(w, processor.tokenizer, bare=True) for w in WORDS]
    digits = [word_tokens(str(d), processor.tokenizer, bare=True) for d in range(10)]
    counts = {"count as digit": digits[1:], "count as word": [word_tokens(w, processor.tokenizer, bare=True)
                                                              for w in NUMBER_WORDS[1:10]]}  # fmt: skip
    named = {"word": [], "digits": [], "count as digit": [], "count as word": []}
    for image, scene in zip(tokens, regions):
        groups: dict[tuple, list[torch.Tensor]] = {}  # (colour, shape, count) -> covered tokens of its shapes
        for region in scene:
            found = region["words"]
            if not region.get("text") and len(found) >= 3 and found[1] in SHAPES:
                groups.setdefault(tuple(found[:3]), []).append(covered_tokens(region["box"], side))
        for (_, _, count), covered in groups.items():
            covered = torch.cat(covered).unique()
            if not len(covered) or not count.isdigit():
                continue
            similarity = image[covered] @ embeddings.T
            for name, choices in counts.items():
                named[name].append(_closest(similarity, choices, 1)[0] + 1 == int(count))
        for region in scene:
            covered = covered_tokens(region["box"], side)
            if not region.get("text") or not len(covered):
                continue
            similarity = image[covered] @ embeddings.T
            if region["text"].isdigit():
                drawn = {int(d) for d in region["text"]}
                named["digits"].append(set(_closest(similarity, digits, len(drawn))) == drawn)
            elif region["text"] in WORDS:
                named["word"].append(WORDS[_closest(similarity, words, 1)[0]] == region["text"])
    return {name: sum(hits) / max(len(hits), 1) for name, hits in named.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--scenes", type=int, default=300)
    args = parser.parse_args()
    scenes = [make_scene(10**8 + i) for i in range(args.scenes)]  # seeds the training world never drew
    print(f"token recall of the region words, {args.scenes} held-out scenes\n")
    for folder in args.models:
        result = token_recall(folder, scenes)
        print(f"{folder}: " + "  ".join(f"{k} {v:.2f}" for k, v in result.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
