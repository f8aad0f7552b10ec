"""Regions of caption records: where something is drawn in the image and what names it there.

A caption record may carry ``"regions": [{"box": [left, top, right, bottom], "words": [...], "text": "..."}]`` (box
in fractions of the image; ``words``: what an answer about the region would say; ``text``, optional: the string drawn
in the box).  The synthetic world writes them; the align step binds visual tokens to ``words``
(``region_weight``), the reading pre-training teaches the HR tower to name each ``text`` (``string_targets``).
"""

from __future__ import annotations

import torch

from minigemini.data.jsonio import iter_raw
from minigemini.synthetic.fonts import dejavu_font

__all__ = ["CHARACTERS", "box_cells", "character_targets", "read_caption_regions", "string_targets"]

CHARACTERS = "abcdefghijklmnopqrstuvwxyz0123456789"  # class i + 1; 0 is "no character"


def _valid(region) -> bool:
    if not isinstance(region, dict):
        return False
    box, words, text = region.get("box"), region.get("words"), region.get("text", "")
    return (
        isinstance(box, list)
        and len(box) == 4
        and all(isinstance(v, (int, float)) for v in box)
        and 0 <= box[0] <= box[2] <= 1
        and 0 <= box[1] <= box[3] <= 1
        and isinstance(words, list)
        and isinstance(text, str)
    )


def read_caption_regions(data: list[str]) -> dict[str, list[dict]]:
    """Caption record id -> its regions, for the records of ``data`` that have any; a malformed region is an error
    that names its record."""
    found = {}
    for path in data:
        for source, record, _ in iter_raw(path):
            if not (isinstance(record, dict) and record.get("regions") and record.get("id") is not None):
                continue
            for region in record["regions"]:
                if not _valid(region):
                    raise ValueError(
                        f'{source}: a region must be {{"box": [left, top, right, bottom] in fractions of the '
                        f'image (0 <= left <= right <= 1, same for top/bottom), "words": [...], optionally '
                        f'"text": "drawn string"}}, got {region!r}'
                    )
            found[str(record["id"])] = record["regions"]
    return found


def character_targets(regions: list[dict], side: int) -> torch.Tensor:
    """A (side, side) uint8 map of which character (``CHARACTERS`` index + 1, 0 none) each cell of a side x side grid
    over the image shows, from the regions' drawn ``text``.  The box is split among the string's characters in
    proportion to their DejaVu Sans widths (the world's font); a cell is a glyph's when its centre lies in the
    glyph's part of the box (a glyph narrower than a cell takes the column of its middle unless a neighbour holds it).
    Characters outside ``CHARACTERS`` (spaces, punctuation) take their width and no cell."""
    font = dejavu_font(32)
    target = torch.zeros(side, side, dtype=torch.uint8)
    centres = (torch.arange(side, dtype=torch.float32) + 0.5) / side
    for region in regions:
        text = region.get("text", "")
        if not text:
            continue
        left, top, right, bottom = region["box"]
        rows = ((centres >= top) & (centres <= bottom)).nonzero().flatten()
        total = font.getlength(text)
        if not len(rows) or total <= 0:
            continue
        for i, char in enumerate(text.lower()):
            if char not in CHARACTERS:
                continue
            start = left + (right - left) * font.getlength(text[:i]) / total
            end = left + (right - left) * font.getlength(text[: i + 1]) / total
            columns = ((centres >= start) & (centres <= end)).nonzero().flatten()
            if not len(columns):  # a glyph narrower than a cell ("l" in small print): the column of its middle
                columns = torch.tensor([min(int((start + end) / 2 * side), side - 1)])
            cells = target[rows[:, None], columns[None, :]]
            # a neighbour already there keeps its cells: narrow glyphs must not erase one another
            target[rows[:, None], columns[None, :]] = torch.where(cells > 0, cells, CHARACTERS.index(char) + 1)
    return target


def box_cells(box, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows and columns of a side x side grid whose cell centres lie in ``box``; a box thinner than a cell takes the
    row (column) of its middle."""
    centres = (torch.arange(side, dtype=torch.float32) + 0.5) / side
    left, top, right, bottom = box
    spans = []
    for start, end in ((top, bottom), (left, right)):
        inside = ((centres >= start) & (centres <= end)).nonzero().flatten()
        spans.append(inside if len(inside) else torch.tensor([min(int((start + end) / 2 * side), side - 1)]))
    return spans[0], spans[1]


def string_targets(regions: list[dict], side: int, classes: dict[str, int]) -> torch.Tensor:
    """A (side, side) long map of which string (``classes[text]``, 0 none) each cell of a side x side grid over the
    image shows, from the regions' drawn ``text``; a string missing from ``classes`` is an error."""
    target = torch.zeros(side, side, dtype=torch.long)
    for region in regions:
        text = region.get("text", "")
        if not text:
            continue
        if text not in classes:
            raise ValueError(f"drawn text {text!r} is not one of the {len(classes)} strings of the reading head")
        rows, columns = box_cells(region["box"], side)
        target[rows[:, None], columns[None, :]] = classes[text]
    return target
