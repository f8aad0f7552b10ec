"""SEED-Bench as LLaVA-1.5 scores it (``scripts/convert_seed_for_submission.py``).

Files: LLaVA's ``llava-seed-bench.jsonl`` (``question_id``, ``image`` -- ``SEED-Bench-image/..`` or, for video
questions, the middle frame under ``SEED-Bench-video-image/..`` --, ``text`` with ``A. ..`` options, ``category``)
and SEED's ``SEED-Bench.json`` (``{"questions": [{question_id, answer, question_type_id, data_type}],
"question_type": {name: id}}``) given as the annotations.  The question id is unique; a question the annotation
file does not have is an unreadable row.

Reading an answer: none.  The script counts a question right when the model's text *equals* the answer letter
(``row['text'] == question_data['answer']``; the text is the stripped generation), so "B." or "B. Two" is wrong.
Answers that are not exactly one of the option letters are counted as unparsed.

Metrics: accuracy over all questions, over image questions (``image_accuracy``: the "SEED-Bench image" figure
LLaVA-1.5 reports) and over video questions, and per question type.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from functools import partial
from typing import Any

from minigemini.evaluation.choices import LETTERS, count_options
from minigemini.evaluation.loader import Benchmark, LoadOptions, llava_fields, load_rows
from minigemini.evaluation.prompts import OPTION_LETTER, with_suffix
from minigemini.evaluation.readers import Row, first_present
from minigemini.evaluation.samples import InvalidRow, Sample, Unreadable
from minigemini.evaluation.scoring import means, ratio

__all__ = ["BENCHMARKS", "load_seed", "score_seed"]

_VIDEO_FRAMES = "SEED-Bench-video-image"


def _data_type(row: dict, hit: dict | None, image: Any) -> str:
    value = first_present(hit or {}, "data_type") or first_present(row, "data_type")
    if value is not None:
        return str(value)
    return "video" if isinstance(image, str) and _VIDEO_FRAMES in image else "image"


def _seed_sample(options: LoadOptions, question_types: dict, where: str, row: Row) -> Sample:
    qid, text, image = llava_fields(row)
    hit = options.annotations.find(qid) if options.annotations is not None else None
    num_options = count_options(text) or 4
    raw = first_present(row, "answer", "label") or first_present(hit or {}, "answer")
    gold = None
    if raw is not None:
        gold = str(raw).strip()
        if gold not in tuple(LETTERS[:num_options]):
            raise Unreadable(f"unknown answer format: {gold[:40]!r} is not one of {num_options} options")
    category = first_present(row, "category") or first_present(hit or {}, "question_type_id")
    category = None if category is None else question_types.get(str(category), str(category))
    meta = {"num_options": num_options, "category": category, "data_type": _data_type(row, hit, image)}
    return Sample(qid, with_suffix(text, OPTION_LETTER), options.images(image), gold, meta)


def load_seed(options: LoadOptions) -> Iterator[Sample | InvalidRow]:
    """Questions of LLaVA's SEED file with their answer letters (inline ``answer`` or SEED-Bench.json)."""
    question_types = options.annotations.extra.get("question_types", {}) if options.annotations else {}
    return load_rows(options, partial(_seed_sample, options, question_types))


def score_seed(records: list[dict], judge=None) -> dict[str, Any]:
    """Exact-match accuracy, overall, per data type (image / video) and per question type."""
    hits: list[bool] = []
    by_type: dict[str, list[bool]] = defaultdict(list)
    by_category: dict[str, list[bool]] = defaultdict(list)
    unparsed = 0
    for record in records:
        answer = record["prediction"].strip()
        unparsed += answer not in tuple(LETTERS[: record["meta"]["num_options"]])
        hit = answer == record["gold"]
        hits.append(hit)
        by_type[record["meta"].get("data_type", "image")].append(hit)
        if record["meta"].get("category") is not None:
            by_category[str(record["meta"]["category"])].append(hit)
    return {
        "metrics": {
            "image_accuracy": ratio(sum(by_type["image"]), len(by_type["image"])),
            "accuracy": ratio(sum(hits), len(hits)),
            "video_accuracy": ratio(sum(by_type["video"]), len(by_type["video"])),
        },
        "by_category": means(by_category),
        "unparsed": unparsed,
    }


BENCHMARKS = (
    Benchmark(
        "seed",
        "SEED-Bench: LLaVA JSONL (+ SEED-Bench.json); exact-match accuracy (image / video / all)",
        load_seed,
        score_seed,
    ),
)
