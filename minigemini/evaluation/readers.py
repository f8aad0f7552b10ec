"""Benchmark files as their authors distribute them -> plain rows (dicts).

Formats: LLaVA question JSONL (``.jsonl``), JSON (a list, a ``{"data"/"questions"/"annotations": [...]}``
wrapper or a dict of dicts keyed by id), TSV/CSV (MMBench, base64 images inside), Parquet (one file or a
folder of shards, as the Hugging Face hub stores them) and folders written by ``datasets``'
``save_to_disk``.  A line that is not valid JSON becomes an ``InvalidRow`` instead of stopping the run.

Annotation files that carry the answers separately from the questions (TextVQA, VQAv2, GQA, POPE, SEED,
ScienceQA) are indexed by ``AnnotationIndex``.
"""

from __future__ import annotations

import ast
import csv
import json
import math
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from minigemini.evaluation.samples import EvalError, InvalidRow, Unreadable

__all__ = [
    "AnnotationIndex",
    "Row",
    "answer_list",
    "first_present",
    "image_source",
    "iter_rows",
]

Row = dict[str, Any]


def _iter_jsonl(path: Path) -> Iterator[tuple[str, Row | InvalidRow]]:
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            where = f"{path.name}:{number}"
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                yield where, InvalidRow(where, f"not valid JSON ({error.msg})")
                continue
            if not isinstance(row, dict):
                yield where, InvalidRow(where, f"expected a JSON object, got {type(row).__name__}")
                continue
            yield where, row


def _json_rows(data: Any) -> list[Row]:
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        for key in ("data", "questions", "annotations"):
            if isinstance(data.get(key), list):
                return data[key]
        if data and all(isinstance(v, dict) for v in data.values()):
            return [{"_key": key, **value} for key, value in data.items()]
    raise ValueError("expected a JSON list of rows, a dict of rows keyed by id, or a {'data': [...]} wrapper")


def _iter_json(path: Path) -> Iterator[tuple[str, Row | InvalidRow]]:
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    for index, row in enumerate(_json_rows(data)):
        where = f"{path.name}[{index}]"
        yield (
            where,
            row if isinstance(row, dict) else InvalidRow(where, f"expected an object, got {type(row).__name__}"),
        )


def _iter_delimited(path: Path) -> Iterator[tuple[str, Row | InvalidRow]]:
    csv.field_size_limit(sys.maxsize)  # MMBench keeps base64 images in a cell
    delimiter = "," if path.suffix.lower() == ".csv" else "\t"
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        for number, row in enumerate(reader, 2):
            where = f"{path.name}:{number}"
            if None in row or any(value is None for value in row.values()):
                yield (
                    where,
                    InvalidRow(where, f"the number of cells differs from the header's {len(reader.fieldnames or [])}"),
                )
                continue
            yield where, row


def _split_of(file: Path) -> str:
    """The split a hub-layout parquet shard belongs to: ``validation-00000-of-00001.parquet`` -> validation."""
    return file.name.split("-")[0].split(".")[0]


def _parquet_files(path: Path, split: str | None) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(path.rglob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no parquet files under {path}")
    splits = sorted({_split_of(f) for f in files})
    if split is None:
        if len(splits) > 1:
            raise ValueError(f"{path} holds several splits ({', '.join(splits)}): choose one with --split")
        return files
    chosen = [f for f in files if _split_of(f) == split or f.parent.name == split]
    if not chosen:
        raise FileNotFoundError(f"no parquet file of split {split!r} under {path} (splits: {', '.join(splits)})")
    return chosen


def _iter_parquet(path: Path, split: str | None) -> Iterator[tuple[str, Row | InvalidRow]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise EvalError("reading parquet needs pyarrow: pip install 'minigemini[eval]'") from error
    for file in _parquet_files(path, split):
        parquet = pq.ParquetFile(file)
        index = 0
        for batch in parquet.iter_batches(batch_size=256):
            for row in batch.to_pylist():
                yield f"{file.name}[{index}]", row
                index += 1


def _is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and any(
        (path / name).is_file() for name in ("dataset_info.json", "state.json", "dataset_dict.json")
    )


def _iter_saved_dataset(path: Path, split: str | None) -> Iterator[tuple[str, Row | InvalidRow]]:
    try:
        import datasets
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise EvalError("reading a save_to_disk folder needs datasets: pip install 'minigemini[eval]'") from error
    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        if split is None:
            if len(loaded) > 1:
                raise ValueError(f"{path} holds several splits ({', '.join(loaded)}): choose one with --split")
            split = next(iter(loaded))
        if split not in loaded:
            raise ValueError(f"split {split!r} is not in {path} (it has {', '.join(loaded)})")
        loaded = loaded[split]
    for index, row in enumerate(loaded):
        yield f"{path.name}[{index}]", row


def iter_rows(path: str | os.PathLike, split: str | None = None) -> Iterator[tuple[str, Row | InvalidRow]]:
    """Yield ``(where, row)`` for every row of a benchmark file or folder; ``where`` names the row for reports."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"benchmark data not found: {path}")
    if _is_saved_dataset(path):
        yield from _iter_saved_dataset(path, split)
        return
    suffix = path.suffix.lower()
    if path.is_dir() or suffix == ".parquet":
        yield from _iter_parquet(path, split)
    elif suffix == ".jsonl":
        yield from _iter_jsonl(path)
    elif suffix == ".json":
        yield from _iter_json(path)
    elif suffix in (".tsv", ".csv"):
        yield from _iter_delimited(path)
    else:
        raise ValueError(
            f"unknown benchmark file type {path.name!r}: expected .jsonl, .json, .tsv, .csv, .parquet, "
            "a folder of parquet files or a save_to_disk folder"
        )


def first_present(row: Row, *keys: str) -> Any:
    """The first of ``keys`` whose value is present (not None, not an empty string, not NaN)."""
    for key in keys:
        value = row.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        if isinstance(value, float) and math.isnan(value):  # NaN from pandas-written files
            continue
        return value
    return None


def answer_list(value: Any) -> list[str] | None:
    """A cell holding a question's answers as a list of strings: a list (JSON, parquet), a list literal written into
    a TSV cell (VLMEvalKit's ``"['a', 'b']"``) or one answer; None when the cell is empty."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("[") and text.endswith("]"):
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                return [value]
        else:
            return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(a, (str, int, float)) for a in value):
        return [str(a) for a in value]
    raise Unreadable(f"answers {str(value)[:40]!r} are not a list of strings")


def image_source(value: Any, base_dirs: Sequence[Path]) -> Any:
    """Turn an image cell into something ``load_image`` takes; None when the row has no image.

    Relative paths are looked up under each of ``base_dirs`` in turn; a path found nowhere is returned
    joined to the first one, so the run reports it as a missing image rather than guessing.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, dict):  # parquet Image feature: {"bytes": ..., "path": ...}
        if value.get("bytes"):
            return value["bytes"]
        return image_source(value.get("path"), base_dirs)
    if isinstance(value, (str, os.PathLike)):
        path = Path(value).expanduser()
        if path.is_absolute() or not base_dirs:
            return str(path)
        for base in base_dirs:
            if (base / path).exists():
                return str(base / path)
        return str(base_dirs[0] / path)
    return value  # PIL image, bytes, numpy array


class AnnotationIndex:
    """Answers kept apart from the questions: ``by_id`` (question id), ``by_pair`` ((image id, lower-cased
    question), TextVQA's join key) and ``by_category`` (POPE's label files, in file order).

    Understood: TextVQA ``{"data": [{image_id, question, answers}]}``, VQAv2 ``{"annotations": [{question_id,
    answers: [{answer}]}]}``, SEED ``{"questions": [{question_id, answer, question_type_id, data_type}],
    "question_type": {...}}``, GQA / ScienceQA / MM-Vet dicts keyed by id, a JSONL of ``{question_id,
    label|answer}``, and POPE's folder of ``coco_pope_<category>.json`` files.  Which key a benchmark joins
    on is the loader's choice (see README.md).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.by_id: dict[str, Row] = {}
        self.by_pair: dict[tuple[str, str], Row] = {}
        self.by_category: dict[str, list[Row]] = {}  # POPE: each coco_pope_<category>.json's rows, in file order
        self.extra: dict[str, Any] = {}
        if not self.path.exists():
            raise FileNotFoundError(f"annotation file not found: {self.path}")
        if self.path.is_dir():
            for file in sorted(self.path.glob("*.json*")):
                category = file.stem.removeprefix("coco_pope_")
                for _, row in _iter_jsonl(file) if _looks_like_jsonl(file) else _iter_json(file):
                    if isinstance(row, dict):
                        self._add(row)
                        self.by_category.setdefault(category, []).append(row)
            return
        with open(self.path, encoding="utf-8") as handle:
            text = handle.read()
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
        if isinstance(data, dict) and isinstance(data.get("question_type"), dict):
            self.extra["question_types"] = {str(v): k for k, v in data["question_type"].items()}
        for row in _json_rows(data):
            if isinstance(row, dict):
                self._add(row)

    def _add(self, row: Row) -> None:
        if isinstance(row.get("answers"), list) and row["answers"] and isinstance(row["answers"][0], dict):
            row = {**row, "answers": [a.get("answer") for a in row["answers"]]}  # VQAv2 layout
        key = first_present(row, "question_id", "questionId", "_key", "id", "pid")
        if key is not None:
            self.by_id[str(key)] = row
        if row.get("image_id") is not None and row.get("question"):
            self.by_pair[(str(row["image_id"]), str(row["question"]).strip().lower())] = row

    def lookup(self, qid: str) -> Row | None:
        """The answer row of question id ``qid`` (None when the file has none)."""
        return self.by_id.get(str(qid))

    def find(self, qid: str, what: str = "question id") -> Row:
        """The answer row of ``qid``; Unreadable when this file has none."""
        hit = self.lookup(qid)
        if hit is None:
            raise Unreadable(f"{what} {qid} is not in {self.path.name}")
        return hit


def _looks_like_jsonl(path: Path) -> bool:
    with open(path, encoding="utf-8") as handle:
        first = handle.readline().strip()
        second = handle.readline().strip()
    return first.startswith("{") and first.endswith("}") and (not second or second.startswith("{"))
