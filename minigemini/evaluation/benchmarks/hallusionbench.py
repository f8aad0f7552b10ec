"""HallusionBench (CVPR 2024; 951 yes/no questions in sets of figure / question pairs).

Files: the authors' ``HallusionBench.json`` (a list of ``{category: VD|VS, subcategory, visual_input: 0|1|2,
set_id, figure_id, question_id, question, gt_answer: "1" (yes) | "0" (no), filename}``; ``filename`` relative to
the folder holding ``hallusion_bench/``, null for the questions asked without a figure) or lmms-lab's parquet
(the same fields, ``image``).  The question id is ``category_subcategory_set_figure_question``, unique as the
authors' ``get_eval_all`` asserts.

Prompt: the question as written.

Reading an answer: VLMEvalKit's rule (the authors' judge is GPT-4; without one this is the leaderboard's): the
answer's words (punctuation removed, lower-cased) say yes when they hold "yes" and not "no", no the other way
round; anything else is unparsed.  A question is right when that matches the reference -- and, as the authors'
``assign_correctness`` says, an unparsed answer ("I cannot tell") to a visual-supplement question asked without
its figure (VS, figure 0) is right too.
Metrics (the authors' three): aAcc, the fraction of questions right; fAcc, of figures (category, subcategory,
set, figure; VS figure 0 left out) whose questions are all right; qAcc, of questions (category, subcategory,
set, question) right on every figure they are asked with.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
from functools import partial
from typing import Any

from minigemini.evaluation.loader import Benchmark, LoadOptions, load_rows
from minigemini.evaluation.option_questions import table_image
from minigemini.evaluation.readers import Row, first_present
from minigemini.evaluation.samples import InvalidRow, Sample, Unreadable
from minigemini.evaluation.scoring import ratio

__all__ = ["BENCHMARKS", "load_hallusionbench", "read_yes_no", "score_hallusionbench"]

_KEYS = ("category", "subcategory", "set_id", "figure_id", "question_id")
_PUNCTUATION = re.compile(r"[^\w\s]")


def read_yes_no(answer: str) -> str | None:
    """ "yes", "no" or None (VLMEvalKit's ``YOrN_Extraction``)."""
    words = _PUNCTUATION.sub(" ", str(answer).lower()).split()
    if "yes" in words and "no" not in words:
        return "yes"
    if "no" in words and "yes" not in words:
        return "no"
    return None


def _gold(raw: Any) -> str | None:
    if raw is None:
        return None
    text = str(raw).strip().lower()
    gold = {"1": "yes", "0": "no", "yes": "yes", "no": "no"}.get(text)
    if gold is None:
        raise Unreadable(f"field 'gt_answer': {text[:20]!r} is neither 1/0 nor yes/no")
    return gold


def _hallusion_sample(options: LoadOptions, where: str, row: Row) -> Sample:
    fields = {key: first_present(row, key) for key in _KEYS}
    fields["subcategory"] = fields["subcategory"] or first_present(row, "l2-category")
    missing = [key for key, value in fields.items() if value is None]
    question = first_present(row, "question")
    if missing or question is None:
        raise Unreadable(f"no field {', '.join(repr(k) for k in missing or ['question'])}")
    meta = {key: str(value) for key, value in fields.items()}
    image = row.get("image") if row.get("image") is not None else first_present(row, "filename")
    images = table_image(options, image) if str(first_present(row, "visual_input") or "1") != "0" else []
    qid = "_".join(meta[key] for key in _KEYS)
    return Sample(qid, str(question), images, _gold(first_present(row, "gt_answer", "answer")), meta)


def load_hallusionbench(options: LoadOptions) -> Iterator[Sample | InvalidRow]:
    """One question per entry of ``HallusionBench.json`` (or row of the parquet)."""
    return load_rows(options, partial(_hallusion_sample, options))


def _all_right(groups: dict[str, list[bool]]) -> float | None:
    return ratio(sum(all(hits) for hits in groups.values()), len(groups))


def score_hallusionbench(records: list[dict], judge=None) -> dict[str, Any]:
    """aAcc, fAcc and qAcc (see the module docstring)."""
    hits: list[bool] = []
    figures: dict[str, list[bool]] = defaultdict(list)
    questions: dict[str, list[bool]] = defaultdict(list)
    unparsed = 0
    for record in records:
        meta = record["meta"]
        answer = read_yes_no(record["prediction"])
        unparsed += answer is None
        no_figure = meta["category"] == "VS" and meta["figure_id"] == "0"
        hit = answer == record["gold"] or (answer is None and no_figure)
        hits.append(hit)
        group = (meta["category"], meta["subcategory"], meta["set_id"])
        if not no_figure:
            figures["_".join((*group, meta["figure_id"]))].append(hit)
        questions["_".join((*group, meta["question_id"]))].append(hit)
    return {
        "metrics": {"aAcc": ratio(sum(hits), len(hits)), "fAcc": _all_right(figures), "qAcc": _all_right(questions)},
        "figures": len(figures),
        "question_pairs": len(questions),
        "unparsed": unparsed,
    }


BENCHMARKS = (
    Benchmark(
        "hallusionbench",
        "HallusionBench: the authors' JSON or lmms-lab parquet; aAcc / fAcc / qAcc",
        load_hallusionbench,
        score_hallusionbench,
    ),
)
