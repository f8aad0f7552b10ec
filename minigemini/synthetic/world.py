"""A synthetic visual world: seeded scenes with captions, questions, dialogues and picture requests.

Everything a Mini-Gemini needs to be trained and checked offline, drawn with PIL and DejaVu fonts:

- **Scenes** (one of four kinds) on a plain, gradient or noisy light background, laid out on a 3 x 3 grid of cells
  named like the renderer's positions (``top left`` ... ``centre`` ... ``bottom right``):
  ``shapes`` (1-9 shapes of one kind and colour, plus up to two single shapes of other kinds and colours),
  ``text`` (one or two short words or numbers written *small*: legible in the high-resolution image only, plus a
  shape or two), ``chart`` (a bar chart of 3-4 coloured bars with their values written above them) and
  ``document`` (a page listing 3-4 ``word  number`` lines in small print).
- **Supervision** from what was drawn: a caption (stage 1 and encoder pre-training), short-answer questions of
  eight types (``QUESTION_TYPES``), multi-turn dialogues of several questions and a description (stage 2), and
  text-only picture requests in the paper's protocol (the user turn ends with `` <GEN>``, the answer holds
  ``<h>description</h>`` in the language of ``minigemini.synthetic.render``, which draws it back), and *regions*:
  the box of every shape, bar, word, number and document line with the words an answer about it would use
  (colour, shape, count, cell; the text itself), which the align step can bind to the visual tokens there
  (``region_weight``), and the string drawn in it, which the reading pre-training teaches the HR tower to name.

The same seed gives the same files.  ``write_world`` writes a training set and a held-out test set (use another
seed for the test set); ``mgm data synth`` is its command line.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from minigemini.generation import PROMPT_CLOSE, PROMPT_OPEN, request_image
from minigemini.synthetic.fonts import dejavu_font
from minigemini.synthetic.render import CELL_NAMES, COLOURS, SHAPES, SceneSpec, ShapeSpec, draw_shape, parse_description
from minigemini.templates import SHORT_ANSWER

__all__ = [
    "CELL_NAMES",
    "NUMBER_WORDS",
    "QUESTION_TYPES",
    "READING_TYPES",
    "SCENE_KINDS",
    "WORDS",
    "PictureRequest",
    "Question",
    "Region",
    "Scene",
    "WorldOptions",
    "dejavu_font",
    "describe_spec",
    "make_picture_request",
    "make_scene",
    "scene_dialogue",
    "scene_drill",
    "scene_seeds",
    "spec_matches",
]

SCENE_KINDS = ("shapes", "text", "chart", "document")
QUESTION_TYPES = ("colour", "shape", "count", "position", "word", "number", "chart", "document")
#: Question types whose answer is small print: readable in the high-resolution image only.
READING_TYPES = ("word", "number", "chart", "document")
WORDS = (
    "cat", "dog", "sun", "tree", "book", "fish", "moon", "car", "hat", "cup", "key", "box", "pen", "map", "egg",
    "bird", "ship", "door", "lamp", "rain", "rose", "milk", "bell", "frog", "kite", "leaf", "ring", "sock", "wolf",
    "bear", "cake", "star",
)  # fmt: skip
#: Colours shapes, bars and requests use (grey/white excluded: too close to the backgrounds).
PALETTE = ("red", "green", "blue", "yellow", "orange", "purple", "pink", "brown", "black", "cyan")
_BACKGROUNDS = {
    "white": (250, 250, 250),
    "beige": (240, 232, 215),
    "pale blue": (222, 234, 248),
    "lavender": (236, 228, 245),
    "mint": (226, 243, 230),
}
_BACKGROUND_STYLES = ("plain", "gradient", "noisy")
_INK = ((15, 15, 15), (40, 40, 90), (70, 20, 20))
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@dataclass(frozen=True)
class WorldOptions:
    image_size: int = 192
    text_size: tuple[int, int] = (10, 14)  # font size range of small print, in pixels of the saved image
    kinds: tuple[str, ...] = SCENE_KINDS
    kind_weights: tuple[float, ...] = (0.35, 0.3, 0.15, 0.2)

    def validate(self) -> None:
        if not 96 <= self.image_size <= 2048:
            raise ValueError(f"image size must be between 96 and 2048 pixels, got {self.image_size}")
        low, high = self.text_size
        if not 6 <= low <= high <= self.image_size // 8:
            raise ValueError(
                f"text size range {low}-{high} px must satisfy 6 <= min <= max <= image size / 8 "
                f"({self.image_size // 8})"
            )
        unknown = sorted(set(self.kinds) - set(SCENE_KINDS))
        if unknown or not self.kinds:
            raise ValueError(f"scene kinds must be among {SCENE_KINDS}, got {list(self.kinds)}")
        if len(self.kind_weights) != len(self.kinds) or min(self.kind_weights) < 0 or not sum(self.kind_weights):
            raise ValueError("kind weights must be one non-negative number per scene kind, not all zero")


@dataclass(frozen=True)
class Question:
    type: str  # one of QUESTION_TYPES
    text: str
    answer: str


@dataclass(frozen=True)
class Region:
    """Where something was drawn (box as fractions of the image: left, top, right, bottom) and the words that name it
    there: what an answer about it would say (colour, shape, count, cell, the written word or number)."""

    box: tuple[float, float, float, float]
    words: tuple[str, ...]
    text: str = ""  # the string drawn in the box, if any (the glyphs an OCR-style target can be read from)

    def record(self) -> dict:
        """The region as captions.json holds it (``minigemini.synthetic.regions``): box, words, and text where drawn."""
        return {"box": list(self.box), "words": list(self.words), **({"text": self.text} if self.text else {})}


@dataclass
class Scene:
    kind: str
    image: Image.Image
    caption: str
    questions: list[Question] = field(default_factory=list)
    regions: list[Region] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------- drawing helpers


def _background(rng: random.Random, size: int) -> tuple[Image.Image, str]:
    name = rng.choice(sorted(_BACKGROUNDS))
    style = rng.choice(_BACKGROUND_STYLES)
    base = np.array(_BACKGROUNDS[name], dtype=np.float32)
    pixels = np.broadcast_to(base, (size, size, 3)).copy()
    if style == "gradient":  # darken towards one side by up to 18 %
        ramp = np.linspace(1.0, 0.82, size, dtype=np.float32)
        pixels *= ramp[:, None, None] if rng.random() < 0.5 else ramp[None, :, None]
    elif style == "noisy":
        pixels += np.random.default_rng(rng.getrandbits(32)).normal(0, 10, pixels.shape).astype(np.float32)
    image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    return image, f"{style} {name}"


def _cell_box(cell: int, size: int) -> tuple[float, float, float, float]:
    step = size / 3
    column, row = cell % 3, cell // 3
    return column * step, row * step, (column + 1) * step, (row + 1) * step


def _write(draw: ImageDraw.ImageDraw, text: str, centre: tuple[float, float], font, fill) -> tuple[float, ...]:
    """Draws ``text`` centred on ``centre``; returns its box in pixels."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    origin = (centre[0] - (right + left) / 2, centre[1] - (bottom + top) / 2)
    draw.text(origin, text, font=font, fill=fill)
    return draw.textbbox(origin, text, font=font)


def _region(box: tuple[float, ...], size: int, *words: str, text: str = "") -> Region:
    return Region(tuple(round(v / size, 4) for v in box), tuple(w for w in words if w), text)


def _cell_words(cell: int) -> tuple[str, ...]:
    return tuple(CELL_NAMES[cell].split())


def _plural(kind: str, count: int) -> str:
    return kind if count == 1 else f"{kind}s"


def _count_word(count: int) -> str:
    return NUMBER_WORDS[count] if count < len(NUMBER_WORDS) else str(count)


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _ask(kind: str, text: str, answer: str) -> Question:
    return Question(kind, f"{text}\n{SHORT_ANSWER}", answer)


def _place_shapes(draw, rng: random.Random, size: int, cells: list[int], kind: str, colour: str) -> list[Region]:
    step = size / 3
    regions = []
    for cell in cells:
        x0, y0, x1, y1 = _cell_box(cell, size)
        radius = step * rng.uniform(0.26, 0.36)
        jitter = step * 0.08
        cx, cy = (x0 + x1) / 2 + rng.uniform(-jitter, jitter), (y0 + y1) / 2 + rng.uniform(-jitter, jitter)
        draw_shape(draw, kind, cx, cy, radius, COLOURS[colour])
        box = (cx - radius, cy - radius, cx + radius, cy + radius)
        regions.append(_region(box, size, colour, kind, str(len(cells)), *_cell_words(cell)))
    return regions


def _shape_groups(rng: random.Random, free: list[int], max_main: int, extras: int):
    """A main group (one kind and colour, 1..max_main shapes) and ``extras`` single shapes of other kinds and
    colours, each on its own cell taken from ``free``.  Returns [(kind, colour, cells)]."""
    kinds = rng.sample(SHAPES, 1 + extras)
    colours = rng.sample(PALETTE, 1 + extras)
    count = rng.randint(1, max(1, min(max_main, len(free) - extras)))
    groups = []
    for index, (kind, colour) in enumerate(zip(kinds, colours)):
        take = count if index == 0 else 1
        cells, free[:] = free[:take], free[take:]
        groups.append((kind, colour, cells))
    return groups


def _shape_questions(groups) -> list[Question]:
    questions = []
    for kind, colour, cells in groups:
        count = len(cells)
        questions.append(_ask("count", f"How many {kind}s are there?", str(count)))
        verb = "is the" if count == 1 else "are the"
        questions.append(_ask("colour", f"What colour {verb} {_plural(kind, count)}?", colour))
        thing = "object" if count == 1 else "objects"
        questions.append(_ask("shape", f"What shape {verb} {colour} {thing}?", kind))
        if count == 1:
            questions.append(_ask("position", f"Where is the {colour} {kind}?", CELL_NAMES[cells[0]]))
    return questions


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _shape_caption(groups) -> list[str]:
    parts = []
    for kind, colour, cells in groups:
        count = len(cells)
        where = f" at the {CELL_NAMES[cells[0]]}" if count == 1 else ""
        parts.append(f"{_article(colour) if count == 1 else _count_word(count)} {colour} {_plural(kind, count)}{where}")
    return parts


# ----------------------------------------------------------------------------------------------- the four scenes


def _shapes_scene(rng, image, draw, size, options) -> Scene:
    free = rng.sample(range(9), 9)
    groups = _shape_groups(rng, free, max_main=9, extras=rng.choice((0, 0, 1, 2)))
    regions = [r for kind, colour, cells in groups for r in _place_shapes(draw, rng, size, cells, kind, colour)]
    return Scene("shapes", image, _join(_shape_caption(groups)).capitalize(), _shape_questions(groups), regions)


def _text_scene(rng, image, draw, size, options) -> Scene:
    free = rng.sample(range(9), 9)
    items, regions = [], []
    for _ in range(rng.choice((1, 1, 2))):
        is_word = rng.random() < 0.6
        text = rng.choice(WORDS) if is_word else str(rng.randint(0, 99))
        cell = free.pop()
        font = dejavu_font(rng.randint(*options.text_size), bold=rng.random() < 0.5)
        x0, y0, x1, y1 = _cell_box(cell, size)
        jitter = (x1 - x0) * 0.12
        centre = ((x0 + x1) / 2 + rng.uniform(-jitter, jitter), (y0 + y1) / 2 + rng.uniform(-jitter, jitter))
        box = _write(draw, text, centre, font, rng.choice(_INK))
        regions.append(_region(box, size, text, *_cell_words(cell), text=text))
        items.append(("word" if is_word else "number", text, CELL_NAMES[cell]))
    groups = _shape_groups(rng, free, max_main=3, extras=rng.choice((0, 1))) if rng.random() < 0.7 else []
    for kind, colour, cells in groups:
        regions += _place_shapes(draw, rng, size, cells, kind, colour)
    questions = [_ask(t, f"What {t} is written at the {where}?", text) for t, text, where in items]
    if len(items) == 1:
        questions.append(_ask(items[0][0], f"What {items[0][0]} is written in the image?", items[0][1]))
    written = [f'the {t} "{text}" written at the {where}' for t, text, where in items]
    caption = _join(_shape_caption(groups) + written)
    return Scene("text", image, caption[0].upper() + caption[1:], questions + _shape_questions(groups), regions)


def _chart_scene(rng, image, draw, size, options) -> Scene:
    colours = rng.sample(PALETTE, rng.choice((3, 4)))
    values = [rng.randint(5, 99) for _ in colours]
    margin, base = size * 0.1, size * 0.9
    top = size * 0.2  # room for the labels above the tallest bar
    slot = (size - 2 * margin) / len(colours)
    font = dejavu_font(rng.randint(*options.text_size))
    ink = rng.choice(_INK)
    draw.line((margin * 0.6, base, size - margin * 0.6, base), fill=ink, width=2)
    regions = []
    for index, (colour, value) in enumerate(zip(colours, values)):
        x0 = margin + index * slot + slot * 0.2
        x1 = margin + (index + 1) * slot - slot * 0.2
        height = (base - top) * value / 100
        draw.rectangle((x0, base - height, x1, base), fill=COLOURS[colour])
        label = _write(draw, str(value), ((x0 + x1) / 2, base - height - font.size * 0.7), font, ink)
        regions += [
            _region((x0, base - height, x1, base), size, colour),
            _region(label, size, colour, str(value), text=str(value)),
        ]
    questions = [_ask("chart", f"What is the value of the {c} bar?", str(v)) for c, v in zip(colours, values)]
    caption = "A bar chart of " + _join([f"{_article(c)} {c} bar of {v}" for c, v in zip(colours, values)])
    return Scene("chart", image, caption, questions, regions)


def _document_scene(rng, image, draw, size, options) -> Scene:
    words = rng.sample(WORDS, rng.choice((3, 4)))
    numbers = [rng.randint(0, 99) for _ in words]
    font = dejavu_font(rng.randint(*options.text_size))
    x0, y0 = size * rng.uniform(0.08, 0.16), size * rng.uniform(0.08, 0.16)
    x1, y1 = size - size * rng.uniform(0.08, 0.16), size - size * rng.uniform(0.08, 0.16)
    draw.rectangle((x0, y0, x1, y1), fill=(252, 252, 248), outline=(90, 90, 90))
    line_height = (y1 - y0) / (len(words) + 1)
    ink = rng.choice(_INK)
    regions = []
    for index, (word, number) in enumerate(zip(words, numbers)):
        y = y0 + line_height * (index + 1)
        _, top, _, bottom = draw.textbbox((0, 0), word, font=font)
        origin = (x0 + size * 0.06, y - (bottom + top) / 2)
        draw.text(origin, word, font=font, fill=ink)
        word_box = draw.textbbox(origin, word, font=font)
        _, top, right, bottom = draw.textbbox((0, 0), str(number), font=font)
        origin = (x1 - size * 0.06 - right, y - (bottom + top) / 2)
        draw.text(origin, str(number), font=font, fill=ink)
        number_box = draw.textbbox(origin, str(number), font=font)
        # a line binds both words to both boxes
        regions += [_region(word_box, size, word, str(number), text=word)]
        regions += [_region(number_box, size, word, str(number), text=str(number))]
    questions = [
        _ask("document", f"What number is next to {w} in the document?", str(n)) for w, n in zip(words, numbers)
    ]
    caption = "A document listing " + _join([f"{w} {n}" for w, n in zip(words, numbers)])
    return Scene("document", image, caption, questions, regions)


_SCENES = {"shapes": _shapes_scene, "text": _text_scene, "chart": _chart_scene, "document": _document_scene}


def make_scene(seed: int, options: WorldOptions = WorldOptions(), kind: str | None = None) -> Scene:
    """One scene, fully determined by ``seed`` (and ``kind``, drawn from the options' weights when None)."""
    rng = random.Random(seed)
    kind = kind or rng.choices(options.kinds, weights=options.kind_weights)[0]
    image, background = _background(rng, options.image_size)
    scene = _SCENES[kind](rng, image, ImageDraw.Draw(image), options.image_size, options)
    scene.caption = f"{scene.caption} on a {background} background."
    return scene


# ----------------------------------------------------------------------------------------------- picture requests

_REQUEST_OPENERS = (
    "Draw {}.",
    "Generate an image of {}.",
    "Can you make a picture showing {}?",
    "I would like a drawing of {}.",
    "Please create an image with {}.",
    "Show me {}.",
    "Paint {}, please.",
    "Could you draw {} for me?",
)
_POSITION_PARAPHRASES = {
    "top left": ("at the top left", "in the top left corner", "in the upper left"),
    "top right": ("at the top right", "in the top right corner", "in the upper right"),
    "bottom left": ("at the bottom left", "in the bottom left corner", "in the lower left"),
    "bottom right": ("at the bottom right", "in the bottom right corner", "in the lower right"),
    "left": ("on the left", "on the left side"),
    "right": ("on the right", "on the right side"),
    "top": ("at the top", "along the top"),
    "bottom": ("at the bottom", "along the bottom"),
    "centre": ("in the centre", "in the middle", "in the center"),
}
_ANSWER_OPENERS = ("Sure, here it is.", "Here is your picture.", "Of course! Drawing it now.")


@dataclass(frozen=True)
class PictureRequest:
    request: str  # the user's words, without the <GEN> tag
    description: str  # the canonical description the answer wraps in <h>...</h>
    spec: SceneSpec

    def conversation(self) -> list[dict[str, str]]:
        opener = _ANSWER_OPENERS[len(self.request) % len(_ANSWER_OPENERS)]
        return [
            {"from": "human", "value": request_image(self.request)},
            {"from": "gpt", "value": f"{opener} {PROMPT_OPEN}{self.description}{PROMPT_CLOSE}"},
        ]


def describe_spec(spec: SceneSpec) -> str:
    """The canonical description of a scene spec, which ``parse_description`` reads back to the same spec."""
    parts = []
    for shape in spec.shapes:
        where = f" {_POSITION_PARAPHRASES[shape.position][0]}" if shape.position else ""
        parts.append(f"{_count_word(shape.count)} {shape.colour} {_plural(shape.kind, shape.count)}{where}")
    text = _join(parts)
    if spec.background != "white":
        text += f" on {_article(spec.background)} {spec.background} background"
    if spec.words:
        text += " with the word " + " ".join(f'"{w}"' for w in spec.words)
    return text


def make_picture_request(seed: int) -> PictureRequest:
    """A seeded picture request in varied words, and the description a trained model should answer with."""
    rng = random.Random(seed)
    cells = rng.sample(CELL_NAMES, 2)
    kinds = rng.sample(SHAPES, 2)
    colours = rng.sample(PALETTE, 3)
    shapes = []
    for index in range(rng.choice((1, 1, 2))):
        position = cells[index] if rng.random() < 0.7 else None
        shapes.append(ShapeSpec(kinds[index], rng.randint(1, 4), colours[index], position=position))
    if len(shapes) == 2 and not all(s.position for s in shapes):  # unplaced shapes would share the centre
        shapes = [
            s if s.position else ShapeSpec(s.kind, s.count, s.colour, position=cells[i]) for i, s in enumerate(shapes)
        ]
    background = colours[2] if rng.random() < 0.4 else "white"
    words = (rng.choice(WORDS),) if rng.random() < 0.25 else ()
    spec = SceneSpec(shapes=tuple(shapes), background=background, words=words)

    phrases = []
    for shape in spec.shapes:
        count = str(shape.count) if rng.random() < 0.5 else _count_word(shape.count)
        if shape.count == 1 and rng.random() < 0.5:
            count = _article(shape.colour)
        where = f" {rng.choice(_POSITION_PARAPHRASES[shape.position])}" if shape.position else ""
        phrases.append(f"{count} {shape.colour} {_plural(shape.kind, shape.count)}{where}")
    request_text = _join(phrases)
    if background != "white":
        request_text += f" on {_article(background)} {background} background"
    if words:
        request_text += f' and the word "{words[0]}"'
    return PictureRequest(rng.choice(_REQUEST_OPENERS).format(request_text), describe_spec(spec), spec)


def spec_matches(wanted: SceneSpec, description: str) -> bool:
    """Whether ``description`` (e.g. a model's ``<h>`` prompt) draws the scene ``wanted`` asks for: the same shapes
    (kind, count, colour, position), background and words, as read by the renderer's own parser."""
    got = parse_description(description)
    key = lambda s: (s.kind, s.count, s.colour, s.position)
    return (
        sorted(map(key, got.shapes), key=str) == sorted(map(key, wanted.shapes), key=str)
        and got.background == wanted.background
        and tuple(w.lower() for w in got.words) == tuple(w.lower() for w in wanted.words)
    )


# ----------------------------------------------------------------------------------------------- writing a world


def scene_dialogue(scene: Scene, rng: random.Random, max_questions: int) -> list[dict[str, str]]:
    questions = rng.sample(scene.questions, min(len(scene.questions), max_questions))
    turns: list[tuple[str, str]] = [(q.text, q.answer) for q in questions]
    describe = ("Describe the image.", scene.caption)
    turns.insert(rng.randint(0, len(turns)), describe)
    return _conversation(turns)


def scene_drill(scene: Scene, types: tuple[str, ...]) -> list[dict[str, str]]:
    """Every question of ``types`` the scene has, in one short dialogue (empty when it has none)."""
    return _conversation([(q.text, q.answer) for q in scene.questions if q.type in types])


def _conversation(turns: list[tuple[str, str]]) -> list[dict[str, str]]:
    conversation = []
    for index, (question, answer) in enumerate(turns):
        conversation.append({"from": "human", "value": f"<image>\n{question}" if index == 0 else question})
        conversation.append({"from": "gpt", "value": answer})
    return conversation


def scene_seeds(seed: int, count: int | None) -> Iterator[int]:
    """``count`` (None: endless) scene seeds drawn from ``seed``."""
    rng = random.Random(seed)
    index = 0
    while count is None or index < count:
        yield rng.getrandbits(48)
        index += 1
