"""VQAv2 (VQA accuracy over ten human answers) and GQA (exact match): open short answers, from LLaVA's question
JSONL (or any row file with the same fields).

Their loader and the VQA-accuracy scorer are shared: TextVQA (``textvqa.py``) parses references and scores as
VQAv2 does, and the project's synthetic set (``synthetic.py``) is read and scored as VQAv2.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from functools import partial
from typing import Any

from minigemini.evaluation.loader import Benchmark, LoadOptions, llava_fields, load_rows
from minigemini.evaluation.normalize import normalize_short_answer, vqa_accuracy
from minigemini.evaluation.prompts import SHORT_ANSWER, with_suffix
from minigemini.evaluation.readers import Row, first_present
from minigemini.evaluation.samples import InvalidRow, Sample, Unreadable
from minigemini.evaluation.scoring import means, ratio

__all__ = [
    "BENCHMARKS",
    "load_vqa",
    "parse_references",
    "reference_answers",
    "score_exact_match",
    "score_vqa",
    "vqa_sample",
]


def reference_answers(value: Any) -> list[str] | None:
    """The reference answers of a row as a list of strings (a string, a number, a list of strings or of VQAv2's
    ``{"answer": ...}`` dicts); None for anything else."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [str(value)]
    if isinstance(value, (list, tuple)) and value:
        out = []
        for item in value:
            if isinstance(item, dict):
                item = item.get("answer")
            if not isinstance(item, (str, int, float)) or isinstance(item, bool):
                return None
            out.append(str(item))
        return out
    return None


def parse_references(raw: Any) -> list[str] | None:
    """``reference_answers`` of a row's answer cell (None stays None: a split without references);
    Unreadable for a format it does not know."""
    if raw is None:
        return None
    gold = reference_answers(raw)
    if gold is None:
        raise Unreadable(f"unknown answer format {type(raw).__name__}: {str(raw)[:60]!r}")
    return gold


def vqa_sample(options: LoadOptions, suffix: str | None, where: str, row: Row) -> Sample:
    """One question of a VQAv2 / GQA / synthetic row file: a question id (unique: the official scripts key
    predictions by it), a question and an image; answers inline (``answers``/``answer``) or from
    ``options.annotations``, joined on the question id (VQAv2 annotations, GQA's questions JSON).  A question
    the annotation file does not have is unreadable."""
    qid, text, image = llava_fields(row)
    raw = first_present(row, "answers", "answer", "gt_answers", "label")
    if raw is None and options.annotations is not None:
        raw = first_present(options.annotations.find(qid), "answers", "answer", "label")
    meta = {"category": row.get("category")} if row.get("category") is not None else {}
    return Sample(qid, with_suffix(text, suffix), options.images(image), parse_references(raw), meta)


def load_vqa(options: LoadOptions, suffix: str | None = SHORT_ANSWER) -> Iterator[Sample | InvalidRow]:
    """The questions of a VQAv2 / GQA / synthetic file (``vqa_sample``)."""
    return load_rows(options, partial(vqa_sample, options, suffix))


def _by_category(records: list[dict], scores: list[float]) -> dict[str, float]:
    groups: dict[str, list[float]] = defaultdict(list)
    for record, score in zip(records, scores):
        category = record.get("meta", {}).get("category")
        if category is not None:
            groups[str(category)].append(score)
    return means(groups)


def score_vqa(records: list[dict], judge=None) -> dict[str, Any]:
    """Mean VQA accuracy (``normalize.vqa_accuracy``) -- TextVQA, VQAv2, the synthetic set."""
    scores = [vqa_accuracy(r["prediction"], r["gold"]) for r in records]
    return {
        "metrics": {"accuracy": ratio(sum(scores), len(scores))},
        "by_category": _by_category(records, scores),
    }


def score_exact_match(records: list[dict], judge=None) -> dict[str, Any]:
    """GQA: the prediction, without trailing periods and lower-cased (as LLaVA submits it), equals the answer."""
    scores = [
        float(normalize_short_answer(r["prediction"]) in {normalize_short_answer(g) for g in r["gold"]})
        for r in records
    ]
    return {
        "metrics": {"accuracy": ratio(sum(scores), len(scores))},
        "by_category": _by_category(records, scores),
    }


BENCHMARKS = (
    Benchmark("vqav2", "VQAv2: question JSONL (+ annotations); VQA accuracy", load_vqa, score_vqa),
    Benchmark(
        "gqa", "GQA testdev-balanced: question JSONL (+ questions JSON); exact match", load_vqa, score_exact_match
    ),
)
