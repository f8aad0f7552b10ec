"""Reading an option letter out of a model's answer, the way each benchmark's own script does it.

- ``infer_option`` -- MMBench (VLMEvalKit ``can_infer``): punctuation ``.()[],:;!*#{}`` becomes spaces, and
  the answer counts as option X when X is the only option letter among its words; failing that, when
  exactly one option's text occurs in the (lower-cased) answer.  A known refusal gives ``"Z"`` (no option).
- ``count_options`` -- how many options a question lists (``(A) ..`` or ``A. ..`` marks).

ScienceQA's and SEED's own readings are in ``benchmarks/scienceqa.py`` and ``benchmarks/seed.py``.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence

__all__ = [
    "LETTERS",
    "REFUSALS",
    "count_options",
    "format_options",
    "infer_option",
    "infer_option_letter",
    "infer_option_text",
]

LETTERS = string.ascii_uppercase
REFUSALS = (
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
)
_MMBENCH_PUNCT = ".()[],:;!*#{}"


def format_options(options: Sequence[str], style: str = "dot") -> str:
    """``["cat", "dog"]`` -> ``"A. cat\\nB. dog"`` (style ``dot``) or ``"(A) cat\\n(B) dog\\n"`` (``paren``,
    MMMU's layout, which keeps a trailing newline)."""
    if style == "dot":
        return "\n".join(f"{LETTERS[i]}. {option}" for i, option in enumerate(options))
    if style == "paren":
        return "".join(f"({LETTERS[i]}) {option}\n" for i, option in enumerate(options))
    raise ValueError(f"unknown option style {style!r}")


def infer_option_letter(answer: str, choices: Mapping[str, str]) -> str | None:
    """VLMEvalKit's ``can_infer_option``: the single option letter among the answer's words, or None."""
    for refusal in REFUSALS:
        if refusal in answer:
            return "Z"
    text = answer
    for char in _MMBENCH_PUNCT:
        text = text.replace(char, " ")
    words = text.split()
    present = [letter for letter in choices if letter in words]
    if len(present) == 1:
        return present[0]
    if not present and "Z" in words:
        return "Z"
    return None


def infer_option_text(answer: str, choices: Mapping[str, str]) -> str | None:
    """VLMEvalKit's ``can_infer_text``: the single option whose text occurs in the answer, or None."""
    lowered = answer.lower()
    hits = [letter for letter, text in choices.items() if str(text).lower() in lowered]
    return hits[0] if len(hits) == 1 else None


def infer_option(answer: str, choices: Mapping[str, str]) -> str | None:
    """MMBench's rule-based matching: a letter first, then an option's text.  None when neither applies."""
    answer = str(answer)
    return infer_option_letter(answer, choices) or infer_option_text(answer, choices)


_OPTION_MARK = re.compile(r"(?:^|\s)\(([A-Z])\)|^([A-Z])\.\s", re.MULTILINE)


def count_options(text: str) -> int:
    """The number of options A, B, C, ... a question lists as ``(A) ..`` or ``A. ..`` (0 when it lists none)."""
    letters = {a or b for a, b in _OPTION_MARK.findall(text)}
    count = 0
    while count < len(LETTERS) and LETTERS[count] in letters:
        count += 1
    return count
