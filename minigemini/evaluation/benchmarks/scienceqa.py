"""ScienceQA as LLaVA-1.5 scores it (``llava/eval/eval_science_qa.py``, the same file in MGM's ``mgm/eval``).

Files: LLaVA's ``llava_test_CQM-A.json`` (a list of ``{id, image?, conversations: [human, gpt]}``; the human turn
holds ``Context: .. Question: .. Options: (A) .. (B) ..`` and ``<image>``, the gpt turn "The answer is B.") or a
question JSONL with the same fields, and ScienceQA's ``problems.json`` (``{pid: {answer: index, choices, ...}}``)
given as the annotations -- the official script's ground truth.  The question id is the problem id (unique).

Reading an answer (``scienceqa_letter``), exactly as that script:

1. the whole answer is one of ``A``-``E``; else
2. it starts with ``"X. "`` with X one of ``A``-``E``; else
3. ``re.findall(r"The answer is ([A-Z]).")`` -- the ``.`` is any character -- must find exactly one match;
   none or several is "FAILED".

The letter must be one of the question's first ``len(choices)`` letters, otherwise the question is wrong.  A
FAILED or out-of-range answer is wrong and counted as unparsed.  So "The answer is B, no wait. The answer is C."
matches twice and fails.  (A later variant seen in forks, ``The answer is ([A-Z])\\.`` with an escaped period,
would read C there; a first-match reading would read B.  Neither is the release's.)

Metrics: accuracy over all questions and over the questions with an image (``image_accuracy``: LLaVA's
"IMG-Accuracy", the ScienceQA figure papers report), and per subject when ``problems.json`` gives one.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
from functools import partial
from typing import Any

from minigemini.evaluation.choices import LETTERS, count_options
from minigemini.evaluation.loader import Benchmark, LoadOptions, llava_fields, load_rows
from minigemini.evaluation.prompts import OPTION_LETTER, with_suffix
from minigemini.evaluation.readers import Row, first_present
from minigemini.evaluation.samples import InvalidRow, Sample, Unreadable
from minigemini.evaluation.scoring import means, ratio

__all__ = ["BENCHMARKS", "load_scienceqa", "scienceqa_letter", "score_scienceqa"]

_OPTIONS = ("A", "B", "C", "D", "E")  # the script's --options default
_THE_ANSWER_IS = re.compile(r"The answer is ([A-Z]).")  # unescaped ".", as in eval_science_qa.py
_GOLD = re.compile(r"The answer is ([A-Z])")


def scienceqa_letter(answer: str, num_options: int) -> str | None:
    """The option letter eval_science_qa.py reads in ``answer``, or None where it reads "FAILED" or a letter
    beyond the question's options (see the module docstring)."""
    if answer in _OPTIONS:
        letter = answer
    elif len(answer) >= 3 and answer[0] in _OPTIONS and answer[1:3] == ". ":
        letter = answer[0]
    else:
        found = _THE_ANSWER_IS.findall(answer)
        letter = found[0] if len(found) == 1 else None
    return letter if letter in _OPTIONS[:num_options] else None


def _gold_letter(value: Any, num_options: int) -> str | None:
    """A reference as a letter: an option index (problems.json), a letter, or the gpt turn "The answer is B."."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        index = int(value)
        return LETTERS[index] if 0 <= index < num_options else None
    if isinstance(value, str):
        text = value.strip()
        match = _GOLD.search(text)
        letter = match.group(1) if match else text.rstrip(".")
        return letter if letter in tuple(LETTERS[:num_options]) else None
    return None


def _scienceqa_sample(options: LoadOptions, where: str, row: Row) -> Sample:
    qid, text, image = llava_fields(row)
    hit = options.annotations.find(qid, "problem") if options.annotations is not None else {}
    choices = hit.get("choices") or row.get("choices")
    num_options = len(choices) if isinstance(choices, list) else (count_options(text) or len(_OPTIONS))
    raw = first_present(hit, "answer")
    if raw is None:
        raw = first_present(row, "answer", "label")
    if raw is None and isinstance(row.get("conversations"), list) and len(row["conversations"]) > 1:
        raw = row["conversations"][1].get("value")
    gold = None
    if raw is not None:
        gold = _gold_letter(raw, num_options)
        if gold is None:
            raise Unreadable(f"unknown answer format: {str(raw)[:40]!r} is not one of {num_options} options")
    images = options.images(image)
    subject = first_present(hit, "subject") or row.get("category")
    meta = {"num_options": num_options, "has_image": bool(images), "category": subject}
    return Sample(qid, with_suffix(text, OPTION_LETTER), images, gold, meta)


def load_scienceqa(options: LoadOptions) -> Iterator[Sample | InvalidRow]:
    """Questions of LLaVA's ScienceQA file; the reference is problems.json's ``answer`` when the annotations are
    given (a problem missing from it is an unreadable row), else the row's ``answer`` or its gpt turn."""
    return load_rows(options, partial(_scienceqa_sample, options))


def score_scienceqa(records: list[dict], judge=None) -> dict[str, Any]:
    """Accuracy (all questions, those with an image, per subject) of the letters eval_science_qa.py reads."""
    hits, image_hits, unparsed = [], [], 0
    subjects: dict[str, list[bool]] = defaultdict(list)
    for record in records:
        letter = scienceqa_letter(record["prediction"], record["meta"]["num_options"])
        unparsed += letter is None
        hit = letter == record["gold"]
        hits.append(hit)
        if record["meta"].get("has_image"):
            image_hits.append(hit)
        if record["meta"].get("category") is not None:
            subjects[str(record["meta"]["category"])].append(hit)
    return {
        "metrics": {"accuracy": ratio(sum(hits), len(hits)), "image_accuracy": ratio(sum(image_hits), len(image_hits))},
        "by_category": means(subjects),
        "unparsed": unparsed,
    }


BENCHMARKS = (
    Benchmark(
        "scienceqa",
        "ScienceQA: LLaVA JSON/JSONL (+ problems.json); eval_science_qa.py's letter rule (IMG subset too)",
        load_scienceqa,
        score_scienceqa,
    ),
)
