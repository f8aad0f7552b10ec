"""`mgm data convert`: a simple table of image, question and answer (CSV or JSON Lines) -> a LLaVA-format training file.

Each row becomes one record, ``{"id", "image", "conversations": [human "<image>\\n" + question, gpt answer]}``; a row
without an image becomes a text-only record, and ``image`` may be one path or a list of them (a JSON list in a CSV
cell, or ``a.jpg;b.jpg``).  Image paths stay relative to the image folder training is given (``--image-folder``).

A file that cannot be used (no question or answer column, an unreadable CSV) is one error line; a row that cannot
(no question or answer, a path leaving the image folder, an absolute path) is left out and named in one line.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from minigemini.data.records import DataError, image_path_problem
from minigemini.data.skips import Skip
from minigemini.templates import IMAGE_PLACEHOLDER

__all__ = ["COLUMNS", "convert_table", "read_table", "to_record"]

#: column -> its accepted names
COLUMNS = {
    "image": ("image", "images", "image_path", "file"),
    "question": ("question", "prompt", "text", "instruction"),
    "answer": ("answer", "response", "output", "caption"),
    "id": ("id", "question_id"),
}


def read_table(path: str | os.PathLike) -> Iterator[tuple[str, dict[str, Any] | Skip]]:
    """(where, row) of each row of a CSV or JSON Lines file (a byte-order mark is fine); a broken JSON line is its
    Skip.  Raises DataError when a CSV lacks the question or answer column."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    with open(path, encoding="utf-8-sig", newline="") as f:
        if path.suffix.lower() == ".csv":
            reader = csv.DictReader(f)
            _check_columns(path, reader.fieldnames or [])
            for number, row in enumerate(reader, start=2):
                yield f"{path.name}:{number}", row
            return
        for number, line in enumerate(f, start=1):
            if line.strip():
                try:
                    yield f"{path.name}:{number}", json.loads(line)
                except json.JSONDecodeError as error:
                    yield f"{path.name}:{number}", Skip("bad_json", f"{path.name}:{number}", error.msg)


def _check_columns(path: Path, names: list[str]) -> None:
    for column in ("question", "answer"):
        if not set(COLUMNS[column]) & set(names):
            raise DataError(
                f"{path}: no {column} column (accepted names: {', '.join(COLUMNS[column])}; its columns: "
                f"{', '.join(names) or 'none'})"
            )


def _field(row: dict[str, Any], column: str) -> Any:
    return next((row[name] for name in COLUMNS[column] if row.get(name) not in (None, "")), None)


def _images(value: Any, where: str) -> list[str]:
    """A row's image cell as a list of relative paths (one path, a list, a JSON list or ``a;b`` in a CSV cell)."""
    if value is None:
        return []
    if isinstance(value, str):
        value = json.loads(value) if value.startswith("[") else [part.strip() for part in value.split(";")]
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise Skip("bad_record", where, f"image must be a path or a list of paths, got {value!r}")
    for image in value:
        problem = image_path_problem(image, absolute_allowed=False)
        if problem:
            raise Skip("bad_record", where, problem)
    return value


def to_record(where: str, row: Any) -> dict[str, Any]:
    """The LLaVA record of one table row; raises its Skip."""
    if isinstance(row, Skip):
        raise row
    if not isinstance(row, dict):
        raise Skip("bad_record", where, f"expected an object, got {type(row).__name__}")
    question, answer = _field(row, "question"), _field(row, "answer")
    if not isinstance(question, str) or not isinstance(answer, (str, int, float)):
        raise Skip("empty_conversation", where, "needs a question and an answer")
    images = _images(_field(row, "image"), where)
    if images and IMAGE_PLACEHOLDER not in question:
        question = (IMAGE_PLACEHOLDER + "\n") * len(images) + question
    record: dict[str, Any] = {"id": str(_field(row, "id") or where)}
    if images:
        record["image"] = images[0] if len(images) == 1 else images
    record["conversations"] = [{"from": "human", "value": question}, {"from": "gpt", "value": str(answer)}]
    return record


def convert_table(path: str | os.PathLike, out: str | os.PathLike) -> tuple[int, list[Skip]]:
    """Write ``path``'s rows as a LLaVA-format file ``out`` (JSON Lines for ``.jsonl``, else a JSON array); returns
    (records written, the rows left out)."""
    from minigemini.data.jsonio import write_records

    records, skipped = [], []
    for where, row in read_table(path):
        try:
            records.append(to_record(where, row))
        except Skip as skip:
            skipped.append(skip)
    if not records:
        raise DataError(f"{path}: no usable row" + (f" (first problem: {skipped[0]})" if skipped else ""))
    write_records(out, records)
    return len(records), skipped
