"""Reasoning-driven picture generation: the plain-text ``<GEN>`` / ``<h>`` protocol of Mini-Gemini.

How it works (paper §3.3, the release's ``mgm/serve``): when the user wants a picture, `` <GEN>`` is appended to
their turn; a model trained on the release's generation data then answers with a text-to-image prompt wrapped in
``<h>...</h>`` (e.g. ``Sure! <h>a watercolour fox under a full moon</h>``); that prompt, with a fixed negative prompt,
goes to a text-to-image model (SDXL in the release; see ``text_to_image.py`` for the backends).

**The caption rule** (the release disagrees with itself: its model worker takes the *first* ``<h>`` block, its CLI
the *last* complete one):

    A block starts right after ``<h>`` and ends at the next ``</h>``, at the next ``<h>``, or at the end of the
    text (an unclosed block: the answer was cut off, or the model never closed the tag).  Each block is
    whitespace-stripped.  **The last non-empty block wins**; no non-empty block -> no picture.

The last block is the one the model settled on (a model that refines its prompt writes the better one last), and an
unclosed final block still names a picture rather than silently dropping the request.  ``</h>`` without an opening
``<h>`` is ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "GEN_TAG",
    "NEGATIVE_PROMPT",
    "PROMPT_CLOSE",
    "PROMPT_OPEN",
    "ImageRequest",
    "extract_image_prompt",
    "prompt_blocks",
    "request_image",
    "split_answer",
    "wants_image",
]

GEN_TAG = "<GEN>"
PROMPT_OPEN = "<h>"
PROMPT_CLOSE = "</h>"

#: The negative prompt the release passes to SDXL with every generated prompt (``mgm/serve/cli.py``).
NEGATIVE_PROMPT = (
    "out of frame, lowres, text, error, cropped, worst quality, low quality, jpeg artifacts, ugly, duplicate, "
    "morbid, mutilated, out of frame, extra fingers, mutated hands, poorly drawn hands, poorly drawn face, mutation, "
    "deformed, blurry, dehydrated, bad anatomy, bad proportions, extra limbs, cloned face, disfigured, gross "
    "proportions, malformed limbs, missing arms, missing legs, extra arms, extra legs, fused fingers, too many "
    "fingers, long neck, username, watermark, signature"
)

_BLOCK_END = re.compile(re.escape(PROMPT_CLOSE) + "|" + re.escape(PROMPT_OPEN))


def request_image(user_text: str) -> str:
    """The user turn asking for a picture, as the release trains it: the text followed by `` <GEN>``.

    Idempotent: text that already ends with ``<GEN>`` is returned unchanged.
    """
    stripped = user_text.rstrip()
    if stripped.endswith(GEN_TAG):
        return user_text
    return f"{stripped} {GEN_TAG}" if stripped else GEN_TAG


def wants_image(user_text: str) -> bool:
    """Whether a user turn carries the ``<GEN>`` request."""
    return GEN_TAG in user_text


@dataclass(frozen=True)
class _Block:
    start: int  # index of the ``<h>`` tag
    end: int  # index just past the block (past ``</h>`` when closed)
    text: str  # stripped content
    closed: bool


def _blocks(answer: str) -> list[_Block]:
    blocks = []
    position = answer.find(PROMPT_OPEN)
    while position != -1:
        content_start = position + len(PROMPT_OPEN)
        match = _BLOCK_END.search(answer, content_start)
        if match is None:
            blocks.append(_Block(position, len(answer), answer[content_start:].strip(), closed=False))
            break
        closed = match.group(0) == PROMPT_CLOSE
        end = match.end() if closed else match.start()
        blocks.append(_Block(position, end, answer[content_start : match.start()].strip(), closed))
        position = answer.find(PROMPT_OPEN, end)
    return blocks


def prompt_blocks(answer: str) -> list[str]:
    """Every ``<h>`` block of an answer in order (stripped, empty ones included); see the module's caption rule."""
    return [block.text for block in _blocks(answer)]


def extract_image_prompt(answer: str) -> str | None:
    """The text-to-image prompt of an answer by the caption rule (last non-empty block), or None."""
    for block in reversed(_blocks(answer)):
        if block.text:
            return block.text
    return None


@dataclass(frozen=True)
class ImageRequest:
    """An answer split for display: the text with every ``<h>`` block removed, and the chosen prompt (or None)."""

    text: str
    prompt: str | None


def split_answer(answer: str) -> ImageRequest:
    """Remove the ``<h>`` blocks from ``answer`` (for display) and pick the prompt by the caption rule."""
    pieces, cursor = [], 0
    for block in _blocks(answer):
        pieces.append(answer[cursor : block.start])
        cursor = block.end
    pieces.append(answer[cursor:])
    text = re.sub(r"[ \t]{2,}", " ", "".join(pieces)).strip()
    return ImageRequest(text=text, prompt=extract_image_prompt(answer))
