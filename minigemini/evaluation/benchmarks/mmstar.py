"""MMStar (1,500 vision-indispensable questions) as its authors distribute and score it.

Files: the authors' ``Lin-Chen/MMStar`` parquet (``index``, ``question`` with the options written in as
``Options: A: .., B: .., C: .., D: ..``, ``image``, ``answer``: a letter, ``category``, ``l2_category``) or
VLMEvalKit's ``MMStar.tsv`` (``A``..``D`` columns, ``l2-category``, base64 ``image``).

Prompt: the question as written (with its options; the TSV's options are written in as MMBench's ``A. ..`` lines)
and ``Answer with the option's letter from the given choices directly.``, as lmms-eval's ``mmstar`` asks.
Scoring: VLMEvalKit's, which MMStar's authors use: the option read with ``can_infer``; accuracy overall and per
core capability (``category``) and per ``l2_category``.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

from minigemini.evaluation.loader import Benchmark, LoadOptions, load_rows
from minigemini.evaluation.option_questions import (
    gold_letter,
    inline_options,
    row_options,
    score_choices,
    table_image,
)
from minigemini.evaluation.prompts import OPTION_LETTER, mmbench_prompt, with_suffix
from minigemini.evaluation.readers import Row, first_present
from minigemini.evaluation.samples import InvalidRow, Sample, Unreadable

__all__ = ["BENCHMARKS", "load_mmstar", "score_mmstar"]


def _mmstar_sample(options: LoadOptions, where: str, row: Row) -> Sample:
    question = first_present(row, "question")
    if question is None:
        raise Unreadable("no field 'question'")
    question = str(question)
    choices = row_options(row)
    if choices:
        prompt = mmbench_prompt(question, choices)
    else:
        choices = inline_options(question)
        prompt = with_suffix(question, OPTION_LETTER)
    if len(choices) < 2:
        raise Unreadable("field 'question' writes out no options (and the row has no A, B, ... columns)")
    qid = first_present(row, "index", "question_id", "id")
    meta = {
        "options": choices,
        "category": first_present(row, "category"),
        "l2_category": first_present(row, "l2_category", "l2-category"),
    }
    gold = gold_letter(first_present(row, "answer"), choices)
    return Sample(str(where if qid is None else qid), prompt, table_image(options, row.get("image")), gold, meta)


def load_mmstar(options: LoadOptions) -> Iterator[Sample | InvalidRow]:
    """One question per row of the parquet / TSV."""
    return load_rows(options, partial(_mmstar_sample, options))


def score_mmstar(records: list[dict], judge=None) -> dict[str, Any]:
    """Accuracy overall, per category (core capability) and per l2 category."""
    return score_choices(records, groups=("category", "l2_category"))


BENCHMARKS = (
    Benchmark(
        "mmstar",
        "MMStar: the authors' parquet or VLMEvalKit TSV; accuracy (VLMEvalKit's option reading)",
        load_mmstar,
        score_mmstar,
    ),
)
