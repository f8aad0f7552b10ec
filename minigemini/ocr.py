"""OCR hints for the question, as the release's ``--ocr`` option does: ``Reference OCR token: t1, t2, ...``.

The engine is ``rapidocr-onnxruntime`` (PP-OCR models shipped inside the package, so it runs offline), created
lazily on first use and shared; calls are serialised by a lock.  Tokens are the recognised text lines, in reading
order, whose confidence is above ``min_score`` (0.1, the release's threshold).

The phrase follows LLaVA's TextVQA prompts (``Reference OCR token:``), which the MGM evaluation uses; the release's
chat CLI spells it ``Reference OCR Token:``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

import numpy as np

from minigemini.errors import require
from minigemini.image_processing import load_image

__all__ = ["OCR_PREFIX", "add_ocr_hint", "ocr_hint", "ocr_tokens"]

OCR_PREFIX = "Reference OCR token: "
DEFAULT_MIN_SCORE = 0.1

_engine = None
_engine_lock = threading.Lock()


def _get_engine():
    global _engine
    with _engine_lock:
        if _engine is None:
            require("rapidocr_onnxruntime")
            from rapidocr_onnxruntime import RapidOCR

            _engine = RapidOCR()
        return _engine


def ocr_tokens(image: Any, min_score: float = DEFAULT_MIN_SCORE) -> list[str]:
    """Text lines found in ``image`` (anything ``load_image`` accepts), top-to-bottom then left-to-right."""
    picture = load_image(image)
    engine = _get_engine()
    with _engine_lock:
        result, _ = engine(np.asarray(picture))
    if not result:
        return []
    lines = []
    for box, text, score in result:
        text = str(text).strip()
        if text and float(score) > min_score:
            top = min(point[1] for point in box)
            left = min(point[0] for point in box)
            lines.append((top, left, text))
    lines.sort(key=lambda line: (round(line[0] / 10), line[1]))
    return [text for _, _, text in lines]


def ocr_hint(tokens: Iterable[str]) -> str:
    """``Reference OCR token: t1, t2, ...`` or an empty string when there are no tokens."""
    tokens = [t for t in tokens if t]
    return OCR_PREFIX + ", ".join(tokens) if tokens else ""


def add_ocr_hint(question: str, images: Iterable[Any], min_score: float = DEFAULT_MIN_SCORE) -> str:
    """The question followed by a line with the OCR tokens of ``images`` (unchanged when none are found)."""
    tokens: list[str] = []
    for image in images:
        tokens.extend(ocr_tokens(image, min_score))
    hint = ocr_hint(tokens)
    return f"{question}\n{hint}" if hint else question
