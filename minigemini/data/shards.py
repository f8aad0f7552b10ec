"""Training data as shards: Parquet or Arrow files (Hugging Face ``datasets``) and WebDataset tars, read lazily.

A *shard source* is a folder (its ``manifest.json`` from ``mgm data shard``, else every ``*.parquet``, ``*.arrow`` or
``*.tar`` in it), one shard file, a glob, or ``hf:NAME[:SPLIT]`` (``datasets.load_dataset``; its Arrow cache files are
the shards).  Rows hold the LLaVA fields (``id``, ``conversations`` as a list of turns or a JSON string, optional
``system``) and the images' encoded bytes: a ``datasets`` ``Image`` (``{"bytes", "path"}``), bytes, or a list of
those in ``image``/``images``; a WebDataset sample is one ``json`` member (the record) plus its images (``jpg``,
``png``, ... or ``0.png``, ``1.jpg`` for several, in that order).

Reading is the libraries' own: ``pyarrow.parquet`` row groups (what ``datasets`` streams Parquet with), the memory-mapped
Arrow tables of ``datasets``, and ``webdataset``'s tar iterator.  Counting is cheap (Parquet and Arrow metadata; a
tar's count comes from the manifest, else one pass over it).  A manifest that disagrees with the files (a shard
missing, another size or count) is one clear error before training; a shard that breaks while it is read yields
``Broken`` for each of its rows from there on, which the stream counts as ``unreadable_shard`` skips.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

from minigemini.data.records import DataError
from minigemini.data.skips import Skip, SkipCounter

__all__ = [
    "FORMATS",
    "MANIFEST",
    "Broken",
    "Shard",
    "is_shard_source",
    "open_shards",
    "read_shard",
    "row_to_record",
]

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMATS = {".parquet": "parquet", ".arrow": "arrow", ".tar": "webdataset"}
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")
_HF_PREFIX = "hf:"


@dataclasses.dataclass(frozen=True)
class Shard:
    path: str
    format: str  # parquet, arrow, webdataset
    rows: int

    @property
    def name(self) -> str:
        """``folder/file``: names samples (``name#row``) uniquely across sources whose shard files share names."""
        return os.path.join(os.path.basename(os.path.dirname(self.path)), os.path.basename(self.path))


@dataclasses.dataclass(frozen=True)
class Broken:
    """Stands for a row that could not be read: its shard ended early, vanished or is corrupt from here on."""

    detail: str


def is_shard_source(source: str) -> bool:
    """True for a folder, a shard file (or a glob of them) or ``hf:NAME``; False for LLaVA ``.json``/``.jsonl``."""
    source = os.fspath(source)
    return source.startswith(_HF_PREFIX) or os.path.isdir(source) or os.path.splitext(source)[1].lower() in FORMATS


def _format_of(path: str) -> str:
    return FORMATS[os.path.splitext(path)[1].lower()]


def _table_shape(path: str, fmt: str) -> tuple[int, list[str]]:
    """(rows, column names) of a Parquet or Arrow shard, from its metadata (one opening)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if fmt == "parquet":
            file = pq.ParquetFile(path)
            return file.metadata.num_rows, file.schema_arrow.names
        table = _arrow_table(path)
        return table.num_rows, table.column_names
    except (OSError, pa.ArrowException) as err:
        raise DataError(f"{path} is not a readable {fmt} shard: {err}") from None


def _open_shard(path: str, fmt: str, skips: SkipCounter) -> Shard:
    """The shard at ``path`` with its row count.  A Parquet/Arrow shard without a conversation column is the wrong
    data, not a bad row: an error."""
    if fmt == "webdataset":
        return Shard(path, fmt, _count_tar(path, skips))
    rows, names = _table_shape(path, fmt)
    if "conversations" not in names and "messages" not in names:
        raise DataError(f"{path} has no 'conversations' column (columns: {', '.join(names)})")
    return Shard(path, fmt, rows)


def _count_tar(path: str, skips: SkipCounter) -> int:
    """A tar without a manifest: its samples counted in one pass; a broken one counts what can be read and says so."""
    rows = 0
    try:
        for _ in _tar_samples(path):
            rows += 1
    except Exception as err:  # noqa: BLE001 (tarfile, OSError, ...: any of them means the rest is unreadable)
        name = Shard(path, "webdataset", rows).name
        skips.add(Skip("unreadable_shard", f"{name}#{rows}", f"unreadable after {rows} samples: {err}"))
    return rows


def _from_manifest(folder: str) -> list[Shard]:
    path = os.path.join(folder, MANIFEST)
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
        entries = [(str(entry["file"]), int(entry["samples"]), entry.get("bytes")) for entry in manifest["shards"]]
        fmt = manifest["format"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise DataError(f"{path} is not a readable shard manifest ({type(err).__name__}: {err})") from None
    shards = []
    for name, samples, size in entries:
        file = os.path.join(folder, name)
        if not os.path.isfile(file):
            raise DataError(f"{path} lists {name}, which is not in {folder}")
        if size is not None and os.path.getsize(file) != size:
            raise DataError(f"{path} says {name} has {size} bytes; the file has {os.path.getsize(file)}")
        if fmt == "webdataset":  # counting a tar is a pass over it: the manifest's count and size stand
            shards.append(Shard(file, fmt, samples))
            continue
        shard = _open_shard(file, fmt, SkipCounter())
        if shard.rows != samples:
            raise DataError(f"{path} says {name} has {samples} samples; the file has {shard.rows}")
        shards.append(shard)
    return shards


def _hub_shards(spec: str) -> list[Shard]:
    import datasets

    name, _, split = spec[len(_HF_PREFIX) :].partition(":")
    try:
        dataset = datasets.load_dataset(name, split=split or "train")
    except Exception as err:  # noqa: BLE001 (the hub, the network and the builders raise many kinds)
        raise DataError(f"cannot load the dataset {name!r} (split {split or 'train'}): {err}") from None
    return [_open_shard(f["filename"], "arrow", SkipCounter()) for f in dataset.cache_files]


def open_shards(sources: str | Sequence[str], skips: SkipCounter | None = None) -> list[Shard]:
    """The shards of ``sources`` in a stable order, each with its row count (see the module docstring)."""
    sources = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    skips = skips if skips is not None else SkipCounter()
    shards: list[Shard] = []
    for source in map(os.fspath, sources):
        if source.startswith(_HF_PREFIX):
            found = _hub_shards(source)
        elif os.path.isfile(os.path.join(source, MANIFEST)):
            found = _from_manifest(source)
        else:
            if os.path.isdir(source):
                paths = sorted(
                    p for p in glob.glob(os.path.join(source, "*")) if os.path.splitext(p)[1].lower() in FORMATS
                )
            elif glob.has_magic(source):
                paths = sorted(p for p in glob.glob(source) if os.path.splitext(p)[1].lower() in FORMATS)
            else:
                paths = [source] if os.path.isfile(source) else []
            if not paths:
                raise DataError(f"no shards (*.parquet, *.arrow, *.tar) at {source}")
            found = [_open_shard(p, _format_of(p), skips) for p in paths]
        shards.extend(found)
    if not any(shard.rows for shard in shards):
        raise DataError(f"no samples in the shards of {', '.join(sources)}")
    return shards


# ---------------------------------------------------------------------------------------------- reading rows


def _arrow_table(path: str):
    from datasets.table import MemoryMappedTable

    return MemoryMappedTable.from_file(path).table


def _tar_samples(path: str) -> Iterator[dict[str, Any]]:
    import webdataset

    # one shard, read whole by whichever worker the plan gave it: webdataset's own node and worker splitting is off
    pipeline = webdataset.WebDataset(
        path, shardshuffle=False, empty_check=False, nodesplitter=None, workersplitter=None
    )
    return iter(pipeline)


def _table_rows(shard: Shard, start: int) -> Iterator[dict[str, Any]]:
    if shard.format == "parquet":
        import pyarrow.parquet as pq

        file = pq.ParquetFile(shard.path)
        first, skip = 0, start
        while first < file.num_row_groups and skip >= file.metadata.row_group(first).num_rows:
            skip -= file.metadata.row_group(first).num_rows
            first += 1
        # one thread: DataLoader workers are the parallelism (pyarrow's pool in each of them would oversubscribe)
        batches = file.iter_batches(batch_size=64, row_groups=range(first, file.num_row_groups), use_threads=False)
    else:
        batches, skip = _arrow_table(shard.path).slice(start).to_batches(max_chunksize=64), 0
    for batch in batches:
        rows = batch.to_pylist()
        yield from rows[skip:]
        skip = max(0, skip - len(rows))


def read_shard(shard: Shard, start: int = 0) -> Iterator[tuple[int, dict[str, Any] | Broken]]:
    """(row number, raw row) from ``start`` to the shard's count; ``Broken`` rows from where reading failed."""
    row = 0
    try:
        if shard.format == "webdataset":
            for sample in _tar_samples(shard.path):
                if row >= shard.rows:
                    break
                if row >= start:
                    yield row, sample
                row += 1
        else:
            row = start
            for raw in _table_rows(shard, start):
                if row >= shard.rows:
                    break
                yield row, raw
                row += 1
        detail = f"{shard.name} ended after {row} of {shard.rows} samples"
    except Exception as err:  # noqa: BLE001 (a truncated tar, a vanished file, a corrupt page: the rest is lost)
        detail = f"{shard.name} unreadable from sample {row}: {type(err).__name__}: {err}"
    for lost in range(max(row, start), shard.rows):
        yield lost, Broken(detail)


def _image_bytes(value: Any) -> bytes | None:
    if isinstance(value, dict):  # datasets' Image feature
        value = value.get("bytes")
    if isinstance(value, (bytes, bytearray, memoryview)) and len(value):
        return bytes(value)
    return None


def row_to_record(raw: dict[str, Any], shard: Shard) -> dict[str, Any]:
    """A shard's row (or WebDataset sample) as a LLaVA-format object whose ``image`` holds encoded bytes."""
    if shard.format == "webdataset":
        try:
            obj = json.loads(raw.get("json") or b"null")
        except ValueError:
            obj = None
        if not isinstance(obj, dict):
            return {}  # not a record: counted as bad_record
        members = [k for k in raw if k.rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS]
        members.sort(key=lambda k: (int(k.split(".")[0]) if k.split(".")[0].isdigit() else -1, k))
        obj = dict(obj)
        obj.pop("images", None)
        obj["image"] = [_image_bytes(raw[k]) for k in members]
        return obj
    obj = {k: v for k, v in raw.items() if k not in ("image", "images", "messages")}
    turns = raw.get("conversations", raw.get("messages"))
    if isinstance(turns, str):
        try:
            turns = json.loads(turns)
        except ValueError:
            turns = None
    if turns is not None:
        obj["conversations"] = turns
    images = raw.get("images", raw.get("image"))
    if images is None:
        images = []
    elif not isinstance(images, list):
        images = [images]
    obj["image"] = [_image_bytes(i) for i in images]
    return obj
