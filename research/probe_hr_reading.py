"""Where the default model's reading is lost: can its HR tower (ConvNeXt 32-256 at 192 px, 48x48 fused map) tell
characters apart, and would an OCR-style pre-training target teach it to?

Per-cell character targets come from the world's regions (``minigemini.synthetic.regions.character_targets``: the box of
each drawn string split among its glyphs), on text, document and chart scenes.
Two readers, the same head (1x1 conv over the fused map -> 37 classes: blank, a-z, 0-9), data and time budget:
  frozen   the committed default model's HR tower (after stage 2), frozen: only the head trains (a linear probe)
  dense    a fresh tower of the same shape trained end to end on the per-cell targets
Held-out scenes: character accuracy over text cells; a string (word or number) is read when every one of its
glyphs' cells votes its character.  A diagnostic, not part of the recipe.

    python research/probe_hr_reading.py --minutes 10 --train 3000 --test 300
    python research/probe_hr_reading.py --readers frozen --model runs/synthetic/export   # another model's tower
"""

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minigemini.synthetic import world as synthetic
from minigemini.synthetic.regions import CHARACTERS, character_targets

CELL = 4
SIZE = 192
MAP = SIZE // CELL


def scene_with_chars(seed: int):
    """A text, document or chart scene, its per-cell character map, and per drawn string the (class, cells) of each
    run of columns one character holds."""
    scene = synthetic.make_scene(seed, kind=("text", "document", "chart")[seed % 3])
    regions = [r.record() for r in scene.regions if r.text]
    strings = []
    for region in regions:
        alone = character_targets([region], MAP)
        glyphs, previous = [], 0
        for column in range(MAP):
            cells = alone[:, column].nonzero().flatten().tolist()
            value = int(alone[cells[0], column]) if cells else 0
            if value and value == previous:
                glyphs[-1][1].extend((r, column) for r in cells)
            elif value:
                glyphs.append((value, [(r, column) for r in cells]))
            previous = value
        strings.append(glyphs)
    return scene.image, character_targets(regions, MAP).long(), strings


def dataset(seeds, processor):
    images, targets, strings = [], [], []
    for s in seeds:
        image, target, st = scene_with_chars(s)
        images.append(image)
        targets.append(target)
        strings.append(st)
    hr = torch.cat([processor.image_processor([im])["high_res_pixel_values"] for im in images])
    return hr, torch.stack(targets), strings


def run(name, tower, trainable, hr, targets, test_hr, test_targets, test_strings, minutes, lr):
    head = torch.nn.Conv2d(480, len(CHARACTERS) + 1, 1)
    params = list(head.parameters()) + (list(tower.parameters()) if trainable else [])
    tower.requires_grad_(trainable)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    weight = torch.ones(len(CHARACTERS) + 1)
    weight[0] = 0.1  # most cells are blank
    started, step, seen = time.time(), 0, 0
    g = torch.Generator().manual_seed(0)
    while time.time() - started < minutes * 60:
        idx = torch.randint(0, len(hr), (32,), generator=g)
        with torch.set_grad_enabled(trainable), torch.autocast("cpu", dtype=torch.bfloat16):
            feats = tower(hr[idx])
        logits = head(feats.float())
        loss = F.cross_entropy(logits, targets[idx], weight=weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        seen += 32
        if step % 50 == 0:
            print(f"{name} step {step} loss {loss.item():.3f} ({time.time() - started:.0f} s)", flush=True)
    tower.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        preds = torch.cat([head(tower(test_hr[i : i + 32]).float()).argmax(1) for i in range(0, len(test_hr), 32)])
    text_cells = test_targets > 0
    char_acc = (preds[text_cells] == test_targets[text_cells]).float().mean().item()
    words = right = 0
    for p, strings in zip(preds, test_strings):
        for boxes in strings:
            if not boxes:
                continue
            words += 1
            votes = [[p[r, c].item() for r, c in cells] for _, cells in boxes]
            right += all(max(set(v), key=v.count) == cls for v, (cls, _) in zip(votes, boxes))
    print(
        f"RESULT {name}: {step} steps, {seen} images, char accuracy {100 * char_acc:.1f} %, strings read "
        f"{100 * right / max(words, 1):.1f} % of {words}",
        flush=True,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10, help="training time of each reader")
    parser.add_argument("--train", type=int, default=3000, help="training scenes")
    parser.add_argument("--test", type=int, default=300, help="held-out scenes")
    parser.add_argument("--model", default="minigemini/assets/default_model", help="the default model's export")
    parser.add_argument("--readers", default="frozen,dense", help="which readers to train (frozen, dense or both)")
    args = parser.parse_args()
    torch.manual_seed(0)
    from minigemini.encoders import HighResEncoder
    from minigemini.synthetic.default_model import load_default_model

    model, processor = load_default_model(args.model, dtype=torch.float32)
    t = time.time()
    hr, targets, _ = dataset(range(100_000, 100_000 + args.train), processor)
    test = dataset(range(900_000, 900_000 + args.test), processor)
    print(f"data {time.time() - t:.0f} s; text cells {100 * (targets > 0).float().mean():.1f} %", flush=True)
    frozen = model.model.vision_tower_aux
    if "frozen" in args.readers:
        run(f"frozen tower of {args.model} + linear head", frozen, False, hr, targets, *test, args.minutes, 3e-3)
    if "dense" in args.readers:
        fresh = HighResEncoder(model.config)
        run("fresh tower, dense char targets", fresh, True, hr, targets, *test, args.minutes, 2e-3)


if __name__ == "__main__":
    main()
