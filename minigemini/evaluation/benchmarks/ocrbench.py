"""OCRBench (1,000 questions over 29 OCR datasets) as its authors score it.

Files: the authors' ``OCRBench.json`` (a list of ``{dataset_name, id, image_path, question, answers, type}``;
``answers`` a string or a list; images under ``OCRBench_Images/`` given with ``--image-dir``) or the hub parquet
(``echo840/OCRBench``: ``dataset``, ``question``, ``question_type``, ``answer``, ``image``) or VLMEvalKit's
``OCRBench.tsv`` (``index``, ``category`` as the type, ``answer`` a list literal, base64 ``image``; no source
dataset, so HME100k is known by its type, as VLMEvalKit does).  The question id
is ``id`` where the file has one, else the row's position.

Prompt: the question as written (the authors ask it bare).

Scoring (``OCRBench/scripts``' evaluation): a question is right when one of its answers occurs in the model's
answer as a substring -- for HME100k (handwritten formulas) after removing every space and newline from both,
case kept; for every other dataset after lower-casing and stripping both and turning newlines into spaces.
The score is the number right out of the 1,000 (``final_score``), with the five groups the authors report:
Text Recognition (the six recognition types together), Scene Text-centric VQA, Doc-oriented VQA, Key
Information Extraction and Handwritten Mathematical Expression Recognition.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from functools import partial
from typing import Any

from minigemini.evaluation.loader import Benchmark, LoadOptions, load_rows
from minigemini.evaluation.option_questions import table_image
from minigemini.evaluation.readers import Row, answer_list, first_present
from minigemini.evaluation.samples import InvalidRow, Sample, Unreadable
from minigemini.evaluation.scoring import ratio

__all__ = ["BENCHMARKS", "load_ocrbench", "ocrbench_correct", "score_ocrbench"]

TEXT_RECOGNITION = (
    "Regular Text Recognition",
    "Irregular Text Recognition",
    "Artistic Text Recognition",
    "Handwriting Recognition",
    "Digit String Recognition",
    "Non-Semantic Text Recognition",
)


HME = "Handwritten Mathematical Expression Recognition"


def ocrbench_correct(prediction: str, answers: Sequence[str], dataset: str) -> bool:
    """The authors' rule: one answer is a substring of the prediction (see the module docstring).  ``dataset``:
    the question's source dataset (HME100k is read without spaces), or its type where the file has no source
    (VLMEvalKit's TSV; every HME question comes from HME100k)."""
    if dataset in ("HME100k", HME):
        predict = str(prediction).strip().replace("\n", " ").replace(" ", "")
        return any(str(a).strip().replace("\n", " ").replace(" ", "") in predict for a in answers)
    predict = str(prediction).lower().strip().replace("\n", " ")
    return any(str(a).lower().strip().replace("\n", " ") in predict for a in answers)


def _ocrbench_sample(options: LoadOptions, where: str, row: Row) -> Sample:
    question = first_present(row, "question")
    kind = first_present(row, "type", "question_type", "category")
    if question is None or kind is None:
        raise Unreadable("no field 'question' or 'type' (or 'question_type', 'category')")
    dataset = first_present(row, "dataset_name", "dataset") or kind
    raw = first_present(row, "answers", "answer")
    answers = answer_list(raw)
    qid = first_present(row, "id", "index")
    image = row.get("image") if row.get("image") is not None else first_present(row, "image_path")
    meta = {"dataset": str(dataset), "type": str(kind)}
    return Sample(str(where if qid is None else qid), str(question), table_image(options, image), answers, meta)


def load_ocrbench(options: LoadOptions) -> Iterator[Sample | InvalidRow]:
    """One question per entry of ``OCRBench.json`` (or row of the parquet)."""
    return load_rows(options, partial(_ocrbench_sample, options))


def score_ocrbench(records: list[dict], judge=None) -> dict[str, Any]:
    """``final_score`` (questions right), accuracy, and the right answers per group and per type."""
    right: Counter = Counter()
    for record in records:
        kind = record["meta"]["type"]
        right[kind] += ocrbench_correct(record["prediction"], record["gold"], record["meta"]["dataset"])
    groups = {"Text Recognition": sum(right[t] for t in TEXT_RECOGNITION)}
    groups.update({kind: count for kind, count in right.items() if kind not in TEXT_RECOGNITION})
    total = sum(right.values())
    return {
        "metrics": {"final_score": total, "accuracy": ratio(total, len(records))},
        "by_group": dict(sorted(groups.items())),
        "by_type": dict(sorted(right.items())),
    }


BENCHMARKS = (
    Benchmark(
        "ocrbench",
        "OCRBench: the authors' JSON or hub parquet; questions right of 1,000",
        load_ocrbench,
        score_ocrbench,
    ),
)
