"""Multiple-choice questions kept as table rows, as the leaderboard's benchmarks distribute them (AI2D, MMStar,
RealWorldQA), and their scoring with VLMEvalKit's rule.

Three layouts of the options: VLMEvalKit's TSV (columns ``A``, ``B``, ... and ``answer``: a letter), a list
column (``options`` / ``choices``, with ``answer`` an index or a letter: lmms-lab's AI2D) and options written
into the question itself (``A. ..`` lines or MMStar's ``Options: A: .., B: ..``).

Scoring (VLMEvalKit ``multiple_choice.py``, without a judge): the answer's option is read with ``can_infer``
(``choices.infer_option``: the single option letter among its words, else the single option whose text it
contains); a question is right when that is the reference letter.  An answer it cannot read is wrong and counted
as unparsed.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

from minigemini.evaluation.choices import LETTERS, infer_option
from minigemini.evaluation.readers import Row, first_present
from minigemini.evaluation.samples import Unreadable
from minigemini.evaluation.scoring import means, ratio

__all__ = ["gold_letter", "inline_options", "row_options", "score_choices", "table_image"]

_BASE64 = re.compile(r"[A-Za-z0-9+/=\s]+")
_LINE_OPTION = re.compile(r"^\(?([A-Z])[.):]\s*(.+?)\s*$", re.MULTILINE)
_MMSTAR_OPTIONS = re.compile(r"Options?:\s*(.*)$", re.DOTALL)
_MMSTAR_OPTION = re.compile(r"(?:^|,\s*)([A-Z]):\s*")


def inline_options(text: str) -> list[str]:
    """The options a question writes out: ``A. ..`` / ``(A) ..`` lines, or MMStar's one-line
    ``Options: A: .., B: ..`` (options A, B, ... in order; [] when the text lists none)."""
    found = {letter: option for letter, option in _LINE_OPTION.findall(text)}
    if "A" not in found:
        match = _MMSTAR_OPTIONS.search(text)
        if match:
            parts = _MMSTAR_OPTION.split(match.group(1).strip())
            found = {parts[i]: parts[i + 1].strip().rstrip(",") for i in range(1, len(parts) - 1, 2)}
    options = []
    for letter in LETTERS:
        if letter not in found:
            break
        options.append(found[letter])
    return options


def row_options(row: Row) -> list[str]:
    """A row's options: columns ``A``, ``B``, ... (VLMEvalKit TSV) or a list in ``options`` / ``choices``."""
    listed = first_present(row, "options", "choices")
    if listed is not None and not isinstance(listed, str):
        return [str(option) for option in listed]
    options = []
    for letter in LETTERS:
        value = first_present(row, letter)
        if value is None:
            break
        options.append(str(value))
    return options


def gold_letter(raw: Any, options: list[str]) -> str | None:
    """The reference letter of ``raw`` (a letter, or an option's index as lmms-lab's AI2D stores it); None when
    the row has no answer; Unreadable when it names no option."""
    if raw is None:
        return None
    text = str(raw).strip()
    if text.isdigit() and int(text) < len(options):
        return LETTERS[int(text)]
    if text in tuple(LETTERS[: len(options)]):
        return text
    raise Unreadable(f"field 'answer': {text[:40]!r} is not one of the {len(options)} options")


def score_choices(records: list[dict], judge=None, groups: tuple[str, ...] = ("category",)) -> dict[str, Any]:
    """Accuracy (VLMEvalKit's ``can_infer`` reading of each answer), overall and per each ``meta`` key of
    ``groups`` (``by_<key>``)."""
    hits: list[bool] = []
    by_group: dict[str, dict[str, list[bool]]] = {key: defaultdict(list) for key in groups}
    unparsed = 0
    for record in records:
        options = record["meta"]["options"]
        letter = infer_option(record["prediction"], {LETTERS[i]: text for i, text in enumerate(options)})
        unparsed += letter is None
        hit = letter == record["gold"]
        hits.append(hit)
        for key in groups:
            if record["meta"].get(key) is not None:
                by_group[key][str(record["meta"][key])].append(hit)
    return {
        "metrics": {"accuracy": ratio(sum(hits), len(hits))},
        **{f"by_{key}": means(buckets) for key, buckets in by_group.items()},
        "unparsed": unparsed,
    }


def table_image(options, value: Any) -> list[Any]:
    """A table's image cell as a Sample's ``images``: a base64 string (VLMEvalKit's TSV) as a data URL, anything
    else through ``LoadOptions.images`` (a path, parquet's ``{"bytes": ..}``)."""
    if isinstance(value, str) and len(value) > 64 and _BASE64.fullmatch(value):
        return [f"data:image;base64,{value}"]
    return options.images(value)
