"""MMBench dev / test (circular evaluation).

MMBench circular evaluation: every question is asked once per rotation of its options (A-D shifted);
it counts as solved only when every rotation is answered right.  The TSV either already holds the
rotations (indices ``i``, ``i + 1e6``, ``i + 2e6``, ... as the official circular files do) or holds each
question once, in which case the rotations are made here as LLaVA's ``--all-rounds`` does.  Answers are
matched to options with VLMEvalKit's rules (``choices.infer_option``); answers the rules cannot place
go to the LLM judge when one is configured (VLMEvalKit's matching prompt), otherwise they count as wrong
and are reported as unparsed.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter, defaultdict
from collections.abc import Iterator
from functools import partial
from typing import Any

from minigemini.evaluation.choices import LETTERS, infer_option, infer_option_letter
from minigemini.evaluation.loader import Benchmark, LoadOptions, load_rows
from minigemini.evaluation.prompts import mmbench_prompt
from minigemini.evaluation.readers import Row
from minigemini.evaluation.samples import InvalidRow, Sample, Unreadable
from minigemini.evaluation.scoring import means, ratio

__all__ = ["BENCHMARKS", "CIRCULAR_OFFSET", "load_mmbench", "mmbench_judge_prompt", "score_mmbench"]

CIRCULAR_OFFSET = 1_000_000


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip().lower() in ("", "nan", "none")


def _mmbench_options(row: dict) -> list[str]:
    options = []
    for letter in LETTERS:
        if letter not in row or _missing(row[letter]):
            break
        options.append(str(row[letter]))
    return options


def _is_base64(image: Any) -> bool:
    return isinstance(image, str) and len(image) > 64


def _indexed(where: str, row: Row) -> tuple[str, Row]:
    try:
        index = int(float(row["index"]))
    except (KeyError, TypeError, ValueError):
        raise Unreadable("row has no integer 'index'") from None
    return where, {**row, "index": index}


@dataclasses.dataclass
class _Table:
    """What the rows of one MMBench file say about each other: the base64 image of each index (a short digit
    string in ``image`` refers to the row with that index), whether the file already holds the rotations, and
    how many rows each question has."""

    images: dict[int, str]
    circular_file: bool
    group_sizes: Counter

    @classmethod
    def of(cls, rows: list[tuple[str, Row]]) -> _Table:
        return cls(
            images={row["index"]: row["image"] for _, row in rows if _is_base64(row.get("image"))},
            circular_file=any(row["index"] >= CIRCULAR_OFFSET for _, row in rows),
            group_sizes=Counter(row["index"] % CIRCULAR_OFFSET for _, row in rows),
        )

    def image(self, options: LoadOptions, image: Any) -> list[Any]:
        if isinstance(image, str) and image.strip().isdigit() and len(image.strip()) <= 64:
            image = self.images.get(int(image.strip()), f"missing-image-of-index-{image.strip()}")
        if _missing(image):
            return []
        if _is_base64(image):
            return [f"data:image;base64,{image}"]
        return options.images(image)


def _rotations(options: LoadOptions, table: _Table, where: str, row: Row) -> list[Sample]:
    """The question of a row, once (a circular file) or once per rotation of its options."""
    index = row["index"]
    choices = _mmbench_options(row)
    question = row.get("question")
    if len(choices) < 2 or _missing(question):
        raise Unreadable("row needs a question and at least options A and B")
    gold_letter = None if _missing(row.get("answer")) else str(row["answer"]).strip()
    if gold_letter is not None and gold_letter not in tuple(LETTERS[: len(choices)]):
        raise Unreadable(f"unknown answer format: {gold_letter[:20]!r} is not one of the option letters")
    images = table.image(options, row.get("image"))
    hint = None if _missing(row.get("hint")) else str(row["hint"])
    meta = {
        "group": index % CIRCULAR_OFFSET,
        "category": None if _missing(row.get("category")) else str(row["category"]),
        "l2_category": None if _missing(row.get("l2-category")) else str(row["l2-category"]),
        "question": str(question),
    }
    samples = []
    for shift in [0] if table.circular_file else range(len(choices)):
        rotated = choices[shift:] + choices[:shift]
        gold = None if gold_letter is None else LETTERS[(LETTERS.index(gold_letter) - shift) % len(choices)]
        size = table.group_sizes[index % CIRCULAR_OFFSET] if table.circular_file else len(choices)
        samples.append(
            Sample(
                qid=str(index + shift * CIRCULAR_OFFSET),
                prompt=mmbench_prompt(str(question), rotated, hint),
                images=list(images),
                gold=gold,
                meta={**meta, "options": rotated, "round": index // CIRCULAR_OFFSET + shift, "circular_size": size},
            )
        )
    return samples


def load_mmbench(options: LoadOptions) -> Iterator[Sample | InvalidRow]:
    """MMBench TSV: ``index, question, hint, A, B, C, D, answer, category, l2-category, image`` (base64).
    A short digit string in ``image`` refers to the row with that index (the circular files do this)."""
    rows: list[tuple[str, Row]] = []
    for item in load_rows(options, _indexed):
        if isinstance(item, InvalidRow):
            yield item
        else:
            rows.append(item)
    yield from load_rows(options, partial(_rotations, options, _Table.of(rows)), rows=rows)


def mmbench_judge_prompt(question: str, options: list[str], prediction: str) -> str:
    """VLMEvalKit's prompt for matching a free-form answer to an option (Z: none of them)."""
    option_text = "There are several options: \n" + "".join(f"{LETTERS[i]}. {o}\n" for i, o in enumerate(options))
    return (
        "You are an AI assistant who will help me to match an answer with several options of a single-choice "
        "question. You are provided with a question, several options, and an answer, and you need to find which "
        "option is most similar to the answer. If the meaning of all options are significantly different from the "
        "answer, output Z. Your should output a single uppercase character in A, B, C, D (if they are valid "
        "options), and Z. \n"
        "Example 1: \n"
        "Question: What is the main object in image?\nOptions: A. teddy bear B. rabbit C. cat D. dog\n"
        "Answer: a cute teddy bear\nYour output: A\n"
        "Example 2: \n"
        "Question: What is the main object in image?\nOptions: A. teddy bear B. rabbit C. cat D. dog\n"
        "Answer: Spider\nYour output: Z\n"
        "Example 3: \n"
        f"Question: {question}?\nOptions: {option_text}\nAnswer: {prediction}\nYour output: "
    )


def _judge_letter(judge, record: dict, choices: dict[str, str]) -> str | None:
    prompt = mmbench_judge_prompt(record["meta"]["question"], record["meta"]["options"], record["prediction"])
    for attempt in range(3):  # a reply that is not a letter: ask again, less greedily
        reply = judge.complete(prompt, max_tokens=8, temperature=0.5 * attempt)
        letter = infer_option_letter(reply, {**choices, "Z": ""})
        if letter is not None:
            return letter
    return None


def score_mmbench(records: list[dict], judge=None) -> dict[str, Any]:
    """Circular accuracy (headline), accuracy of the first round alone, and per-category figures."""
    groups: dict[int, list[tuple[dict, bool]]] = defaultdict(list)
    unparsed = judged = 0
    for record in records:
        options = record["meta"]["options"]
        choices = {LETTERS[i]: text for i, text in enumerate(options)}
        letter = infer_option(record["prediction"], choices)
        if letter is None and judge is not None:
            letter = _judge_letter(judge, record, choices)
            judged += letter is not None
        if letter is None:
            unparsed += 1
        groups[record["meta"]["group"]].append((record, letter == record["gold"]))
    complete = {g: items for g, items in groups.items() if len(items) == items[0][0]["meta"]["circular_size"]}
    solved = {g: all(hit for _, hit in items) for g, items in complete.items()}
    first_round = [hit for items in groups.values() for record, hit in items if record["meta"]["round"] == 0]

    def per(key: str) -> dict[str, float]:
        buckets: dict[str, list[bool]] = defaultdict(list)
        for g, items in complete.items():
            name = items[0][0]["meta"].get(key)
            if name is not None:
                buckets[name].append(solved[g])
        return means(buckets)

    return {
        "metrics": {
            "circular_accuracy": ratio(sum(solved.values()), len(solved)),
            "single_round_accuracy": ratio(sum(first_round), len(first_round)),
        },
        "questions": len(solved),
        "incomplete_questions": len(groups) - len(complete),
        "by_category": per("category"),
        "by_l2_category": per("l2_category"),
        "unparsed": unparsed,
        "judge_matched": judged,
    }


BENCHMARKS = (Benchmark("mmbench", "MMBench TSV (base64 images); circular accuracy", load_mmbench, score_mmbench),)
