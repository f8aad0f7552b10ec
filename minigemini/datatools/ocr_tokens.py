"""`mgm data ocr`: add OCR tokens to text-rich training data, as the paper's appendix B does.

Each record's images are read with OCR (``minigemini.ocr``: rapidocr-onnxruntime, offline) and the first human turn
gets a last line ``Reference OCR token: t1, t2, ...`` (nothing is added when no text is found). Records that already
carry the line are left as they are, so running twice changes nothing.

Resumable: every image's tokens go to a cache (``OUTPUT.ocr-cache.jsonl``, one line per image, flushed at once);
an interrupted run keeps what it read and the next run starts where it stopped. Broken JSON lines, records without
a human turn, missing or unreadable images are counted (first examples in the report) and never stop the run;
such records are written unchanged (broken lines cannot be, and are dropped).
"""

from __future__ import annotations

import copy
import os
import sys
from collections.abc import Callable
from typing import Any

from minigemini.data.jsonio import AppendCache, iter_raw, write_json, write_records
from minigemini.data.records import resolve_image
from minigemini.data.skips import Skip, SkipCounter
from minigemini.datatools.mix import images_of
from minigemini.errors import require
from minigemini.ocr import DEFAULT_MIN_SCORE, OCR_PREFIX, ocr_hint

__all__ = ["augment"]

OcrFunction = Callable[[str], list[str]]


def _default_ocr(min_score: float) -> OcrFunction:
    from minigemini.ocr import ocr_tokens

    require("rapidocr_onnxruntime")  # a missing engine is the run's error, not every image's
    return lambda path: ocr_tokens(path, min_score=min_score)


def _first_human(obj: dict[str, Any]) -> dict[str, Any] | None:
    for turn in obj.get("conversations") or []:
        if isinstance(turn, dict) and turn.get("from", turn.get("role")) in ("human", "user"):
            return turn
    return None


def augment(
    data_file: str,
    output: str,
    image_folders: list[str] | None = None,
    cache_path: str | None = None,
    ocr: OcrFunction | None = None,
    min_score: float = DEFAULT_MIN_SCORE,
    max_tokens: int | None = None,
    image_prefixes: list[str] | None = None,
    sources: list[str] | None = None,
    retry_errors: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """OCR the images of ``data_file`` and write the augmented records to ``output``; returns the report."""
    from tqdm.auto import tqdm

    ocr = ocr or _default_ocr(min_score)
    folders = list(image_folders or []) or [os.path.dirname(os.path.abspath(data_file))]
    cache_path = cache_path or f"{output}.ocr-cache.jsonl"
    problems = SkipCounter(log_first=0)
    rows: list[Any] = []  # the records, in order (dicts), to write back
    for where, obj, error in iter_raw(data_file):
        if error is not None:
            problems.add(Skip("bad_json", where, error))
            continue
        rows.append((where, obj))

    def selected(obj: Any) -> bool:
        if not isinstance(obj, dict):
            return False
        if sources and obj.get("source") not in sources:
            return False
        images = images_of(obj)
        return bool(images) and (not image_prefixes or any(str(p).startswith(tuple(image_prefixes)) for p in images))

    # every image to read, once, in file order
    todo: dict[str, str] = {}  # resolved path -> first record that uses it (for messages)
    for where, obj in rows:
        if selected(obj):
            for image in images_of(obj):
                path = resolve_image(str(image), folders)
                if path is not None:
                    todo.setdefault(os.path.abspath(path), where)

    counts = {"records": len(rows), "augmented": 0, "unchanged": 0, "already_had_tokens": 0, "images": len(todo)}
    with AppendCache(cache_path, key="image") as cache:
        pending = [p for p in todo if p not in cache or (retry_errors and "error" in cache.get(p))]
        counts["images_cached"] = len(todo) - len(pending)
        with tqdm(total=len(pending), desc="ocr", unit="image", disable=not progress, file=sys.stderr) as bar:
            for path in pending:
                try:
                    entry = {"image": path, "tokens": list(ocr(path))}
                except (KeyboardInterrupt, SystemExit):
                    raise  # what is cached stays cached: the next run resumes here
                except Exception as err:  # noqa: BLE001 (an unreadable image is counted and cached, the run goes on)
                    entry = {"image": path, "error": f"{type(err).__name__}: {err}"}
                cache.add(entry)
                bar.update(1)
        records = []
        for where, obj in rows:
            records.append(_augment_record(where, obj, selected(obj), folders, cache, problems, counts, max_tokens))
    write_records(output, records)
    report = {
        "input": os.path.abspath(data_file),
        "output": os.path.abspath(output),
        "cache": os.path.abspath(cache_path),
        "counts": counts,
        "problems": problems.report(),
    }
    write_json(f"{output}.report.json", report)
    return report


def _augment_record(where, obj, selected, folders, cache, problems, counts, max_tokens) -> Any:
    if not selected:
        counts["unchanged"] += 1
        return obj
    turn = _first_human(obj)
    if turn is None or not isinstance(turn.get("value", turn.get("content")), str):
        problems.add(Skip("no_human_turn", where))
        counts["unchanged"] += 1
        return obj
    field = "value" if "value" in turn else "content"
    if OCR_PREFIX.strip() in turn[field]:
        counts["already_had_tokens"] += 1
        return obj
    tokens: list[str] = []
    for image in images_of(obj):
        path = resolve_image(str(image), folders)
        if path is None:
            problems.add(Skip("missing_image", where, str(image)))
            continue
        entry = cache.get(os.path.abspath(path)) or {}
        if "error" in entry:
            problems.add(Skip("unreadable_image", where, f"{image}: {entry['error']}"))
            continue
        tokens.extend(entry.get("tokens", []))
    if max_tokens is not None:
        tokens = tokens[:max_tokens]
    hint = ocr_hint(tokens)
    if not hint:
        counts["unchanged"] += 1
        return obj
    obj = copy.deepcopy(obj)
    turn = _first_human(obj)
    turn[field] = f"{turn[field].rstrip()}\n{hint}"
    counts["augmented"] += 1
    return obj
