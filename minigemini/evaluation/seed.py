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
from typing import Any

from minigemini.evaluation.base import LoadOptions, llava_questions, ratio
from minigemini.evaluation.choices import LETTERS, count_options
from minigemini.evaluation.prompts import OPTION_LETTER, with_suffix
from minigemini.evaluation.readers import first_present, image_source
from minigemini.evaluation.samples import InvalidRow, Sample

__all__ = ["load_seed", "score_seed"]

_VIDEO_FRAMES = "SEED-Bench-video-image"


def _data_type(row: dict, hit: dict | None, image: Any) -> str:
    value = first_present(hit or {}, "data_type") or first_present(row, "data_type")
    if value is not None:
        return str(value)
    return "video" if isinstance(image, str) and _VIDEO_FRAMES in image else "image"


def load_seed(options: LoadOptions) -> Iterator[Sample | InvalidRow]:
    """Questions of LLaVA's SEED file with their answer letters (inline ``answer`` or SEED-Bench.json)."""
    question_types = options.annotations.extra.get("question_types", {}) if options.annotations else {}
    for where, row, qid, text, image in llava_questions(options):
        if isinstance(row, InvalidRow):
            yield row
            continue
        hit = None
        if options.annotations is not None:
            hit = options.annotations.find(qid, where)
            if isinstance(hit, InvalidRow):
                yield hit
                continue
        num_options = count_options(text) or 4
        raw = first_present(row, "answer", "label") or first_present(hit or {}, "answer")
        gold = None
        if raw is not None:
            gold = str(raw).strip()
            if gold not in tuple(LETTERS[:num_options]):
                yield InvalidRow(where, f"unknown answer format: {gold[:40]!r} is not one of {num_options} options")
                continue
        category = first_present(row, "category") or first_present(hit or {}, "question_type_id")
        category = None if category is None else question_types.get(str(category), str(category))
        source = image_source(image, options.image_dirs)
        yield Sample(
            qid,
            with_suffix(text, OPTION_LETTER),
            [] if source is None else [source],
            gold,
            {"num_options": num_options, "category": category, "data_type": _data_type(row, hit, image)},
        )


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
        "by_category": {name: sum(v) / len(v) for name, v in sorted(by_category.items())},
        "unparsed": unparsed,
    }
