"""Your own held-out questions with their answers: ``mgm eval --bench custom --data held_out.jsonl``.

Each row (JSONL, JSON, CSV, Parquet) is one question: ``question`` (or ``text``, ``prompt``) and ``answer`` (a string,
or ``answers``: several accepted ones), ``image`` (a path, relative to ``--image-dir`` or the file's folder; none for
a text question) and an optional ``id`` (else the row's position).  A LLaVA-format record works as it is: its first
human turn is the question (``<image>`` removed), its first model turn the answer, so a held-out split of the
training file is a benchmark.  The question is asked as written (no answer-style suffix: the model was trained on
these prompts).

``custom`` scores VQA accuracy (``normalize.vqa_accuracy``: with one answer, the EvalAI-normalised exact match;
with several, the VQAv2 rule), ``custom-exact`` the exact match after lower-casing and trimming trailing periods.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import partial

from minigemini.evaluation.benchmarks.vqa import parse_references, score_exact_match, score_vqa
from minigemini.evaluation.loader import Benchmark, LoadOptions, load_rows
from minigemini.evaluation.readers import Row, first_present
from minigemini.evaluation.samples import InvalidRow, Sample, Unreadable

__all__ = ["BENCHMARKS", "load_custom"]

_IMAGE_TAG = re.compile(r"<image>\s*")


def _turns(row: Row) -> tuple[str | None, str | None]:
    """(question, answer) of a LLaVA-format record's first exchange; (None, None) without conversations."""
    turns = row.get("conversations")
    if not isinstance(turns, list) or len(turns) < 2 or not all(isinstance(turn, dict) for turn in turns[:2]):
        return None, None
    return turns[0].get("value"), turns[1].get("value")


def _custom_sample(options: LoadOptions, where: str, row: Row) -> Sample:
    question, answer = _turns(row)
    question = first_present(row, "question", "text", "prompt") or question
    answer = first_present(row, "answers", "answer") or answer
    if not isinstance(question, str) or not question.strip():
        raise Unreadable("no question (a `question` column, or LLaVA `conversations`)")
    if answer is None:
        raise Unreadable("no answer: --bench custom scores against an `answer` (or `answers`) column")
    qid = first_present(row, "question_id", "id")
    image = first_present(row, "image", "image_path", "image_file")
    sample_images = options.images(image)
    return Sample(
        str(where if qid is None else qid),
        _IMAGE_TAG.sub("", question).strip(),
        sample_images,
        parse_references(answer),
        {"category": row["category"]} if row.get("category") is not None else {},
    )


def load_custom(options: LoadOptions) -> Iterator[Sample | InvalidRow]:
    """One Sample per row (see the module docstring)."""
    return load_rows(options, partial(_custom_sample, options))


BENCHMARKS = (
    Benchmark("custom", "your JSONL/CSV of image, question, answer(s); VQA accuracy", load_custom, score_vqa),
    Benchmark("custom-exact", "your JSONL/CSV of image, question, answer; exact match", load_custom, score_exact_match),
)
