"""`mgm data stats FILE...`: what a training file (or a folder of shards: `mgm data shard`) holds, before hours of
training find out.

Counts by source (the ``source`` field that ``mgm data mix`` writes; ``(untagged)`` otherwise) and by modality
(text-only, one image, several images), generation samples (``<GEN>``) and OCR-augmented ones; length percentiles
in tokens of the chosen tokenizer (``--tokenizer``: a tokenizer or model directory) or in whitespace words without
one -- text of every turn, plus ``--image-tokens`` per image (576 for 336-px models, 2880 for HD; chat-template
tokens are not counted); images referenced, missing and (with ``--verify-images``) unreadable; records with images
but no ``<image>`` (training puts it before the first question); with ``--max-length``, records longer than that;
broken JSON lines and malformed records, each with the first examples.  ``--write-clean FILE`` writes the records
without any of those problems and names each one left out.  For a folder of shards, also the records ``mgm data
shard`` left out (its ``manifest.json``), and with ``--verify-hashes`` whether each shard still has the SHA-256 the
manifest recorded (a shard edited or truncated since is a ``checksum_mismatch`` problem).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from minigemini.data.jsonio import iter_raw
from minigemini.data.records import DataError, image_path_problem, resolve_image
from minigemini.data.shards import MANIFEST, Broken, is_shard_source, open_shards, read_shard, row_to_record
from minigemini.data.skips import Skip, SkipCounter
from minigemini.datatools.mix import check_image, images_of
from minigemini.generation import GEN_TAG
from minigemini.ocr import OCR_PREFIX
from minigemini.templates import IMAGE_PLACEHOLDER

__all__ = ["PERCENTILES", "compute_stats", "describe", "write_clean"]

PERCENTILES = (50, 90, 95, 99)


def _texts(obj: dict[str, Any]) -> list[str] | None:
    turns = obj.get("conversations")
    if not isinstance(turns, list) or not turns:
        return None
    texts = []
    for turn in turns:
        value = turn.get("value", turn.get("content")) if isinstance(turn, dict) else None
        if not isinstance(value, str):
            return None
        texts.append(value)
    return texts


def _shard_rows(source: str, problems: SkipCounter):
    """(where, object, None) for every row of a shard source (images as bytes); unreadable rows are problems."""
    for shard in open_shards(source):
        for row, raw in read_shard(shard):
            if isinstance(raw, Broken):
                problems.add(Skip("unreadable_shard", f"{shard.name}#{row}", raw.detail))
            else:
                yield f"{shard.name}#{row}", row_to_record(raw, shard), None


def _check_embedded(image: bytes | None, decode: bool, source: str, name: str) -> None:
    """Raises the Skip of an image inside a shard's row that is missing or (``decode``) does not decode."""
    if image is None:
        raise Skip("missing_image", source, name)
    if decode:
        from minigemini.image_processing import ImageLoadError, load_image

        try:
            load_image(image)
        except (ImageLoadError, OSError):
            raise Skip("unreadable_image", source, name) from None


def _shard_manifest(source: str, verify_hashes: bool, problems: SkipCounter) -> SkipCounter | None:
    """The records ``mgm data shard`` left out of a shard folder (its manifest's skips), None without a manifest;
    with ``verify_hashes`` each shard whose SHA-256 differs from the manifest's is a ``checksum_mismatch`` problem."""
    import json

    from minigemini.datatools.shard import _sha256

    path = os.path.join(source, MANIFEST)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        manifest = json.load(f)
    dropped = SkipCounter(log_first=0)
    dropped.merge(manifest.get("skipped", {}), manifest.get("skipped_examples"))
    for entry in manifest["shards"] if verify_hashes else []:
        shard = os.path.join(source, entry["file"])
        if not os.path.isfile(shard):
            problems.add(Skip("checksum_mismatch", entry["file"], "missing"))
        elif _sha256(Path(shard)) != entry["sha256"]:
            problems.add(Skip("checksum_mismatch", entry["file"], f"its SHA-256 is not the one in {MANIFEST}"))
    return dropped


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot load a tokenizer from {name!r}: {err}") from None


class _Tally:
    """What ``compute_stats`` counts, record by record."""

    def __init__(self, verify_images: bool):
        self.verify_images = verify_images
        self.problems = SkipCounter(log_first=0)
        self.by_source: Counter[str] = Counter()
        self.by_modality: Counter[str] = Counter()
        self.source_modality: dict[str, Counter[str]] = {}
        self.texts: list[str] = []
        self.image_counts: list[int] = []
        self.gen = self.ocr = self.turns = self.referenced = 0
        self.images_checked: dict[str, str | None] = {}  # image -> its problem (None: usable)
        self.records: list[tuple[str, Any]] = []  # (where, record) of each record read, as ``texts``
        self.dropped: dict[str, str] = {}  # where -> the first problem of a record a clean file leaves out
        self.untagged = 0  # records with images but no <image>
        self.folder_given = False  # --image-folder given: image paths are relative to it

    def add(self, where: str, obj: Any, folders: list[str]) -> None:
        record_texts = _texts(obj) if isinstance(obj, dict) else None
        if record_texts is None:
            raise Skip("bad_record", where, "needs a 'conversations' list of turns with string values")
        self.records.append((where, obj))
        images = images_of(obj)
        source = str(obj.get("source") or "(untagged)")
        modality = "text" if not images else ("image" if len(images) == 1 else "multi_image")
        self.by_source[source] += 1
        self.by_modality[modality] += 1
        self.source_modality.setdefault(source, Counter())[modality] += 1
        self.turns += len(record_texts)
        joined = "\n".join(record_texts)
        self.gen += GEN_TAG in joined
        self.ocr += OCR_PREFIX.strip() in joined
        self.texts.append(joined.replace(IMAGE_PLACEHOLDER, ""))  # image tokens are counted per image
        self.image_counts.append(len(images))
        placeholders = joined.count(IMAGE_PLACEHOLDER)
        self.untagged += bool(images) and placeholders == 0
        if placeholders and placeholders != len(images):
            self._problem(Skip("image_count_mismatch", where, f"{placeholders} <image> for {len(images)} image(s)"))
        for number, image in enumerate(images):
            self.referenced += 1
            if image is None or isinstance(image, bytes):  # inside a shard's row
                self._check(f"{where}/{number}", _check_embedded, image, self.verify_images, where, f"image {number}")
                continue
            problem = image_path_problem(str(image), absolute_allowed=not self.folder_given)
            if problem:
                self._problem(Skip("bad_image_path", where, problem))
                continue
            resolved = resolve_image(str(image), folders)
            key = resolved or f"?{image}"
            if key not in self.images_checked:
                self._check(key, check_image, resolved or "", self.verify_images, where, str(image))
            elif self.images_checked[key] is not None:  # an image already found bad, in another record
                self.dropped.setdefault(where, self.images_checked[key])

    def _check(self, key: str, check, *args) -> None:
        try:
            check(*args)
            self.images_checked[key] = None
        except Skip as skip:
            self.images_checked[key] = skip.reason
            self._problem(skip)

    def _problem(self, skip: Skip) -> None:
        self.problems.add(skip)
        self.dropped.setdefault(skip.source, skip.reason)

    def lengths(self, tokenizer: Any, image_tokens: int, max_length: int | None = None) -> dict[str, Any]:
        """Length percentiles in tokens (or words without a tokenizer), ``image_tokens`` per image; records longer
        than ``max_length`` are problems."""
        if tokenizer is not None:
            lengths = []
            for start in range(0, len(self.texts), 1024):  # batches keep memory flat on million-record files
                batch = tokenizer(self.texts[start : start + 1024], add_special_tokens=False)["input_ids"]
                lengths.extend(len(ids) for ids in batch)
            unit = "tokens"
        else:
            lengths = [len(t.split()) for t in self.texts]
            unit = "words"
        totals = np.asarray(lengths, dtype=np.int64) + image_tokens * np.asarray(self.image_counts, dtype=np.int64)
        length = {"unit": unit, "image_tokens": image_tokens}
        if max_length is not None:
            length["max_length"] = max_length
            for (where, _), total in zip(self.records, totals.tolist()):
                if total > max_length:
                    self._problem(Skip("over_max_length", where, f"{total} {unit} > {max_length}"))
        if self.texts:
            length.update({f"p{p}": int(np.percentile(totals, p)) for p in PERCENTILES})
            length.update(mean=round(float(totals.mean()), 1), max=int(totals.max()), min=int(totals.min()))
        return length


def _rows(path: str, problems: SkipCounter):
    """(where, object, JSON error) of each record of a file or shard source (shards are read lazily, as training
    reads them); an unreadable file is a problem, not an error."""
    if is_shard_source(path):
        return _shard_rows(path, problems)
    if not os.path.isfile(path):
        raise DataError(f"data file not found: {path}")
    try:
        return list(iter_raw(path))
    except DataError as err:
        problems.add(Skip("unreadable_file", path, str(err)))
        return []


def compute_stats(
    data_files: list[str],
    image_folders: list[str] | None = None,
    tokenizer: Any = None,
    image_tokens: int = 576,
    verify_images: bool = False,
    max_length: int | None = None,
    verify_hashes: bool = False,
    tally: _Tally | None = None,
) -> dict[str, Any]:
    """The statistics of ``data_files`` as a dict (what ``--json`` writes); ``tally``: an empty ``_Tally`` that
    keeps the records read (``write_clean``)."""
    if not data_files:
        raise ValueError("no data files given")
    tally = tally or _Tally(verify_images)
    tally.folder_given = bool(image_folders)
    sharded = SkipCounter(log_first=0)  # left out when the shards were written
    for path in data_files:
        manifest = _shard_manifest(path, verify_hashes, tally.problems) if is_shard_source(path) else None
        if manifest is not None:
            sharded.merge(manifest.counts, manifest.examples)
        folders = list(image_folders or []) or [os.path.dirname(os.path.abspath(path))]
        for where, obj, error in _rows(path, tally.problems):
            try:
                if error is not None:
                    raise Skip("bad_json", where, error)
                tally.add(where, obj, folders)
            except Skip as skip:
                tally._problem(skip)
    length = tally.lengths(tokenizer, image_tokens, max_length)
    checked = tally.images_checked.values()
    return {
        "files": [os.path.abspath(p) for p in data_files],
        "records": len(tally.texts),
        "turns": tally.turns,
        "by_source": dict(tally.by_source.most_common()),
        "by_modality": dict(tally.by_modality.most_common()),
        "by_source_and_modality": {s: dict(c) for s, c in sorted(tally.source_modality.items())},
        "generation_samples": tally.gen,
        "ocr_augmented": tally.ocr,
        "length": length,
        "images": {
            "referenced": tally.referenced,
            "unique": len(tally.images_checked),
            "missing": sum(p == "missing_image" for p in checked),
            "unreadable": sum(p == "unreadable_image" for p in checked),
            "decoded": verify_images,
        },
        "images_without_placeholder": tally.untagged,
        "problems": tally.problems.report(),
        "problem_records": dict(sorted(tally.dropped.items())),
        "dropped_when_sharded": sharded.report(),
    }


def write_clean(
    data_files: list[str], out: str, image_folders: list[str] | None = None, **options: Any
) -> tuple[dict[str, Any], int]:
    """``compute_stats`` of JSON data files, and the records with no problem written to ``out`` (JSON Lines for
    ``.jsonl``, else a JSON array); returns (the statistics, records written).  The records left out are the
    statistics' ``problem_records`` (sample -> its first problem)."""
    from minigemini.data.jsonio import write_records

    if any(is_shard_source(path) for path in data_files):
        raise ValueError("--write-clean rewrites JSON / JSONL files; shards are written by `mgm data shard`")
    tally = _Tally(options.get("verify_images", False))
    stats = compute_stats(data_files, image_folders, tally=tally, **options)
    kept = [obj for where, obj in tally.records if where not in tally.dropped]
    write_records(out, kept)
    return stats, len(kept)


def describe(stats: dict[str, Any]) -> str:
    lines = [f"{stats['records']} records, {stats['turns']} turns"]
    lines.append("by source:")
    for source, count in stats["by_source"].items():
        split = ", ".join(f"{m} {n}" for m, n in sorted(stats["by_source_and_modality"][source].items()))
        lines.append(f"  {source:<28}{count:>9}  ({split})")
    lines.append("by modality: " + ", ".join(f"{m} {n}" for m, n in stats["by_modality"].items()))
    lines.append(f"generation samples (<GEN>): {stats['generation_samples']}; OCR-augmented: {stats['ocr_augmented']}")
    length = stats["length"]
    if "p50" in length:
        pcts = "  ".join(f"p{p} {length[f'p{p}']}" for p in PERCENTILES)
        lines.append(
            f"length in {length['unit']} (+{length['image_tokens']} per image): {pcts}  "
            f"mean {length['mean']}  max {length['max']}"
        )
    images = stats["images"]
    lines.append(
        f"images: {images['referenced']} referenced, {images['unique']} unique, {images['missing']} missing"
        + (f", {images['unreadable']} unreadable" if images["decoded"] else " (not decoded; --verify-images)")
    )
    if stats.get("images_without_placeholder"):
        lines.append(
            f"{stats['images_without_placeholder']} record(s) with images but no <image> in the text (training puts "
            "it before the first question)"
        )
    sharded = SkipCounter.from_report(stats.get("dropped_when_sharded", {}))
    if sharded:
        lines.append(
            f"left out when sharded ({MANIFEST}): {sum(sharded.counts.values())}\n"
            + "\n".join(f"  {line}" for line in sharded.lines())
        )
    problems = SkipCounter.from_report(stats["problems"])
    if problems:
        lines.append("problems:\n" + "\n".join(f"  {line}" for line in problems.lines()))
    return "\n".join(lines)
