"""Reading LLaVA-format conversation files into validated records, counting every record that is skipped.

Format (one JSON array, or JSON Lines with one object per line)::

    {"id": "000001", "image": "coco/1.jpg" | ["a.jpg", "b.jpg"],     # optional: text-only when absent
     "system": "optional system prompt",
     "conversations": [{"from": "human", "value": "<image>\\nWhat is this?"},
                       {"from": "gpt", "value": "A cat."}, ...]}

Roles: ``human``/``user`` -> user, ``gpt``/``assistant`` -> assistant, ``system`` (first turn only) -> system.
Leading assistant turns are dropped (as the release does).  A record with images but no ``<image>`` in its text gets
the placeholders prepended to its first user turn; any other mismatch between images and placeholders is a skip.

Bad input never stops an epoch: each problem is a ``Skip``, counted and logged (``SkipCounter``) with the file and line or
record number; only a file that cannot be parsed at all, or data with no usable record, is an error.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from minigemini.data.skips import SKIP_REASONS, Skip, SkipCounter
from minigemini.templates import IMAGE_PLACEHOLDER

__all__ = [
    "SKIP_REASONS",
    "DataError",
    "Record",
    "Skip",
    "SkipCounter",
    "check_record",
    "iter_records",
    "read_records",
    "resolve_image",
]

_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


class DataError(ValueError):
    """The training data cannot be used at all (raised before training starts)."""


@dataclasses.dataclass
class Record:
    """One usable conversation: chat messages (``role``/``content``) and its images in text order (resolved paths, or
    the encoded bytes of a shard's row)."""

    messages: list[dict[str, str]]
    images: list[str | bytes]
    source: str  # "file:line" (JSONL), "file#record" (JSON array) or "shard#row", for messages
    id: str | None = None


def image_path_problem(image: str, absolute_allowed: bool) -> str | None:
    """What is wrong with a record's image path (relative to the image folder), or None: a path that leaves the
    folder (``../``), or an absolute one where the folder is given (``absolute_allowed`` False)."""
    if os.path.isabs(image):
        return None if absolute_allowed else f"absolute image path {image}: give it relative to the image folder"
    if os.path.normpath(image).split(os.sep)[0] == "..":
        return f"image path {image} leaves the image folder (../)"
    return None


def resolve_image(path: str, image_folders: Sequence[str]) -> str | None:
    """The first existing ``folder/path`` (or ``path`` itself if absolute or relative to the cwd); None if none."""
    if os.path.isabs(path):
        return path if os.path.isfile(path) else None
    for folder in image_folders:
        candidate = os.path.join(folder, path)
        if os.path.isfile(candidate):
            return candidate
    return None


def _iter_raw(path: str) -> Iterable[tuple[str, Any, str | None]]:
    """Yield (source, object or None, json error) for each record of a .json array or a JSON Lines file."""
    with open(path, encoding="utf-8-sig") as f:  # a byte-order mark is read as none
        head = f.read(4096).lstrip()
    name = os.path.basename(path)
    if head.startswith("["):
        with open(path, encoding="utf-8-sig") as f:  # a byte-order mark is read as none
            try:
                data = json.load(f)
            except json.JSONDecodeError as err:
                raise DataError(
                    f"{path} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}); "
                    "use a JSON array of records or JSON Lines (one record per line)"
                ) from None
        for index, obj in enumerate(data):
            yield f"{name}#{index}", obj, None
        return
    with open(path, encoding="utf-8-sig") as f:  # a byte-order mark is read as none
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield f"{name}:{line_number}", json.loads(line), None
            except json.JSONDecodeError as err:
                yield f"{name}:{line_number}", None, err.msg


def check_record(obj: Any, source: str, image_folders: Sequence[str], absolute_allowed: bool = True) -> Record:
    """``obj`` as a Record; raises ``Skip`` when it cannot be one.  Images are paths (resolved under
    ``image_folders``; absolute ones only where ``absolute_allowed``, i.e. no folder was given) or encoded bytes (a
    shard's row; ``None`` there means the image is missing)."""
    if not isinstance(obj, dict):
        raise Skip("bad_record", source, f"expected an object, got {type(obj).__name__}")
    conversations = obj.get("conversations")
    if not isinstance(conversations, list):
        raise Skip("bad_record", source, "no 'conversations' list")
    images = obj.get("image", obj.get("images"))
    if images is None:
        images = []
    elif isinstance(images, str):
        images = [images]
    if not isinstance(images, list) or not all(i is None or (isinstance(i, (str, bytes)) and i) for i in images):
        raise Skip("bad_record", source, "'image' must be a path or a list of paths")

    system = obj.get("system")
    if system is not None and not isinstance(system, str):
        raise Skip("bad_record", source, "'system' must be a string")
    messages: list[dict[str, str]] = []
    for turn_index, turn in enumerate(conversations):
        role = _ROLES.get(turn.get("from", turn.get("role"))) if isinstance(turn, dict) else None
        value = turn.get("value", turn.get("content")) if isinstance(turn, dict) else None
        if role is None or not isinstance(value, str):
            raise Skip("bad_record", source, f"turn {turn_index} needs 'from' (human/gpt) and a string 'value'")
        if role == "system":
            if turn_index != 0 or system is not None:
                raise Skip("bad_record", source, "a system turn must come first (and only once)")
            system = value
            continue
        if not messages and role == "assistant":
            continue  # the release drops a conversation's leading assistant turns
        messages.append({"role": role, "content": value})

    answers = [m for m in messages if m["role"] == "assistant" and m["content"].strip()]
    if not any(m["role"] == "user" for m in messages) or not answers:
        raise Skip("empty_conversation", source)
    if any(IMAGE_PLACEHOLDER in m["content"] for m in messages if m["role"] == "assistant"):
        raise Skip("image_count_mismatch", source, f"{IMAGE_PLACEHOLDER} in an assistant turn")
    placeholders = sum(m["content"].count(IMAGE_PLACEHOLDER) for m in messages)
    if images and placeholders == 0:
        messages[0] = {"role": "user", "content": (IMAGE_PLACEHOLDER + "\n") * len(images) + messages[0]["content"]}
    elif placeholders != len(images):
        raise Skip("image_count_mismatch", source, f"{placeholders} {IMAGE_PLACEHOLDER} for {len(images)} image(s)")

    resolved = []
    for image in images:
        if isinstance(image, bytes):
            resolved.append(image)
            continue
        if image is None:
            raise Skip("missing_image", source, "the row has no image bytes")
        problem = image_path_problem(image, absolute_allowed)
        if problem:
            raise Skip("bad_image_path", source, problem)
        found = resolve_image(image, image_folders)
        if found is None:
            raise Skip("missing_image", source, f"{image} not found under {list(image_folders)}")
        resolved.append(found)
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    record_id = obj.get("id")
    return Record(messages=messages, images=resolved, source=source, id=None if record_id is None else str(record_id))


def iter_records(
    data_files: str | Sequence[str],
    image_folders: str | Sequence[str] | None = None,
    skips: SkipCounter | None = None,
) -> Iterator[Record]:
    """Each usable record of ``data_files``, one at a time (skips are counted in ``skips``); see ``read_records``."""
    files = [data_files] if isinstance(data_files, (str, os.PathLike)) else list(data_files)
    if not files:
        raise DataError("no data files given")
    folders = [image_folders] if isinstance(image_folders, (str, os.PathLike)) else list(image_folders or [])
    skips = skips if skips is not None else SkipCounter()
    for path in files:
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise DataError(f"data file not found: {path}")
        roots = [os.fspath(f) for f in folders] or [os.path.dirname(os.path.abspath(path))]
        for source, obj, error in _iter_raw(path):
            try:
                if error is not None:
                    raise Skip("bad_json", source, error)
                record = check_record(obj, source, roots, absolute_allowed=not folders)
            except Skip as skip:
                skips.add(skip)
                continue
            yield record


def read_records(
    data_files: str | Sequence[str],
    image_folders: str | Sequence[str] | None = None,
    skips: SkipCounter | None = None,
) -> tuple[list[Record], SkipCounter]:
    """Read and validate every record of ``data_files``; return the usable records and the skip counts.

    ``image_folders``: roots that relative image paths are looked up in, first match wins (default: the data
    file's own folder).  Raises ``DataError`` for a missing or unparsable file; records are never fatal.
    """
    skips = skips if skips is not None else SkipCounter()
    return list(iter_records(data_files, image_folders, skips)), skips
