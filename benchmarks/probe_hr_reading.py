"""Where the default model's reading is lost: can its HR tower (ConvNeXt 32-256 at 192 px, 48x48 fused map) tell
characters apart, and would an OCR-style pre-training target teach it to?

Per-cell character targets come from the world's own text drawing (its ``ImageDraw.text`` calls are recorded while
``make_scene`` draws text, document and chart scenes; a cell is a glyph's when its centre lies in the glyph's box).
Two readers, the same head (1x1 conv over the fused map -> 37 classes: blank, a-z, 0-9), data and time budget:
  frozen   the committed default model's HR tower (after stage 2), frozen: only the head trains (a linear probe)
  dense    a fresh tower of the same shape trained end to end on the per-cell targets
Held-out scenes: character accuracy over text cells; a string (word or number) is read when every one of its
glyphs' cells votes its character.  A diagnostic, not part of the recipe.

    python benchmarks/probe_hr_reading.py --minutes 10 --train 3000 --test 300
"""

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minigemini.data import synthetic

CLASSES = "abcdefghijklmnopqrstuvwxyz0123456789"
CELL = 4
SIZE = 192
MAP = SIZE // CELL
_record: list = []
_text = ImageDraw.ImageDraw.text


# Record the world's text drawing (position, string, font) without touching the generator.
def recording_text(self, xy, text, fill=None, font=None, *args, **kwargs):
    _record.append((self, xy, text, font))
    return _text(self, xy, text, fill, font, *args, **kwargs)


ImageDraw.ImageDraw.text = recording_text


def scene_with_chars(seed: int):
    _record.clear()
    kind = ("text", "document", "chart")[seed % 3]
    scene = synthetic.make_scene(seed, kind=kind)
    target = torch.zeros(MAP, MAP, dtype=torch.long)
    strings = []  # per drawn string: [(class, rows, columns) of each glyph]
    for draw, (x, y), text, font in _record:
        boxes = []
        for i, ch in enumerate(text.lower()):
            if ch not in CLASSES:
                continue
            x0 = x + font.getlength(text[:i])
            left, top, right, bottom = draw.textbbox((x0, y), text[i], font=font)
            c0, c1 = int(left // CELL), int(-(-right // CELL))
            r0, r1 = int(top // CELL), int(-(-bottom // CELL))
            c0, r0, c1, r1 = max(c0, 0), max(r0, 0), min(c1, MAP), min(r1, MAP)
            # the cells whose centre lies inside the glyph's box
            cs = [c for c in range(c0, c1) if left <= c * CELL + CELL / 2 <= right]
            rs = [r for r in range(r0, r1) if top <= r * CELL + CELL / 2 <= bottom]
            for r in rs:
                for c in cs:
                    target[r, c] = CLASSES.index(ch) + 1
            boxes.append((CLASSES.index(ch) + 1, rs, cs))
        strings.append(boxes)
    return scene.image, target, strings


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
    head = torch.nn.Conv2d(480, len(CLASSES) + 1, 1)
    params = list(head.parameters()) + (list(tower.parameters()) if trainable else [])
    tower.requires_grad_(trainable)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    weight = torch.ones(len(CLASSES) + 1)
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
            ok = True
            for cls, rs, cs in boxes:
                votes = [p[r, c].item() for r in rs for c in cs]
                if not votes or max(set(votes), key=votes.count) != cls:
                    ok = False
                    break
            right += ok
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
    args = parser.parse_args()
    torch.manual_seed(0)
    from minigemini.default_model import load_default_model
    from minigemini.encoders import HighResEncoder

    model, processor = load_default_model(args.model, dtype=torch.float32)
    t = time.time()
    hr, targets, _ = dataset(range(100_000, 100_000 + args.train), processor)
    test = dataset(range(900_000, 900_000 + args.test), processor)
    print(f"data {time.time() - t:.0f} s; text cells {100 * (targets > 0).float().mean():.1f} %", flush=True)
    frozen = model.model.vision_tower_aux
    run("frozen committed tower + linear head", frozen, False, hr, targets, *test, args.minutes, 3e-3)
    fresh = HighResEncoder(model.config)
    run("fresh tower, dense char targets", fresh, True, hr, targets, *test, args.minutes, 2e-3)


if __name__ == "__main__":
    main()
