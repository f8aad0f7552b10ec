"""POPE (object hallucination) as LLaVA's ``eval_pope.py`` scores it.

Files: LLaVA's ``llava_pope_test.jsonl`` (``question_id``, ``image``, ``text``, ``category``) with the labels in
POPE's ``coco_pope_<category>.json`` files (one ``{question_id, image, text, label}`` per line) given as the
annotation folder, or rows that carry the label (``label``/``answer``: the parquet / ``datasets`` layout).

Join: ``eval_pope.py`` takes, per category, the answers in question-file order and zips them with the lines of
that category's label file -- by position, not by id.  Here too; and since a position join cannot see two files
out of step, a row whose question differs from its label line's ``text`` is an unreadable row, as is a row past
the end of its label file (``zip`` would drop it silently).  Question ids must be unique (the script keys the
question file by them).

Reading an answer: keep the first sentence (up to the first "."), drop commas, split on spaces; "no" when a word
is ``No``, ``no`` or ``not``, otherwise "yes".  Metrics per category: accuracy, precision, recall, F1, yes-ratio;
``metrics`` holds their mean over the categories.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from functools import partial
from typing import Any

from minigemini.evaluation.loader import Benchmark, LoadOptions, llava_fields, load_rows
from minigemini.evaluation.prompts import SHORT_ANSWER, with_suffix
from minigemini.evaluation.readers import AnnotationIndex, Row, first_present
from minigemini.evaluation.samples import InvalidRow, Sample, Unreadable
from minigemini.evaluation.scoring import ratio

__all__ = ["BENCHMARKS", "load_pope", "pope_yes_no", "score_pope", "yes_no_label"]


def yes_no_label(value: Any) -> str | None:
    """ "yes"/"no" of a label (a bool, or the string in any case); None for anything else."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str) and value.strip().lower() in ("yes", "no"):
        return value.strip().lower()
    return None


def pope_yes_no(answer: str) -> str:
    """POPE's reading of an answer: "no" if the first sentence has the word No/no/not, else "yes"."""
    text = answer
    if "." in text:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if ("No" in words or "not" in words or "no" in words) else "yes"


def _pope_says_yes(answer: str) -> bool:
    text = answer.split(".")[0] if "." in answer else answer
    return any(word in ("Yes", "yes", "YES") for word in text.replace(",", "").split(" "))


def _first_line(text: str) -> str:
    return text.strip().split("\n")[0].strip()


def _label_by_position(labels: AnnotationIndex, position: Counter, category: Any, text: str) -> Any:
    """The label of the next question of ``category`` in the label folder: eval_pope.py's join."""
    if category is None:
        raise Unreadable("row has no category: POPE labels are matched by category and position")
    lines = labels.by_category.get(str(category))
    if lines is None:
        raise Unreadable(f"no coco_pope_{category}.json in {labels.path}")
    index = position[str(category)]
    position[str(category)] += 1
    if index >= len(lines):
        raise Unreadable(
            f"question {index + 1} of category {category}, but coco_pope_{category}.json has {len(lines)} labels"
        )
    line = lines[index]
    if _first_line(str(line.get("text", ""))) != _first_line(text):
        raise Unreadable(
            f"question {index + 1} of category {category} is {_first_line(text)!r} but line {index + 1} of "
            f"coco_pope_{category}.json is {line.get('text')!r}: the question file and the labels are out of step"
        )
    return first_present(line, "label", "answer")


def _pope_sample(options: LoadOptions, position: Counter, where: str, row: Row) -> Sample:
    qid, text, image = llava_fields(row)
    category = row.get("category")
    raw = first_present(row, "label", "answer")
    if raw is None and options.annotations is not None:
        if options.annotations.path.is_dir():
            raw = _label_by_position(options.annotations, position, category, text)
        else:
            raw = first_present(options.annotations.find(qid), "label", "answer")
    gold = None
    if raw is not None:
        gold = yes_no_label(raw)
        if gold is None:
            raise Unreadable(f"unknown answer format: POPE labels are yes/no, got {str(raw)[:40]!r}")
    meta = {"category": None if category is None else str(category)}
    return Sample(qid, with_suffix(text, SHORT_ANSWER), options.images(image), gold, meta)


def load_pope(options: LoadOptions) -> Iterator[Sample | InvalidRow]:
    """Questions with their labels (see the module docstring for the join)."""
    return load_rows(options, partial(_pope_sample, options, Counter()))


def _binary_metrics(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    tp = sum(p == "yes" and g == "yes" for p, g in pairs)
    fp = sum(p == "yes" and g == "no" for p, g in pairs)
    tn = sum(p == "no" and g == "no" for p, g in pairs)
    fn = sum(p == "no" and g == "yes" for p, g in pairs)
    precision = ratio(tp, tp + fp)
    recall = ratio(tp, tp + fn)
    f1 = None
    if precision is not None and recall is not None and precision + recall > 0:
        f1 = 2 * precision * recall / (precision + recall)
    return {
        "accuracy": ratio(tp + tn, len(pairs)),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "yes_ratio": ratio(tp + fp, len(pairs)),
        "counts": {"TP": tp, "FP": fp, "TN": tn, "FN": fn},
    }


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present and len(present) == len(values) else None


def score_pope(records: list[dict], judge=None) -> dict[str, Any]:
    """Per-category POPE metrics, their mean (the figure papers report) and the pooled counts.

    ``unparsed`` counts answers with neither yes nor no/not in the first sentence: the POPE rule reads
    them as "yes", and so they are scored here, but they are reported.
    """
    by_category: dict[str, list[tuple[str, str]]] = defaultdict(list)
    pairs, unparsed = [], 0
    for record in records:
        answer = record["prediction"]
        pred = pope_yes_no(answer)
        if pred == "yes" and not _pope_says_yes(answer):
            unparsed += 1
        pair = (pred, record["gold"])
        pairs.append(pair)
        by_category[str(record.get("meta", {}).get("category") or "all")].append(pair)
    categories = {name: _binary_metrics(p) for name, p in sorted(by_category.items())}
    keys = ("accuracy", "precision", "recall", "f1", "yes_ratio")
    metrics = {key: _mean([m[key] for m in categories.values()]) for key in keys} if categories else dict.fromkeys(keys)
    return {"metrics": metrics, "by_category": categories, "pooled": _binary_metrics(pairs), "unparsed": unparsed}


BENCHMARKS = (
    Benchmark(
        "pope",
        "POPE: question JSONL (+ coco_pope_*.json) or parquet; acc / precision / recall / F1",
        load_pope,
        score_pope,
    ),
)
