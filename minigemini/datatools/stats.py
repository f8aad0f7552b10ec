"""`mgm data stats FILE...`: what a training file (or a folder of shards: `mgm data shard`) holds, before hours of
training find out.

Counts by source (the ``source`` field that ``mgm data mix`` writes; ``(untagged)`` otherwise) and by modality
(text-only, one image, several images), generation samples (``<GEN>``) and OCR-augmented ones; length percentiles
in tokens of the chosen tokenizer (``--tokenizer``: a tokenizer or model directory) or in whitespace words without
one -- text of every turn, plus ``--image-tokens`` per image (576 for 336-px models, 2880 for HD; chat-template
tokens are not counted); images referenced, missing and (with ``--verify-images``) unreadable; broken JSON lines and
malformed records, each with the first examples.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import numpy as np

from minigemini.data.jsonio import iter_raw
from minigemini.data.records import DataError, resolve_image
from minigemini.data.shards import Broken, is_shard_source, open_shards, read_shard, row_to_record
from minigemini.datatools.mix import image_problem, images_of
from minigemini.datatools.problems import Problems
from minigemini.generation import GEN_TAG
from minigemini.ocr import OCR_PREFIX
from minigemini.templates import IMAGE_PLACEHOLDER

__all__ = ["PERCENTILES", "compute_stats", "describe"]

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


def _shard_rows(source: str, problems: Problems):
    """(where, object, None) for every row of a shard source (images as bytes); unreadable rows are problems."""
    for shard in open_shards(source):
        for row, raw in read_shard(shard):
            if isinstance(raw, Broken):
                problems.add("unreadable_shard", f"{shard.name}#{row}: {raw.detail}")
            else:
                yield f"{shard.name}#{row}", row_to_record(raw, shard), None


def _embedded_problem(image: bytes | None, decode: bool) -> str | None:
    if image is None:
        return "missing_image"
    if decode:
        from minigemini.image_processing import ImageLoadError, load_image

        try:
            load_image(image)
        except (ImageLoadError, OSError):
            return "unreadable_image"
    return None


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot load a tokenizer from {name!r}: {err}") from None


def compute_stats(
    data_files: list[str],
    image_folders: list[str] | None = None,
    tokenizer: Any = None,
    image_tokens: int = 576,
    verify_images: bool = False,
) -> dict[str, Any]:
    """The statistics of ``data_files`` as a dict (what ``--json`` writes)."""
    if not data_files:
        raise ValueError("no data files given")
    problems = Problems()
    by_source: Counter[str] = Counter()
    by_modality: Counter[str] = Counter()
    source_modality: dict[str, Counter[str]] = {}
    texts: list[str] = []
    image_counts: list[int] = []
    gen = ocr = turns = 0
    images_checked: dict[str, str | None] = {}
    referenced = 0
    for path in data_files:
        folders = list(image_folders or []) or [os.path.dirname(os.path.abspath(path))]
        if is_shard_source(path):
            rows = _shard_rows(path, problems)  # read lazily, as training reads them
        elif not os.path.isfile(path):
            raise DataError(f"data file not found: {path}")
        else:
            try:
                rows = list(iter_raw(path))
            except DataError as err:
                problems.add("unreadable_file", f"{path}: {err}")
                continue
        for where, obj, error in rows:
            if error is not None:
                problems.add("bad_json", f"{where}: {error}")
                continue
            record_texts = _texts(obj) if isinstance(obj, dict) else None
            if record_texts is None:
                problems.add("bad_record", f"{where}: needs a 'conversations' list of turns with string values")
                continue
            images = images_of(obj)
            source = str(obj.get("source") or "(untagged)")
            modality = "text" if not images else ("image" if len(images) == 1 else "multi_image")
            by_source[source] += 1
            by_modality[modality] += 1
            source_modality.setdefault(source, Counter())[modality] += 1
            turns += len(record_texts)
            joined = "\n".join(record_texts)
            gen += GEN_TAG in joined
            ocr += OCR_PREFIX.strip() in joined
            texts.append(joined.replace(IMAGE_PLACEHOLDER, ""))  # image tokens are counted per image
            image_counts.append(len(images))
            for number, image in enumerate(images):
                referenced += 1
                if image is None or isinstance(image, bytes):  # inside a shard's row
                    problem = images_checked[f"{where}/{number}"] = _embedded_problem(image, verify_images)
                    if problem:
                        problems.add(problem, f"{where}: image {number}")
                    continue
                image = str(image)
                resolved = resolve_image(image, folders)
                key = resolved or f"?{image}"
                if key not in images_checked:
                    problem = "missing_image" if resolved is None else image_problem(resolved, verify_images)
                    images_checked[key] = problem
                    if problem:
                        problems.add(problem, f"{where}: {image}")
    records = len(texts)
    if tokenizer is not None:
        lengths = []
        for start in range(0, records, 1024):  # batches keep memory flat on million-record files
            batch = tokenizer(texts[start : start + 1024], add_special_tokens=False)["input_ids"]
            lengths.extend(len(ids) for ids in batch)
        unit = "tokens"
    else:
        lengths = [len(t.split()) for t in texts]
        unit = "words"
    totals = np.asarray(lengths, dtype=np.int64) + image_tokens * np.asarray(image_counts, dtype=np.int64)
    length = {"unit": unit, "image_tokens": image_tokens}
    if records:
        length.update({f"p{p}": int(np.percentile(totals, p)) for p in PERCENTILES})
        length.update(mean=round(float(totals.mean()), 1), max=int(totals.max()), min=int(totals.min()))
    return {
        "files": [os.path.abspath(p) for p in data_files],
        "records": records,
        "turns": turns,
        "by_source": dict(by_source.most_common()),
        "by_modality": dict(by_modality.most_common()),
        "by_source_and_modality": {s: dict(c) for s, c in sorted(source_modality.items())},
        "generation_samples": gen,
        "ocr_augmented": ocr,
        "length": length,
        "images": {
            "referenced": referenced,
            "unique": len(images_checked),
            "missing": sum(p == "missing_image" for p in images_checked.values()),
            "unreadable": sum(p == "unreadable_image" for p in images_checked.values()),
            "decoded": verify_images,
        },
        "problems": problems.as_dict(),
    }


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
    problems = Problems()
    for kind, entry in stats["problems"].items():
        problems.merge({kind: entry["count"]}, {kind: entry["examples"]})
    if problems:
        lines.append("problems:\n" + problems.describe())
    return "\n".join(lines)
