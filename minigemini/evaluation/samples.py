"""The records that flow through an evaluation: a benchmark question, a row that could not be read, and
the JSON line written for each answered question."""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["AnswerError", "EvalError", "InvalidRow", "Sample", "Unreadable", "prediction_record"]


class EvalError(ValueError):
    """A problem with an evaluation's inputs, environment or output folder (printed as one line by the CLI)."""


@dataclasses.dataclass
class Sample:
    """One question, ready for the model.

    qid: unique id within the benchmark (a string; the original id is kept in ``meta`` when it differs).
    prompt: the user text without the image placeholder (the prompt the paper's evaluation uses).
    images: what ``load_image`` takes (path, bytes, PIL image), one per image; empty for text-only questions.
    gold: the reference the scorer needs (answers, label, option letter, ...) or None when the split has none.
    meta: benchmark fields the scorer uses for breakdowns (category, options, question_type, ...); JSON-able.
    """

    qid: str
    prompt: str
    images: list[Any]
    gold: Any
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)


class AnswerError(Exception):
    """What an engine gives, in place of an answer, for a question it failed (an endpoint that refused, timed out
    or replied without text): written as the question's error, never scored as wrong."""


class Unreadable(ValueError):
    """Raised by a benchmark's row reader for a row that cannot become a question; the loader skeleton
    (``loader.load_rows``) turns it into the row's ``InvalidRow`` with this message as the reason."""


@dataclasses.dataclass
class InvalidRow:
    """A row of the benchmark file that could not become a Sample (malformed, or an unknown answer format)."""

    where: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"where": self.where, "reason": self.reason}


def prediction_record(sample: Sample, prediction: str | None = None, error: str | None = None) -> dict[str, Any]:
    """The JSON line of one question: everything the scorer needs, so scoring never re-reads the data."""
    record: dict[str, Any] = {"qid": sample.qid}
    if error is not None:
        record["error"] = error
    else:
        record["prediction"] = prediction
    record["prompt"] = sample.prompt
    record["gold"] = sample.gold
    record["meta"] = sample.meta
    return record
