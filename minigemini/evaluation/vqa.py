"""Open-answer VQA: VQAv2 (VQA accuracy over ten human answers), GQA (exact match) and the project's synthetic
set, from LLaVA's question JSONL (or any row file with the same fields); TextVQA's loader is ``textvqa.py``."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from minigemini.evaluation.base import LoadOptions, llava_questions, ratio
from minigemini.evaluation.normalize import normalize_short_answer, vqa_accuracy
from minigemini.evaluation.prompts import SHORT_ANSWER, with_suffix
from minigemini.evaluation.readers import first_present, image_source
from minigemini.evaluation.samples import InvalidRow, Sample

__all__ = ["load_vqa", "reference_answers", "score_exact_match", "score_vqa"]


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


def load_vqa(options: LoadOptions, suffix: str | None = SHORT_ANSWER) -> Iterator[Sample | InvalidRow]:
    """VQAv2 / GQA / the synthetic set: rows with a question id (unique: the official scripts key predictions by
    it), a question and an image; answers inline (``answers``/``answer``) or from ``options.annotations``, joined
    on the question id (VQAv2 annotations, GQA's questions JSON).  A question the annotation file does not have
    is an InvalidRow."""
    for where, row, qid, text, image in llava_questions(options):
        if isinstance(row, InvalidRow):
            yield row
            continue
        raw = first_present(row, "answers", "answer", "gt_answers", "label")
        if raw is None and options.annotations is not None:
            hit = options.annotations.find(qid, where)
            if isinstance(hit, InvalidRow):
                yield hit
                continue
            raw = first_present(hit, "answers", "answer", "label")
        gold = None
        if raw is not None:
            gold = reference_answers(raw)
            if gold is None:
                yield InvalidRow(where, f"unknown answer format {type(raw).__name__}: {str(raw)[:60]!r}")
                continue
        source = image_source(image, options.image_dirs)
        meta = {"category": row.get("category")} if row.get("category") is not None else {}
        yield Sample(
            qid=qid, prompt=with_suffix(text, suffix), images=[] if source is None else [source], gold=gold, meta=meta
        )


def _by_category(records: list[dict], scores: list[float]) -> dict[str, float]:
    groups: dict[str, list[float]] = defaultdict(list)
    for record, score in zip(records, scores):
        category = record.get("meta", {}).get("category")
        if category is not None:
            groups[str(category)].append(score)
    return {name: sum(v) / len(v) for name, v in sorted(groups.items())}


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
