"""MMMU: the prompt of its llava1.5 config and the rule-based answer parsing of its ``eval_utils.py``.

Multiple choice: an option letter in brackets ``(B)``, else a bare letter between spaces, else (answers of
more than five words) an option's text; several candidates -> the last one in the answer; none -> a random
option (seeded, counted as unparsed).  Open questions: the tail of the sentences after "is", "so",
"therefore", "answer", "=" ..., plus every number in them; correct when a normalised number equals a
normalised reference number, or a reference string occurs in a prediction string.
"""

from __future__ import annotations

import ast
import random
import re
from collections import defaultdict
from collections.abc import Iterator
from functools import partial
from typing import Any

from minigemini.evaluation.choices import LETTERS
from minigemini.evaluation.loader import Benchmark, LoadOptions, load_rows
from minigemini.evaluation.prompts import mmmu_prompt
from minigemini.evaluation.readers import Row, first_present
from minigemini.evaluation.samples import InvalidRow, Sample, Unreadable
from minigemini.evaluation.scoring import means, ratio

__all__ = [
    "BENCHMARKS",
    "MMMU_DOMAINS",
    "load_mmmu",
    "mmmu_correct",
    "parse_multi_choice_response",
    "parse_open_response",
    "score_mmmu",
]

MMMU_DOMAINS = {
    "Art and Design": ("Art", "Art_Theory", "Design", "Music"),
    "Business": ("Accounting", "Economics", "Finance", "Manage", "Marketing"),
    "Science": ("Biology", "Chemistry", "Geography", "Math", "Physics"),
    "Health and Medicine": (
        "Basic_Medical_Science",
        "Clinical_Medicine",
        "Diagnostics_and_Laboratory_Medicine",
        "Pharmacy",
        "Public_Health",
    ),
    "Humanities and Social Science": ("History", "Literature", "Sociology", "Psychology"),
    "Tech and Engineering": (
        "Agriculture",
        "Architecture_and_Engineering",
        "Computer_Science",
        "Electronics",
        "Energy_and_Power",
        "Materials",
        "Mechanical_Engineering",
    ),
}
_SUBJECT_DOMAIN = {subject: domain for domain, subjects in MMMU_DOMAINS.items() for subject in subjects}


# ------------------------------------------------------------------------------------------------ parsing


def parse_multi_choice_response(
    response: str, all_choices: list[str], index2ans: dict[str, str], rng: random.Random | None = None
) -> tuple[str, bool]:
    """(predicted letter, parsed): ``parsed`` is False when the letter is MMMU's random fallback."""
    for char in (",", ".", "!", "?", ";", ":", "'"):
        response = response.strip(char)
    response = f" {response} "
    candidates = [c for c in all_choices if f"({c})" in response]
    bracketed = bool(candidates)
    by_text = False
    if not candidates:
        candidates = [c for c in all_choices if f" {c} " in response]
    if not candidates and len(response.split()) > 5:
        candidates = [c for c, text in index2ans.items() if text.lower() in response.lower()]
        by_text = bool(candidates)
    if not candidates:
        return (rng or random.Random(42)).choice(all_choices), False
    if len(candidates) == 1:
        return candidates[0], True
    if by_text:
        positions = [response.lower().rfind(index2ans[c].lower()) for c in candidates]
    elif bracketed:
        positions = [response.rfind(f"({c})") for c in candidates]
    else:
        positions = [response.rfind(f" {c} ") for c in candidates]
    return candidates[max(range(len(candidates)), key=lambda i: (positions[i], -i))], True


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", ""))
        return True
    except ValueError:
        return False


def _normalize(text: str) -> list[Any]:
    text = text.strip()
    if _is_number(text):
        return [round(float(text.replace(",", "")), 2)]
    text = text.lower()
    return [" " + text, text + " "] if len(text) == 1 else [text]


_NUMBER_PATTERNS = (
    re.compile(r"-?\b\d{1,3}(?:,\d{3})+\b"),
    re.compile(r"-?\d+(?:\.\d+)?[eE][+-]?\d+"),
    re.compile(r"-?(?:\d+\.\d+|\.\d+|\d+\b)(?![eE][+-]?\d+)(?![,\d])"),
)
_KEY_INDICATORS = ("could be ", "so ", "is ", "thus ", "therefore ", "final ", "answer ", "result ")


def _key_subresponses(response: str) -> list[str]:
    response = response.strip().strip(".").lower()
    pieces = re.split(r"\.\s(?=[A-Z])|\n", response)
    keys = []
    for index, piece in enumerate(pieces):
        indicators = _KEY_INDICATORS + (("=",) if index == len(pieces) - 1 else ())
        shortest = None
        for indicator in indicators:
            if indicator in piece:
                tail = piece.split(indicator)[-1].strip()
                if not shortest or len(tail) < len(shortest):  # an empty tail is replaced, as eval_utils.py does
                    shortest = tail
        if shortest and shortest.strip() not in (":", ",", ".", "!", "?", ";", "'"):
            keys.append(shortest)
    return keys or [response]


def parse_open_response(response: str) -> list[Any]:
    """Candidate answers of an open question: key phrases and the numbers in them, normalised."""
    keys = _key_subresponses(response)
    candidates = list(keys)
    for key in keys:
        for pattern in _NUMBER_PATTERNS:
            candidates.extend(pattern.findall(key))
    normalised: list[Any] = []
    for candidate in candidates:
        normalised.extend(_normalize(candidate))
    return list(dict.fromkeys(normalised))


def mmmu_correct(question_type: str, gold: Any, parsed: Any) -> bool:
    """MMMU's ``eval_multi_choice`` / ``eval_open``."""
    golds = gold if isinstance(gold, list) else [gold]
    if question_type == "multiple-choice":
        return parsed in golds
    references: list[Any] = []
    for answer in golds:
        references.extend(_normalize(str(answer)))
    for prediction in parsed:
        if isinstance(prediction, str):
            if any(isinstance(ref, str) and ref in prediction for ref in references):
                return True
        elif prediction in references:
            return True
    return False


# ------------------------------------------------------------------------------------------------ data


def _literal_list(value: Any) -> list | None:
    if isinstance(value, list):
        return value
    if isinstance(value, str):
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return None
        return parsed if isinstance(parsed, list) else None
    return None


def _mmmu_gold(answer: Any, question_type: str, num_options: int) -> Any:
    """The reference of a row: an option letter, or an open answer (a list literal is a list); None for "?"."""
    if answer is None or str(answer) == "?":
        return None
    if question_type == "multiple-choice":
        gold = str(answer).strip()
        if gold not in LETTERS[:num_options]:
            raise Unreadable(f"unknown answer format: {gold[:20]!r} is not an option letter")
        return gold
    listed = _literal_list(answer) if str(answer).lstrip().startswith("[") else None
    return [str(a) for a in listed] if listed else str(answer)


def _mmmu_sample(options: LoadOptions, where: str, row: Row) -> Sample:
    qid, question, question_type = row.get("id"), row.get("question"), row.get("question_type")
    if qid is None or not question:
        raise Unreadable("row has no id or no question")
    if question_type not in ("multiple-choice", "open"):
        raise Unreadable(f"unknown question_type {question_type!r}")
    choices = _literal_list(row.get("options", "[]"))
    if choices is None or (question_type == "multiple-choice" and len(choices) < 2):
        raise Unreadable(f"options are not a list of at least two: {str(row.get('options'))[:60]!r}")
    gold = _mmmu_gold(first_present(row, "answer"), question_type, len(choices))
    subject = str(qid).split("_", 1)[1].rsplit("_", 1)[0] if str(qid).count("_") >= 2 else row.get("subfield")
    listed = [str(c) for c in choices] if question_type == "multiple-choice" else []
    return Sample(
        qid=str(qid),
        prompt=mmmu_prompt(str(question), listed or None),
        images=options.images(row.get("image_1")),
        gold=gold,
        meta={
            "question_type": question_type,
            "subject": subject,
            "domain": _SUBJECT_DOMAIN.get(subject),
            "options": listed,
        },
    )


def load_mmmu(options: LoadOptions) -> Iterator[Sample | InvalidRow]:
    """MMMU parquet / ``datasets`` rows: ``id, question, options, answer, question_type, image_1..image_7``.
    As in MGM's MMMU script only ``image_1`` goes to the model."""
    return load_rows(options, partial(_mmmu_sample, options))


def score_mmmu(records: list[dict], judge=None) -> dict[str, Any]:
    """Accuracy overall, per subject and per domain (instance-weighted, as MMMU reports)."""
    rng = random.Random(42)
    hits: list[bool] = []
    unparsed = 0
    subjects: dict[str, list[bool]] = defaultdict(list)
    domains: dict[str, list[bool]] = defaultdict(list)
    for record in sorted(records, key=lambda r: r["qid"]):
        meta = record["meta"]
        if meta["question_type"] == "multiple-choice":
            letters = list(LETTERS[: len(meta["options"])])
            parsed, ok = parse_multi_choice_response(
                record["prediction"], letters, dict(zip(letters, meta["options"])), rng
            )
            unparsed += not ok
        else:
            parsed = parse_open_response(record["prediction"])
        hit = mmmu_correct(meta["question_type"], record["gold"], parsed)
        hits.append(hit)
        if meta.get("subject"):
            subjects[meta["subject"]].append(hit)
        if meta.get("domain"):
            domains[meta["domain"]].append(hit)
    return {
        "metrics": {"accuracy": ratio(sum(hits), len(hits))},
        "by_subject": means(subjects),
        "by_domain": means(domains),
        "unparsed": unparsed,
    }


BENCHMARKS = (Benchmark("mmmu", "MMMU val/dev: parquet or save_to_disk; rule-parsed accuracy", load_mmmu, score_mmmu),)
