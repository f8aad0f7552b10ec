"""RealWorldQA (xAI; 765 questions on real-world photographs).

Files: xAI's parquet (``xai-org/RealworldQA``, also lmms-lab's copy: ``image``, ``question`` with the options and
the answer instruction written in, ``answer``: a letter, or a word / number for the few open questions) or
VLMEvalKit's ``RealWorldQA.tsv`` (``index``, ``question``, ``A``..``C`` columns, ``answer``, base64 ``image``).

Prompt: the parquet's question as written (it carries its own instruction); the TSV's in MMBench's layout.
Scoring: a question with options is read as VLMEvalKit does (``can_infer``, ``option_questions.py``); an open
question is right when the answer equals the reference after lmms-eval's normalisation (stripped, lower-cased,
a trailing period dropped).  Accuracy over all questions.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

from minigemini.evaluation.choices import LETTERS
from minigemini.evaluation.loader import Benchmark, LoadOptions, load_rows
from minigemini.evaluation.option_questions import (
    gold_letter,
    inline_options,
    row_options,
    score_choices,
    table_image,
)
from minigemini.evaluation.prompts import mmbench_prompt
from minigemini.evaluation.readers import Row, first_present
from minigemini.evaluation.samples import InvalidRow, Sample, Unreadable
from minigemini.evaluation.scoring import ratio

__all__ = ["BENCHMARKS", "load_realworldqa", "open_answer", "score_realworldqa"]


def open_answer(text: str) -> str:
    """lmms-eval's normalisation of an open answer: stripped, lower-cased, without a trailing period."""
    return str(text).strip().lower().rstrip(".").strip()


def _realworldqa_sample(options: LoadOptions, where: str, row: Row) -> Sample:
    question = first_present(row, "question")
    raw = first_present(row, "answer")
    if question is None:
        raise Unreadable("no field 'question'")
    question = str(question)
    columns = row_options(row)
    if columns:  # VLMEvalKit's TSV: the answer must be one of the option letters
        prompt, choices, gold = mmbench_prompt(question, columns), columns, gold_letter(raw, columns)
    else:  # xAI's parquet: a letter when the question writes out options, else a word or number
        prompt, choices, gold = question, inline_options(question), None if raw is None else str(raw).strip()
    is_choice = bool(choices) and (gold is None or gold in tuple(LETTERS[: len(choices)]))
    qid = first_present(row, "index", "question_id", "id")
    meta = {"options": choices if is_choice else None}
    return Sample(str(where if qid is None else qid), prompt, table_image(options, row.get("image")), gold, meta)


def load_realworldqa(options: LoadOptions) -> Iterator[Sample | InvalidRow]:
    """One question per row of the parquet / TSV."""
    return load_rows(options, partial(_realworldqa_sample, options))


def score_realworldqa(records: list[dict], judge=None) -> dict[str, Any]:
    """Accuracy: option questions read as VLMEvalKit reads them, open ones by normalised exact match."""
    choice = [r for r in records if r["meta"].get("options")]
    open_ = [r for r in records if not r["meta"].get("options")]
    scored = score_choices(choice, groups=())
    right = (scored["metrics"]["accuracy"] or 0) * len(choice)
    right += sum(open_answer(r["prediction"]) == open_answer(r["gold"]) for r in open_)
    return {
        "metrics": {"accuracy": ratio(round(right), len(records))},
        "open_questions": len(open_),
        "unparsed": scored["unparsed"],
    }


BENCHMARKS = (
    Benchmark(
        "realworldqa",
        "RealWorldQA: xAI parquet or VLMEvalKit TSV; accuracy (option reading / normalised exact match)",
        load_realworldqa,
        score_realworldqa,
    ),
)
