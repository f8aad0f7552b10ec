"""MathVista: answer extraction (rules, then an optional LLM judge with MathVista's few-shot extraction
prompt) and its ``calculate_score`` normalisation.

Extraction, as MathVista's ``extract_answer.py``: an empty response gives ""; a multiple-choice response
that is exactly a choice is taken; integer / float responses that parse are taken; ``The answer is "x".``
is taken (quick extraction).  What is left goes to the judge when one is configured.  Without a judge,
a fallback of this project reads an option letter (MMBench rules) or the last number of the response;
those answers are counted as ``fallback`` in the score file.

Scoring, as ``calculate_score.py``: multiple choice maps a letter (or "(B) text") to its choice, otherwise
the most similar choice by edit distance; integers are compared as ``str(int(float(x)))``, floats as
``str(round(float(x), precision))``, lists as ``str(x)``.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterator
from functools import partial
from typing import Any

from minigemini.evaluation.choices import LETTERS, infer_option
from minigemini.evaluation.loader import Benchmark, LoadOptions, load_rows
from minigemini.evaluation.prompts import mathvista_query
from minigemini.evaluation.readers import Row, first_present
from minigemini.evaluation.samples import InvalidRow, Sample, Unreadable
from minigemini.evaluation.scoring import means, ratio

__all__ = [
    "BENCHMARKS",
    "EXTRACTION_PROMPT",
    "edit_distance",
    "extract_answer",
    "load_mathvista",
    "normalize_extracted_answer",
    "score_mathvista",
]

EXTRACTION_PROMPT = """
Please read the following example. Then extract the answer from the model response and type it at the end of the prompt.

Hint: Please answer the question requiring an integer answer and provide the final value, e.g., 1, 2, 3, at the end.
Question: Which number is missing?

Model response: The number missing in the sequence is 14.

Extracted answer: 14

Hint: Please answer the question requiring a floating-point number with one decimal place and provide the final value, e.g., 1.2, 1.3, 1.4, at the end.
Question: What is the fraction of females facing the camera?

Model response: The fraction of females facing the camera is 0.6, which means that six out of ten females in the group are facing the camera.

Extracted answer: 0.6

Hint: Please answer the question requiring a floating-point number with two decimal places and provide the final value, e.g., 1.23, 1.34, 1.45, at the end.
Question: How much money does Luca need to buy a sour apple candy and a butterscotch candy? (Unit: $)

Model response: Luca needs $1.45 to buy a sour apple candy and a butterscotch candy.

Extracted answer: 1.45

Hint: Please answer the question requiring a Python list as an answer and provide the final list, e.g., [1, 2, 3], [1.2, 1.3, 1.4], at the end.
Question: Between which two years does the line  graph saw its maximum peak?

Model response: The line graph saw its maximum peak between 2007 and 2008.

Extracted answer: [2007, 2008]

Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, D, at the end.
Question: What fraction of the shape is blue?\nChoices:\n(A) 3/11\n(B) 8/11\n(C) 6/11\n(D) 3/5

Model response: The correct answer is (B) 8/11.

Extracted answer: B
"""

_QUESTION_TYPES = ("multi_choice", "free_form")
_ANSWER_TYPES = ("text", "integer", "float", "list")
_QUICK = re.compile(r'The answer is "(.*)"\.')
_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")


def extraction_prompt(query: str, response: str) -> str:
    """MathVista's judge prompt: the few-shot examples, the query and the response."""
    return f"{EXTRACTION_PROMPT.strip()}\n\n{query}\n\n{response}\n\nExtracted answer: "


def extract_answer(response: str, problem: dict[str, Any], judge=None) -> tuple[str, str]:
    """(extraction, method) with method one of ``empty``, ``rule``, ``judge``, ``fallback``, ``none``."""
    response = response.strip()
    if response == "":
        return "", "empty"
    choices = problem.get("choices") or []
    if problem["question_type"] == "multi_choice" and response in choices:
        return response, "rule"
    if problem["answer_type"] == "integer":
        try:
            return str(int(response)), "rule"
        except ValueError:
            pass
    if problem["answer_type"] == "float":
        try:
            return str(float(response)), "rule"
        except ValueError:
            pass
    quick = _QUICK.search(response)
    if quick:
        return quick.group(1), "rule"
    if judge is not None:
        reply = judge.complete(extraction_prompt(problem.get("query", ""), response), max_tokens=256).strip()
        if reply:
            return reply, "judge"
    if problem["question_type"] == "multi_choice":
        letter = infer_option(response, {LETTERS[i]: str(c) for i, c in enumerate(choices)})
        if letter and letter in LETTERS[: len(choices)]:
            return letter, "fallback"
    elif problem["answer_type"] in ("integer", "float"):
        numbers = _NUMBER.findall(response)
        if numbers:
            return numbers[-1].replace(",", ""), "fallback"
    return response, "none"


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def normalize_extracted_answer(
    extraction: Any, choices: list[str], question_type: str, answer_type: str, precision: int | None
) -> str | None:
    """MathVista's normalisation of an extracted answer to the answer's type (None when it cannot be)."""
    if question_type == "multi_choice":
        text = str(extraction).strip() if extraction is not None else ""
        letters = re.findall(r"\(([a-zA-Z])\)", text)
        if letters:
            text = letters[0].upper()
        options = list(LETTERS[: len(choices)])
        if text in options:
            return choices[options.index(text)]
        distances = [edit_distance(text, str(choice)) for choice in choices]
        return choices[distances.index(min(distances))] if choices else None
    try:
        if answer_type == "integer":
            return str(int(float(extraction)))
        if answer_type == "float":
            return str(round(float(extraction), int(precision or 0)))
        if answer_type == "list":
            return str(extraction)
    except (TypeError, ValueError, OverflowError):
        return None
    return None


def _precision(value: Any) -> int | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return int(value)


def _mathvista_sample(options: LoadOptions, where: str, row: Row) -> Sample:
    pid = first_present(row, "pid", "_key")
    question_type, answer_type = row.get("question_type"), row.get("answer_type")
    if pid is None or not row.get("question"):
        raise Unreadable("row has no pid or no question")
    if question_type not in _QUESTION_TYPES or answer_type not in _ANSWER_TYPES:
        raise Unreadable(f"unknown question/answer type {question_type!r}/{answer_type!r}")
    choices = [str(c) for c in (row.get("choices") or [])]
    if question_type == "multi_choice" and len(choices) < 2:
        raise Unreadable("a multi_choice problem needs at least two choices")
    precision = _precision(row.get("precision"))
    query = first_present(row, "query") or mathvista_query(
        str(row["question"]), question_type, answer_type, choices, row.get("unit"), precision
    )
    answer = first_present(row, "answer")
    if question_type == "multi_choice" and answer is not None and str(answer) not in choices:
        raise Unreadable(f"unknown answer format: {str(answer)[:40]!r} is not one of the choices")
    metadata = row.get("metadata") if isinstance(row.get("metadata"), dict) else {}
    return Sample(
        qid=str(pid),
        prompt=str(query),
        images=options.images(first_present(row, "decoded_image", "image")),
        gold=None if answer is None else str(answer),
        meta={
            "question_type": question_type,
            "answer_type": answer_type,
            "choices": choices,
            "precision": precision,
            "query": str(query),
            "metadata": {k: v for k, v in metadata.items() if isinstance(v, (str, int, float, list))},
        },
    )


def load_mathvista(options: LoadOptions) -> Iterator[Sample | InvalidRow]:
    """MathVista parquet / ``datasets`` rows or ``testmini.json`` (pid -> problem): ``pid, question, choices,
    unit, precision, answer, question_type, answer_type, query, metadata`` and ``decoded_image`` / ``image``."""
    return load_rows(options, partial(_mathvista_sample, options))


def score_mathvista(records: list[dict], judge=None) -> dict[str, Any]:
    """Accuracy overall and by question type, answer type and the metadata fields (category, task, ...)."""
    hits: list[bool] = []
    methods: dict[str, int] = defaultdict(int)
    groups: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        meta = record["meta"]
        problem = {**meta, "answer": record["gold"]}
        extraction, method = extract_answer(record["prediction"], problem, judge)
        methods[method] += 1
        prediction = normalize_extracted_answer(
            extraction, meta["choices"], meta["question_type"], meta["answer_type"], meta["precision"]
        )
        hit = prediction is not None and prediction == record["gold"]
        hits.append(hit)
        for key in ("question_type", "answer_type"):
            groups[key][meta[key]].append(hit)
        for key, value in meta.get("metadata", {}).items():
            for item in value if isinstance(value, list) else [value]:
                groups[key][str(item)].append(hit)
    return {
        "metrics": {"accuracy": ratio(sum(hits), len(hits))},
        "breakdown": {key: means(values) for key, values in sorted(groups.items())},
        "extraction": dict(sorted(methods.items())),
        "unparsed": methods.get("none", 0),
    }


BENCHMARKS = (
    Benchmark(
        "mathvista",
        "MathVista testmini: parquet, save_to_disk or JSON; rule (+ judge) extraction",
        load_mathvista,
        score_mathvista,
        max_new_tokens=1024,
    ),
)
