"""`mgm data shard`: LLaVA-format JSON/JSONL + an image folder -> Parquet or WebDataset shards with the images inside.

Shard ``k`` holds the usable records among input records ``k*N .. (k+1)*N - 1`` (``N`` = ``--shard-size``), so a
rerun knows which inputs a finished shard covers without reading it.  Each record is validated as training does
(``records.check_record``); each image is read and decoded once: one that is missing or does not decode leaves its
record out, counted and named (never written into a shard).

- Parquet: ``datasets`` features ``id``, ``conversations`` (list of ``{from, value}``), ``images`` (list of
  ``Image``: the file's own bytes), ``system``, ``source``, so ``load_dataset("parquet", ...)`` reads it too.
- WebDataset: one ``json`` member (the record, image names in ``images``) plus the images' bytes as ``jpg``/``png``
  (``0.png``, ``1.jpg``, ... for several), written with ``webdataset.TarWriter``.

Every shard is written to a hidden temporary name and renamed when complete; ``manifest.partial.jsonl`` logs each
finished shard (file, samples, bytes, sha256, skips), so an interrupted run resumes at the first missing shard.
``manifest.json`` (format, counts, checksums, skips by reason with examples) is written last.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from minigemini.data.jsonio import AppendCache, iter_raw, write_json
from minigemini.data.records import Record, check_record
from minigemini.data.shards import MANIFEST
from minigemini.data.skips import Skip, SkipCounter
from minigemini.errors import UserError
from minigemini.image_processing import ImageLoadError, load_image
from minigemini.saving import write_file_atomic

__all__ = ["SHARD_FORMATS", "ShardResult", "write_shards"]

SHARD_FORMATS = {"parquet": "parquet", "webdataset": "tar"}
PROGRESS_LOG = "manifest.partial.jsonl"
_SETTINGS_KEY = "#settings"
_EXTENSIONS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tif"}


@dataclasses.dataclass
class ShardResult:
    manifest: dict[str, Any]
    path: Path
    written: int  # shards written by this run (the others were kept from an earlier one)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _encoded_image(path: str, source: str) -> tuple[bytes, str]:
    """The file's bytes and an extension, after a full decode (raises an ``unreadable_image`` Skip)."""
    try:
        data = Path(path).read_bytes()
        image = load_image(data)
    except (ImageLoadError, OSError) as err:
        raise Skip("unreadable_image", source, f"{path}: {str(err).split(': <bytes>')[0]}") from None
    from PIL import Image

    with Image.open(io.BytesIO(data)) as original:
        extension = _EXTENSIONS.get(original.format or "")
    if extension is None:  # a format the readers do not name: store it as PNG
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data, extension = buffer.getvalue(), "png"
    return data, extension


def _row(obj: dict[str, Any], record: Record, images: list[tuple[bytes, str]]) -> dict[str, Any]:
    turns = [
        {"from": str(t.get("from", t.get("role"))), "value": t.get("value", t.get("content"))}
        for t in obj["conversations"]
    ]
    names = obj.get("image", obj.get("images"))
    names = [names] if isinstance(names, str) else list(names or [])
    return {
        "id": record.id or record.source,
        "conversations": turns,
        "images": images,
        "image_names": [str(n) for n in names],
        "system": obj.get("system"),
        "source": None if obj.get("source") is None else str(obj["source"]),
    }


def _write_parquet(rows: list[dict[str, Any]], staging: Path) -> None:
    from datasets import Dataset, Features, Image, List, Value

    features = Features(
        {
            "id": Value("string"),
            "conversations": List({"from": Value("string"), "value": Value("string")}),
            "images": List(Image()),
            "system": Value("string"),
            "source": Value("string"),
        }
    )
    columns = {name: [] for name in features}
    for row in rows:
        for name in features:
            value = row[name]
            if name == "images":
                value = [{"bytes": data, "path": path} for (data, _), path in zip(value, row["image_names"])]
            columns[name].append(value)
    import pyarrow.parquet as pq

    pq.write_table(Dataset.from_dict(columns, features=features).data.table, str(staging))  # with the features


def _write_tar(rows: list[dict[str, Any]], staging: Path, first_key: int) -> None:
    import webdataset

    with webdataset.TarWriter(str(staging), mtime=0) as writer:  # the same input, the same bytes
        for number, row in enumerate(rows):
            record = {k: row[k] for k in ("id", "conversations", "system", "source") if row[k] is not None}
            record["images"] = row["image_names"]
            sample: dict[str, Any] = {"__key__": f"{first_key + number:010d}", "json": json.dumps(record).encode()}
            for index, (data, extension) in enumerate(row["images"]):
                sample[extension if len(row["images"]) == 1 else f"{index}.{extension}"] = data
            writer.write(sample)


def _chunks(inputs: Sequence[str], image_folders: Sequence[str], size: int) -> Iterator[list[tuple]]:
    """The input records in runs of ``size`` (one shard's worth), each record as (source, object, JSON error, the
    image folders of its file)."""
    chunk: list[tuple] = []
    for path in inputs:
        if not os.path.isfile(path):
            raise UserError(f"data file not found: {path}")
        roots = list(image_folders) or [os.path.dirname(os.path.abspath(path))]
        for source, obj, error in iter_raw(path):
            chunk.append((source, obj, error, roots))
            if len(chunk) == size:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


def _shard_rows(chunk: list[tuple], absolute_allowed: bool) -> tuple[list[dict[str, Any]], SkipCounter]:
    """The rows of the chunk's usable records, validated as training does (absolute image paths only where
    ``absolute_allowed``: no image folder given) and with their images read and decoded; the others counted and
    named."""
    rows: list[dict[str, Any]] = []
    skips = SkipCounter(log_first=3)
    for source, obj, error, roots in chunk:
        try:
            if error is not None:
                raise Skip("bad_json", source, error)
            record = check_record(obj, source, roots, absolute_allowed)
            rows.append(_row(obj, record, [_encoded_image(image, source) for image in record.images]))
        except Skip as skip:
            skips.add(skip)
    return rows, skips


def _open_log(output: Path, settings: dict[str, Any]) -> AppendCache:
    """The progress log of ``output``, which must be of a run with the same settings (or none)."""
    log = AppendCache(output / PROGRESS_LOG, key="file")
    earlier = log.get(_SETTINGS_KEY)
    if earlier is not None and {k: earlier.get(k) for k in settings} != settings:
        log.close()
        raise UserError(
            f"{output} holds shards of another run ({earlier.get('format')}, shard size {earlier.get('shard_size')}, "
            f"inputs {earlier.get('inputs')}): choose another -o or delete it"
        )
    if earlier is None:
        log.add(settings)
    return log


def _write_shard(
    output: Path, fmt: str, index: int, first_record: int, chunk: list[tuple], absolute_allowed: bool
) -> dict[str, Any]:
    """Shard ``index`` of the chunk's records, written atomically; its progress log entry."""
    rows, skips = _shard_rows(chunk, absolute_allowed)
    name = f"shard-{index:05d}.{SHARD_FORMATS[fmt]}"
    path = output / name
    if fmt == "parquet":
        write_file_atomic(path, lambda staging: _write_parquet(rows, staging))
    else:
        write_file_atomic(path, lambda staging: _write_tar(rows, staging, first_record))
    return {
        "file": name,
        "samples": len(rows),
        "bytes": path.stat().st_size,
        "sha256": _sha256(path),
        "first_record": first_record,
        "records": len(chunk),
        "skipped": dict(skips.counts),
        "skipped_examples": skips.examples,
    }


def write_shards(
    inputs: Sequence[str],
    output: str | os.PathLike,
    image_folders: Sequence[str] = (),
    fmt: str = "parquet",
    shard_size: int = 1000,
    progress: bool = True,
) -> ShardResult:
    """Write the shards and ``manifest.json`` into ``output`` (see the module docstring); resumes a stopped run."""
    if fmt not in SHARD_FORMATS:
        raise UserError(f"--format must be one of {', '.join(SHARD_FORMATS)}, not {fmt!r}")
    if shard_size < 1:
        raise UserError(f"--shard-size must be >= 1, got {shard_size}")
    output = Path(output).expanduser()
    output.mkdir(parents=True, exist_ok=True)
    settings = {
        "file": _SETTINGS_KEY,
        "format": fmt,
        "shard_size": shard_size,
        "inputs": [os.path.abspath(p) for p in inputs],
    }
    from tqdm.auto import tqdm

    bar = tqdm(desc=f"shard ({fmt})", unit="record", disable=not progress)
    records = written = 0
    with _open_log(output, settings) as log:
        done = {entry["first_record"]: entry for name, entry in log.entries.items() if name != _SETTINGS_KEY}
        for index, chunk in enumerate(_chunks(inputs, image_folders, shard_size)):
            first, records = records, records + len(chunk)
            bar.update(len(chunk))
            if first in done and (output / done[first]["file"]).is_file():
                continue  # finished by an earlier run
            log.add(_write_shard(output, fmt, index, first, chunk, absolute_allowed=not image_folders))
            written += 1
        shards = [entry for name, entry in log.entries.items() if name != _SETTINGS_KEY]
    bar.close()
    manifest = _manifest(output, settings, records, shards)
    return ShardResult(manifest=manifest, path=output / MANIFEST, written=written)


def _manifest(output: Path, settings: dict[str, Any], records: int, entries: list[dict[str, Any]]) -> dict[str, Any]:
    shards = sorted(entries, key=lambda e: e["first_record"])
    skipped = SkipCounter(log_first=0, keep=5)
    for entry in shards:
        skipped.merge(entry["skipped"], entry["skipped_examples"])
    manifest = {
        "format": settings["format"],
        "shard_size": settings["shard_size"],
        "inputs": settings["inputs"],
        "records": records,
        "samples": sum(e["samples"] for e in shards),
        "skipped": skipped.as_dict(),
        "skipped_examples": skipped.examples,
        "shards": [
            {k: e[k] for k in ("file", "samples", "bytes", "sha256", "first_record", "records")} for e in shards
        ],
    }
    write_json(output / MANIFEST, manifest)
    return manifest
