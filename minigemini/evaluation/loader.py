"""What a benchmark is (``Benchmark``: a loader and a scorer; ``LoadOptions``: where its files are) and the one
loader skeleton every benchmark module parameterises.

The skeleton, ``load_rows``: the benchmark file -> rows (``readers.iter_rows``) -> the benchmark's row reader,
``to_samples(where, row)`` -> its Sample(s).  A row reader is written as a straight line that raises
``Unreadable`` where a row cannot become a question; the skeleton turns that into the row's ``InvalidRow``.
LLaVA question files (the layout most benchmarks are distributed in) are read with ``llava_fields``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from minigemini.evaluation.readers import AnnotationIndex, Row, first_present, image_source, iter_rows
from minigemini.evaluation.samples import InvalidRow, Sample, Unreadable

__all__ = [
    "Benchmark",
    "LoadOptions",
    "Scorer",
    "llava_fields",
    "load_all",
    "load_rows",
    "unique_samples",
]

T = TypeVar("T")


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

    def images(self, value: Any) -> list[Any]:
        """A row's image cell as a Sample's ``images``: ``[source]`` (``readers.image_source``), or ``[]``."""
        source = image_source(value, self.image_dirs)
        return [] if source is None else [source]


Scorer = Callable[..., dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class Benchmark:
    """name: the ``--bench`` value; load: LoadOptions -> Samples / InvalidRows; score: records -> metrics.

    ``score(records, judge=None)`` gets the prediction records of the questions that were answered and have
    a reference, and returns ``{"metrics": {...}, ...}`` plus an ``"unparsed"`` count where answers are
    parsed by rule.  ``needs_judge``: the benchmark cannot be scored without an LLM judge (MM-Vet).
    ``default_data(folder, n)``: for a benchmark that can write its own data (the synthetic set), the data
    file of a run without ``--data``, written under ``folder`` with ``n`` questions when it is not there yet.
    """

    name: str
    description: str
    load: Callable[[LoadOptions], Iterable[Sample | InvalidRow]]
    score: Scorer
    needs_judge: bool = False
    max_new_tokens: int = 128
    default_data: Callable[[Path, int], Path] | None = None


def load_rows(
    options: LoadOptions,
    to_samples: Callable[[str, Row], T | list[T]],
    rows: Iterable[tuple[str, Row | InvalidRow]] | None = None,
) -> Iterator[T | InvalidRow]:
    """The loader skeleton: each row of ``options.data`` (or of ``rows``, a benchmark's own ``(where, row)``
    pairs) through ``to_samples(where, row)``, which returns one item or a list of them.  A row the reader
    could not parse, or one for which ``to_samples`` raises ``Unreadable``, comes out as an ``InvalidRow``."""
    for where, row in iter_rows(options.data, options.split) if rows is None else rows:
        if isinstance(row, InvalidRow):
            yield row
            continue
        try:
            made = to_samples(where, row)
        except Unreadable as error:
            yield InvalidRow(where, str(error))
            continue
        if isinstance(made, list):
            yield from made
        else:
            yield made


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


def llava_fields(row: Row) -> tuple[str, str, Any]:
    """(question id, question text without ``<image>``, image cell) of a LLaVA-format row; Unreadable when it
    has no question id or no question text.

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
    if qid is None or not text:
        raise Unreadable("row has no question id or no question text")
    image = first_present(row, "image", "image_path", "image_file")
    return str(qid), text, image
