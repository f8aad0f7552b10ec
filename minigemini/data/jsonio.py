"""Files for the `mgm data` tools: reading LLaVA-format files leniently, atomic writes, append-only resume caches.

- ``iter_raw(path)``: (source, object, json error) per record of a JSON array or a JSON Lines file (records.py's
  reader, so both tools and training agree on what a file holds).
- ``write_records(path, records)``: a JSON array (one record per line, still one JSON document) or JSON Lines by
  suffix, written to a temporary sibling and renamed into place: a reader never sees half a file, and an interrupted
  run leaves the previous output intact.
- ``AppendCache``: one JSON object per line, flushed after every entry, so work done before a crash or Ctrl-C is
  kept; a torn last line (the process died mid-write) is ignored on reading.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Self

from minigemini.data.records import _iter_raw
from minigemini.saving import write_file_atomic

__all__ = ["AppendCache", "iter_raw", "write_json", "write_records"]


def iter_raw(path: str | os.PathLike) -> Iterator[tuple[str, Any, str | None]]:
    """(source, object or None, JSON error) for each record of ``path``; raises DataError for a broken JSON array."""
    return _iter_raw(os.fspath(path))


def _replace_atomically(path: str | os.PathLike, write) -> Path:
    """``write(handle)`` into a UTF-8 text file that replaces ``path`` only when complete."""

    def write_staging(staging: Path) -> None:
        with open(staging, "w", encoding="utf-8") as handle:
            write(handle)

    return write_file_atomic(Path(path).expanduser(), write_staging)


def write_records(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> Path:
    """Write records atomically: JSON Lines for ``.jsonl``, else a JSON array with one record per line."""
    path = Path(path)
    lines = path.suffix.lower() == ".jsonl"

    def write(handle) -> None:
        if lines:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            return
        handle.write("[")
        for index, record in enumerate(records):
            handle.write(("\n" if index == 0 else ",\n") + json.dumps(record, ensure_ascii=False))
        handle.write("\n]\n")

    return _replace_atomically(path, write)


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """One indented JSON document (reports), written atomically."""

    def write(handle) -> None:
        json.dump(data, handle, indent=2, ensure_ascii=False, default=str)
        handle.write("\n")

    return _replace_atomically(path, write)


class AppendCache:
    """A resumable cache: ``entries`` (key -> object) read from ``path`` at start, ``add`` appends and flushes.

    A later entry for the same key replaces an earlier one (e.g. a retried failure that now succeeded).
    """

    def __init__(self, path: str | os.PathLike, key: str = "key"):
        self.path = Path(path).expanduser()
        self.key = key
        self.entries: dict[str, dict[str, Any]] = {}
        self.torn_lines = 0
        if self.path.exists():
            with open(self.path, encoding="utf-8") as handle:
                for line in handle:
                    if not line.strip():
                        continue
                    try:
                        entry = json.loads(line)
                    except json.JSONDecodeError:
                        self.torn_lines += 1  # a line cut by a crash: its work is simply redone
                        continue
                    if isinstance(entry, dict) and self.key in entry:
                        self.entries[str(entry[self.key])] = entry
        self._handle = None

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def get(self, key: str) -> dict[str, Any] | None:
        return self.entries.get(key)

    def add(self, entry: dict[str, Any]) -> None:
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (open until close())
            if self._handle.tell() > 0:
                self._handle.write("\n")  # start clean after a torn last line (blank lines are skipped)
        self._handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self._handle.flush()
        self.entries[str(entry[self.key])] = entry

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
