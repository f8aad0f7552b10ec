"""AI2D (test, 3,088 diagram questions) as the leaderboard reads it.

Files: lmms-lab's ``ai2d`` parquet (``question``, ``options``: a list, ``answer``: the index of the right option as
a string, ``image``) or VLMEvalKit's ``AI2D_TEST.tsv`` (``index``, ``question``, ``A``..``D``, ``answer``: a letter,
``image``: base64).  The question id is ``index`` where the file has one, else the row's position.

Prompt: lmms-eval's ``ai2d`` (``question\\nA. ..\\nB. ..\\nAnswer with the option's letter from the given choices
directly.``).  Scoring: accuracy, the option read with VLMEvalKit's ``can_infer`` (``option_questions.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

from minigemini.evaluation.loader import Benchmark, LoadOptions, load_rows
from minigemini.evaluation.option_questions import gold_letter, row_options, score_choices, table_image
from minigemini.evaluation.prompts import mmbench_prompt
from minigemini.evaluation.readers import Row, first_present
from minigemini.evaluation.samples import InvalidRow, Sample, Unreadable

__all__ = ["BENCHMARKS", "load_ai2d"]


def _ai2d_sample(options: LoadOptions, where: str, row: Row) -> Sample:
    question = first_present(row, "question")
    choices = row_options(row)
    if question is None:
        raise Unreadable("no field 'question'")
    if len(choices) < 2:
        raise Unreadable("field 'options' (or columns A, B, ...) lists fewer than two options")
    gold = gold_letter(first_present(row, "answer"), choices)
    qid = first_present(row, "index", "question_id", "id")
    meta = {"options": choices, "category": first_present(row, "category")}
    return Sample(
        str(where if qid is None else qid),
        mmbench_prompt(str(question), choices),
        table_image(options, row.get("image")),
        gold,
        meta,
    )


def load_ai2d(options: LoadOptions) -> Iterator[Sample | InvalidRow]:
    """One question per row of the parquet / TSV."""
    return load_rows(options, partial(_ai2d_sample, options))


BENCHMARKS = (
    Benchmark(
        "ai2d",
        "AI2D test: lmms-lab parquet or VLMEvalKit TSV; accuracy (VLMEvalKit's option reading)",
        load_ai2d,
        score_choices,
    ),
)
