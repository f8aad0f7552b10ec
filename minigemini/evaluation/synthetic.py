"""A small benchmark of the project's own, drawn with PIL, so the whole evaluation path runs offline.

Four kinds of question, each with a one-word answer: the colour of a shape, the kind of shape, how many
shapes there are, and the word written in the image.  Written in LLaVA's question-JSONL format
(``question_id, image, text, answer, category``) with the images beside it, and scored with VQA accuracy
(a single reference: normalised exact match, so "Two." matches "2").
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from .prompts import SHORT_ANSWER

__all__ = ["COLOURS", "SHAPES", "SYNTHETIC_WORDS", "write_synthetic_benchmark"]

COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 200, 30)}
SHAPES = ("circle", "square", "triangle")
SYNTHETIC_WORDS = ("cat", "dog", "sun", "tree", "book", "fish", "star", "moon")
_SIZE = 128
_BACKGROUND = (245, 245, 240)


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], fill) -> None:
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=fill)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the bitmap font, small but legible
        return ImageFont.load_default()


def _boxes(rng: random.Random, count: int, side: int) -> list[tuple[int, int, int, int]]:
    """``count`` non-overlapping squares of ``side`` pixels on a grid of cells."""
    cells = [(r, c) for r in range(3) for c in range(3)]
    rng.shuffle(cells)
    cell = _SIZE // 3
    boxes = []
    for r, c in cells[:count]:
        x0 = c * cell + (cell - side) // 2
        y0 = r * cell + (cell - side) // 2
        boxes.append((x0, y0, x0 + side, y0 + side))
    return boxes


def _make(kind: str, rng: random.Random) -> tuple[Image.Image, str, str]:
    image = Image.new("RGB", (_SIZE, _SIZE), _BACKGROUND)
    draw = ImageDraw.Draw(image)
    colour = rng.choice(sorted(COLOURS))
    shape = rng.choice(SHAPES)
    if kind == "colour":
        _draw_shape(draw, shape, (24, 24, 104, 104), COLOURS[colour])
        return image, f"What color is the {shape}?", colour
    if kind == "shape":
        _draw_shape(draw, shape, (24, 24, 104, 104), COLOURS[colour])
        return image, "What shape is shown in the image?", shape
    if kind == "count":
        count = rng.randint(1, 5)
        for box in _boxes(rng, count, 30):
            _draw_shape(draw, shape, box, COLOURS[colour])
        return image, f"How many {shape}s are there in the image?", str(count)
    word = rng.choice(SYNTHETIC_WORDS)
    font = _font(36)
    left, top, right, bottom = draw.textbbox((0, 0), word, font=font)
    draw.text(
        ((_SIZE - (right - left)) // 2 - left, (_SIZE - (bottom - top)) // 2 - top), word, fill=(20, 20, 20), font=font
    )
    return image, "What word is written in the image?", word


def write_synthetic_benchmark(directory: str | Path, n: int = 40, seed: int = 0) -> Path:
    """Write ``n`` questions (kinds in rotation) to ``directory/questions.jsonl`` and ``directory/images/``;
    the same ``seed`` gives the same files.  Returns the JSONL path."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    directory = Path(directory)
    (directory / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    kinds = ("colour", "shape", "count", "word")
    path = directory / "questions.jsonl"
    with open(path, "w", encoding="utf-8") as handle:
        for index in range(n):
            kind = kinds[index % len(kinds)]
            image, question, answer = _make(kind, rng)
            name = f"images/{index:05d}.png"
            image.save(directory / name)
            row = {
                "question_id": f"synthetic-{index:05d}",
                "image": name,
                "text": f"{question}\n{SHORT_ANSWER}",
                "answer": answer,
                "category": kind,
            }
            handle.write(json.dumps(row) + "\n")
    return path
