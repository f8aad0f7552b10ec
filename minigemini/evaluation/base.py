"""What every benchmark provides (a loader and a scorer) and the small helpers the loaders share."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from minigemini.evaluation.readers import AnnotationIndex, Row, first_present, iter_rows
from minigemini.evaluation.samples import InvalidRow, Sample

__all__ = [
    "Benchmark",
    "LoadOptions",
    "Scorer",
    "llava_question",
    "load_all",
    "ratio",
    "unique_samples",
]


@dataclasses.dataclass
class LoadOptions:
    """Where a benchmark's files are: the data file/folder, folders to look images up in, an optional
    annotation file with the answers, and the split (for parquet / save_to_disk data with several)."""

    data: Path
    image_dirs: list[Path] = dataclasses.field(default_factory=list)
    annotations: AnnotationIndex | None = None
    split: str | None = None

    @classmethod
    def create(cls, data, image_dir=None, annotations=None, split=None) -> LoadOptions:
        data = Path(data).expanduser()
        base = data if data.is_dir() else data.parent
        dirs = [Path(image_dir).expanduser()] if image_dir else []
        dirs += [base, base / "images"]
        index = AnnotationIndex(annotations) if annotations else None
        return cls(data=data, image_dirs=dirs, annotations=index, split=split)


Scorer = Callable[..., dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class Benchmark:
    """name: the ``--bench`` value; load: LoadOptions -> Samples / InvalidRows; score: records -> metrics.

    ``score(records, judge=None)`` gets the prediction records of the questions that were answered and have
    a reference, and returns ``{"metrics": {...}, ...}`` plus an ``"unparsed"`` count where answers are
    parsed by rule.  ``needs_judge``: the benchmark cannot be scored without an LLM judge (MM-Vet).
    """

    name: str
    description: str
    load: Callable[[LoadOptions], Iterable[Sample | InvalidRow]]
    score: Scorer
    needs_judge: bool = False
    max_new_tokens: int = 128


def unique_samples(items: Iterable[Sample | InvalidRow]) -> Iterator[Sample | InvalidRow]:
    """Pass items through, turning a repeated question id into an InvalidRow.

    Loaders of benchmarks whose files share an id between questions (TextVQA, MME) give each question its own
    ``qid``; for the others the id identifies the question in the official scripts (a dict key), so a repeat
    is an error in the file, reported rather than scored twice."""
    seen: set[str] = set()
    for item in items:
        if isinstance(item, Sample):
            if item.qid in seen:
                yield InvalidRow(item.qid, "duplicate question id")
                continue
            seen.add(item.qid)
        yield item


def load_all(benchmark: Benchmark, options: LoadOptions) -> tuple[list[Sample], list[InvalidRow]]:
    """Every question of the benchmark file, in file order, and the rows that could not become one."""
    samples: list[Sample] = []
    invalid: list[InvalidRow] = []
    for item in unique_samples(benchmark.load(options)):
        (invalid if isinstance(item, InvalidRow) else samples).append(item)
    return samples, invalid


_IMAGE_TAG = re.compile(r"<image>\s*")


def llava_question(row: Row) -> tuple[str | None, str | None, Any]:
    """(question id, question text without ``<image>``, image reference) of a LLaVA-format row.

    Accepts the question JSONL (``question_id``, ``text``, ``image``) and the conversation JSON
    (``id``, ``conversations[0].value``, ``image``) that LLaVA uses for ScienceQA.
    """
    qid = first_present(row, "question_id", "questionId", "id", "_key", "pid")
    text = first_present(row, "text", "question", "prompt")
    if text is None and isinstance(row.get("conversations"), list) and row["conversations"]:
        first = row["conversations"][0]
        text = first.get("value") if isinstance(first, dict) else None
    if isinstance(text, str):
        text = _IMAGE_TAG.sub("", text).strip()
    image = first_present(row, "image", "image_path", "image_file")
    return (None if qid is None else str(qid)), text, image


def ratio(numerator: float, denominator: int) -> float | None:
    """numerator / denominator, or None for an empty set (a score of nothing is not 0)."""
    return numerator / denominator if denominator else None


def llava_questions(options: LoadOptions) -> Iterator[tuple[str, Row | InvalidRow, Any, str | None, Any]]:
    """``iter_rows`` of ``options.data`` with each row's ``llava_question`` fields: ``(where, row, qid, text, image)``.

    Unreadable rows and rows without a question id or text come back as an ``InvalidRow`` in the ``row`` slot."""
    for where, row in iter_rows(options.data, options.split):
        if isinstance(row, InvalidRow):
            yield where, row, None, None, None
            continue
        qid, text, image = llava_question(row)
        if qid is None or not text:
            yield where, InvalidRow(where, "row has no question id or no question text"), None, None, None
            continue
        yield where, row, qid, text, image
