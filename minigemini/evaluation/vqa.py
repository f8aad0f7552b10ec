"""Open-answer VQA: TextVQA and VQAv2 (VQA accuracy over ten human answers), GQA (exact match), and the
project's synthetic set, all from LLaVA's question JSONL (or any row file with the same fields)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from minigemini.evaluation.base import LoadOptions, llava_questions, ratio
from minigemini.evaluation.normalize import normalize_short_answer, vqa_accuracy
from minigemini.evaluation.prompts import SHORT_ANSWER, with_suffix
from minigemini.evaluation.readers import first_present, image_source
from minigemini.evaluation.samples import InvalidRow, Sample

__all__ = ["load_vqa", "score_exact_match", "score_vqa", "textvqa_question"]

_OCR_PREFIX = "Reference OCR token:"


def textvqa_question(text: str) -> str:
    """The bare question of a LLaVA TextVQA prompt (drops the OCR-token line and the instruction line),
    which is what the MGM script joins with the annotation file on."""
    for line in text.split("\n"):
        line = line.strip()
        if line and not line.startswith(_OCR_PREFIX) and line != SHORT_ANSWER:
            return line
    return text.strip()


def _answers(value: Any) -> list[str] | None:
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
    """Rows with a question id, a question and an image; answers inline (``answers``/``answer``) or from
    ``options.annotations`` (TextVQA / VQAv2 / GQA annotation files)."""
    for where, row, qid, text, image in llava_questions(options):
        if isinstance(row, InvalidRow):
            yield row
            continue
        raw = first_present(row, "answers", "answer", "gt_answers", "label")
        if raw is None and options.annotations is not None:
            hit = options.annotations.lookup(qid, question=textvqa_question(text))
            raw = None if hit is None else first_present(hit, "answers", "answer", "label")
        gold = None
        if raw is not None:
            gold = _answers(raw)
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
