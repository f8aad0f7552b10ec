"""Draw a simple scene from a short English description -- the offline text-to-image backend.

The language (deliberately small; extend the tables below to grow the world):

- **Shapes**: ``circle``, ``square``, ``triangle``, ``star`` (singular or plural).  A shape phrase is
  ``[count] [size] [colour] [size] shape``: ``a red circle``, ``three small blue stars``, ``2 big green squares``.
  Counts: ``a``/``an``/``one`` ... ``twelve`` or digits (at most ``MAX_PER_PHRASE`` per phrase, ``MAX_SHAPES`` in
  all).  Sizes: ``small``/``tiny``/``little``, ``big``/``large``/``huge``.  No colour: one is picked with the seed
  (never the background's).
- **Positions** follow the shape phrase they place, before the next shape phrase: ``on the left``, ``on the
  right``, ``at the top``, ``at the bottom``, ``in the centre``/``center``/``middle``, and the corners ``top left``,
  ``top right``, ``bottom left``, ``bottom right`` (``upper``/``lower`` work too).  The canvas is a 3x3 grid of cells;
  shapes sharing a cell are laid out in a small grid inside it.  Shapes without a position fill the whole canvas,
  or the centre cell when some shapes have positions.
- **Background**: ``<colour> background`` (``on a yellow background``); default white.
- **Words**: text in double quotes (``"hello"``, also curly quotes) is written in a band along the bottom; the
  shapes then use the area above it.
- Colours: the keys of ``COLOURS``.  Everything else in the description is ignored.

Rendering is deterministic: the same description, size and seed give the same pixels.  The seed moves shapes by a
few percent of their slot and picks missing colours.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field

from PIL import Image, ImageDraw

from minigemini.synthetic.fonts import dejavu_font

__all__ = [
    "CELL_NAMES",
    "COLOURS",
    "MAX_PER_PHRASE",
    "MAX_SHAPES",
    "SHAPES",
    "PlacedShape",
    "RenderedScene",
    "SceneSpec",
    "ShapeSpec",
    "draw_scene",
    "draw_shape",
    "parse_description",
    "render",
]

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "yellow": (250, 215, 30),
    "orange": (250, 140, 20),
    "purple": (130, 50, 180),
    "pink": (245, 130, 190),
    "brown": (130, 80, 35),
    "black": (15, 15, 15),
    "white": (250, 250, 250),
    "gray": (128, 128, 128),
    "grey": (128, 128, 128),
    "cyan": (30, 200, 220),
}
SHAPES = ("circle", "square", "triangle", "star")
MAX_PER_PHRASE = 12
MAX_SHAPES = 24

_NUMBERS = {"a": 1, "an": 1, "one": 1, "single": 1} | dict(
    zip(("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"), range(2, 13))
)
_SIZES = {"small": 0.55, "tiny": 0.55, "little": 0.55, "big": 1.0, "large": 1.0, "huge": 1.0}
_DEFAULT_SIZE = 0.8
# (pattern, (column, row)) -- corners first so that "top left" is not read as "top".
_POSITIONS: tuple[tuple[str, tuple[int, int]], ...] = (
    (r"(?:top|upper)[ -]left", (0, 0)),
    (r"(?:top|upper)[ -]right", (2, 0)),
    (r"(?:bottom|lower)[ -]left", (0, 2)),
    (r"(?:bottom|lower)[ -]right", (2, 2)),
    (r"\bleft\b", (0, 1)),
    (r"\bright\b", (2, 1)),
    (r"\b(?:top|upper)\b", (1, 0)),
    (r"\b(?:bottom|lower)\b", (1, 2)),
    (r"\b(?:centre|center|middle)\b", (1, 1)),
)
#: Cells of the 3 x 3 layout, row-major: the names the world writes and this parser reads.
CELL_NAMES = ("top left", "top", "top right", "left", "centre", "right", "bottom left", "bottom", "bottom right")
_POSITION_NAMES = {(index % 3, index // 3): name for index, name in enumerate(CELL_NAMES)}  # (column, row) -> name

_COLOUR_RE = "|".join(sorted(COLOURS, key=len, reverse=True))
_SIZE_RE = "|".join(_SIZES)
_COUNT_RE = "|".join(_NUMBERS) + r"|\d+"
_SHAPE_PHRASE = re.compile(
    rf"\b(?:(?P<count>{_COUNT_RE})\s+)?(?:(?P<size1>{_SIZE_RE})\s+)?(?:(?P<colour>{_COLOUR_RE})\s+)?"
    rf"(?:(?P<size2>{_SIZE_RE})\s+)?(?P<shape>{'|'.join(SHAPES)})(?:e?s)?\b"
)
_BACKGROUND = re.compile(rf"\b(?P<colour>{_COLOUR_RE})\s+background\b")
_QUOTED = re.compile(r'"([^"]*)"|“([^”]*)”')


@dataclass(frozen=True)
class ShapeSpec:
    """One shape phrase: ``count`` shapes of one kind, colour (None: seeded pick), size factor and cell."""

    kind: str
    count: int = 1
    colour: str | None = None
    size: float = _DEFAULT_SIZE
    position: str | None = None  # a key of the position table's names ("left", "top right", ...) or None


@dataclass(frozen=True)
class SceneSpec:
    shapes: tuple[ShapeSpec, ...] = ()
    background: str = "white"
    words: tuple[str, ...] = ()


@dataclass(frozen=True)
class PlacedShape:
    kind: str
    colour: str
    center: tuple[float, float]
    radius: float


@dataclass
class RenderedScene:
    image: Image.Image
    spec: SceneSpec
    shapes: list[PlacedShape] = field(default_factory=list)
    text_box: tuple[int, int, int, int] | None = None  # where the words were written (x0, y0, x1, y1)


def _position_of(text: str) -> str | None:
    for pattern, cell in _POSITIONS:
        if re.search(pattern, text):
            return _POSITION_NAMES[cell]
    return None


def parse_description(description: str) -> SceneSpec:
    """Read a description into a ``SceneSpec`` (see the module docstring for the language)."""
    words = tuple(w.strip() for pair in _QUOTED.findall(description) for w in pair if w.strip())
    text = _QUOTED.sub(" ", description).lower()
    background = "white"
    match = _BACKGROUND.search(text)
    if match:
        background = match.group("colour")
        text = text[: match.start()] + " " + text[match.end() :]

    matches = list(_SHAPE_PHRASE.finditer(text))
    shapes, total = [], 0
    for index, match in enumerate(matches):
        count_word = match.group("count")
        if count_word is None:
            count = 1
        else:
            count = int(count_word) if count_word.isdigit() else _NUMBERS[count_word]
        count = max(0, min(count, MAX_PER_PHRASE, MAX_SHAPES - total))
        if count == 0:
            continue
        total += count
        size_word = match.group("size1") or match.group("size2")
        following = text[match.end() : matches[index + 1].start() if index + 1 < len(matches) else len(text)]
        shapes.append(
            ShapeSpec(
                kind=match.group("shape"),
                count=count,
                colour=match.group("colour"),
                size=_SIZES.get(size_word, _DEFAULT_SIZE),
                position=_position_of(following),
            )
        )
    return SceneSpec(shapes=tuple(shapes), background=background, words=words)


_CELLS = {name: cell for cell, name in _POSITION_NAMES.items()}


def _slots(box: tuple[float, float, float, float], count: int) -> list[tuple[float, float, float, float]]:
    """Split a box into ``count`` near-square slots, row-major."""
    x0, y0, x1, y1 = box
    width, height = x1 - x0, y1 - y0
    columns = max(1, math.ceil(math.sqrt(count * width / max(height, 1e-6))))
    columns = min(columns, count)
    rows = math.ceil(count / columns)
    slot_w, slot_h = width / columns, height / rows
    return [
        (
            x0 + (i % columns) * slot_w,
            y0 + (i // columns) * slot_h,
            x0 + (i % columns + 1) * slot_w,
            y0 + (i // columns + 1) * slot_h,
        )
        for i in range(count)
    ]


def _polygon(kind: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if kind == "triangle":
        angles = [-90, 30, 150]
        return [(cx + r * math.cos(math.radians(a)), cy + r * math.sin(math.radians(a))) for a in angles]
    points = []  # a five-pointed star, one point up
    for i in range(10):
        radius = r if i % 2 == 0 else r * 0.45
        angle = math.radians(-90 + 36 * i)
        points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    return points


def draw_shape(draw: ImageDraw.ImageDraw, kind: str, cx: float, cy: float, radius: float, fill) -> None:
    """One shape of ``SHAPES`` centred at (cx, cy) inside a circle of ``radius``."""
    if kind == "circle":
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=fill)
    elif kind == "square":
        half = radius * 0.85
        draw.rectangle((cx - half, cy - half, cx + half, cy + half), fill=fill)
    else:
        draw.polygon(_polygon(kind, cx, cy, radius), fill=fill)


def _text_colour(background: tuple[int, int, int]) -> tuple[int, int, int]:
    luminance = 0.299 * background[0] + 0.587 * background[1] + 0.114 * background[2]
    return (0, 0, 0) if luminance > 140 else (255, 255, 255)


def draw_scene(spec: SceneSpec | str, size: int | tuple[int, int] = 512, seed: int = 0) -> RenderedScene:
    """Render a scene and report where each shape went (centre, radius) and where the words are."""
    if isinstance(spec, str):
        spec = parse_description(spec)
    width, height = (size, size) if isinstance(size, int) else size
    if width < 16 or height < 16:
        raise ValueError(f"image size must be at least 16x16, got {width}x{height}")
    rng = random.Random(seed)
    background = COLOURS.get(spec.background, COLOURS["white"])
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)

    shapes_bottom = height * (0.78 if spec.words else 1.0)
    cell_w, cell_h = width / 3, shapes_bottom / 3
    any_positioned = any(s.position for s in spec.shapes)
    regions: dict[str, list[ShapeSpec]] = {}
    for shape in spec.shapes:
        region = shape.position or ("centre" if any_positioned else "all")
        regions.setdefault(region, []).extend([shape] * shape.count)

    palette = [name for name in COLOURS if name != "grey" and COLOURS[name] != background]
    placed: list[PlacedShape] = []
    for region, members in regions.items():
        if region == "all":
            box = (0.0, 0.0, float(width), shapes_bottom)
        else:
            column, row = _CELLS[region]
            box = (column * cell_w, row * cell_h, (column + 1) * cell_w, (row + 1) * cell_h)
        for shape, (x0, y0, x1, y1) in zip(members, _slots(box, len(members))):
            slot = min(x1 - x0, y1 - y0)
            jitter = 0.06 * slot
            cx = (x0 + x1) / 2 + rng.uniform(-jitter, jitter)
            cy = (y0 + y1) / 2 + rng.uniform(-jitter, jitter)
            radius = 0.42 * slot * shape.size
            colour = shape.colour or rng.choice(palette)
            draw_shape(draw, shape.kind, cx, cy, radius, COLOURS[colour])
            placed.append(PlacedShape(shape.kind, colour, (cx, cy), radius))

    text_box = None
    if spec.words:
        text = " ".join(spec.words)
        band_top, band_height = shapes_bottom, height - shapes_bottom
        font_size = max(8, int(band_height * 0.7))
        while True:
            font = dejavu_font(font_size, bold=True)
            left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
            if right - left <= width * 0.94 or font_size <= 8:
                break
            font_size = max(8, int(font_size * 0.9))
        x = (width - (right - left)) / 2 - left
        y = band_top + (band_height - (bottom - top)) / 2 - top
        draw.text((x, y), text, fill=_text_colour(background), font=font)
        text_box = tuple(int(v) for v in draw.textbbox((x, y), text, font=font))
    return RenderedScene(image=image, spec=spec, shapes=placed, text_box=text_box)


def render(description: str | SceneSpec, size: int | tuple[int, int] = 512, seed: int = 0) -> Image.Image:
    """The picture for a description (see the module docstring); deterministic in (description, size, seed)."""
    return draw_scene(description, size=size, seed=seed).image
