"""ChartQA (test: human-written and machine-generated questions), scored with relaxed accuracy.

Files: the authors' ``test/test_human.json`` and ``test/test_augmented.json`` (lists of ``{imgname, query,
label}``; images in ``test/png/``) or lmms-lab's ``ChartQA`` parquet (``question``, ``answer``, ``type``:
``human_test`` / ``augmented_test``, ``image``).  The question id is the row's position in its file
(``test_human.json[12]``); several questions share an image.

Prompt: ``question\\nAnswer the question using a single word or phrase.`` (LLaVA's short-answer instruction).

Relaxed accuracy (ChartQA, Masry et al. 2022; ``relaxed_correctness`` of pix2struct / MatCha, which lmms-eval
keeps): when answer and reference both read as numbers (a trailing ``%`` divides by 100) and the reference is not
0, the answer is right within 5 % of the reference; otherwise it must equal the reference, ignoring case.
Metrics: relaxed accuracy over all questions and per split (human / augmented: the paper reports both and their
mean over questions).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from functools import partial
from typing import Any

from minigemini.evaluation.loader import Benchmark, LoadOptions, load_rows
from minigemini.evaluation.option_questions import table_image
from minigemini.evaluation.prompts import SHORT_ANSWER, with_suffix
from minigemini.evaluation.readers import Row, first_present
from minigemini.evaluation.samples import InvalidRow, Sample, Unreadable
from minigemini.evaluation.scoring import means, ratio

__all__ = ["BENCHMARKS", "load_chartqa", "relaxed_correctness", "score_chartqa"]

MAX_RELATIVE_CHANGE = 0.05


def _to_float(text: str) -> float | None:
    try:
        if text.endswith("%"):
            return float(text.rstrip("%")) / 100.0
        return float(text)
    except ValueError:
        return None


def relaxed_correctness(prediction: str, target: str, max_relative_change: float = MAX_RELATIVE_CHANGE) -> bool:
    """ChartQA's rule: a numeric answer within ``max_relative_change`` of a non-zero numeric target, else an
    exact match ignoring case (answer and target stripped)."""
    prediction, target = str(prediction).strip(), str(target).strip()
    prediction_float, target_float = _to_float(prediction), _to_float(target)
    if prediction_float is not None and target_float:
        return abs(prediction_float - target_float) / abs(target_float) <= max_relative_change
    return prediction.lower() == target.lower()


def _split(options: LoadOptions, where: str, row: Row) -> str:
    kind = first_present(row, "type")
    if kind is not None:
        return str(kind).removesuffix("_test")
    name = where.split("[")[0]
    return "augmented" if "augmented" in name else "human" if "human" in name else "test"


def _chart_image(options: LoadOptions, row: Row) -> list[Any]:
    image = row.get("image")
    if image is None and first_present(row, "imgname") is not None:
        name = str(row["imgname"])
        found = [d / sub / name for d in options.image_dirs for sub in (".", "png") if (d / sub / name).exists()]
        image = str(found[0]) if found else name
    return table_image(options, image)


def _chartqa_sample(options: LoadOptions, where: str, row: Row) -> Sample:
    question = first_present(row, "query", "question")
    if question is None:
        raise Unreadable("no field 'query' (or 'question')")
    label = first_present(row, "label", "answer")
    meta = {"split": _split(options, where, row)}
    gold = None if label is None else str(label)
    return Sample(where, with_suffix(str(question), SHORT_ANSWER), _chart_image(options, row), gold, meta)


def load_chartqa(options: LoadOptions) -> Iterator[Sample | InvalidRow]:
    """One question per entry of ``test_human.json`` / ``test_augmented.json`` (or row of the parquet)."""
    return load_rows(options, partial(_chartqa_sample, options))


def score_chartqa(records: list[dict], judge=None) -> dict[str, Any]:
    """Relaxed accuracy over all questions and per split."""
    hits: list[bool] = []
    by_split: dict[str, list[bool]] = defaultdict(list)
    for record in records:
        hit = relaxed_correctness(record["prediction"], record["gold"])
        hits.append(hit)
        by_split[record["meta"]["split"]].append(hit)
    return {"metrics": {"relaxed_accuracy": ratio(sum(hits), len(hits))}, "by_split": means(by_split)}


BENCHMARKS = (
    Benchmark(
        "chartqa", "ChartQA test: the authors' JSON or lmms-lab parquet; relaxed accuracy", load_chartqa, score_chartqa
    ),
)
