"""`mgm data mix RECIPE.yaml`: assemble one training file from local copies of the sources a recipe names.

A recipe (see ``recipes/data/``)::

    name: mgm-stage2
    root: data                    # base of every relative path below (--root overrides; $VARS and ~ expand)
    image_folder: .               # output image paths are written relative to this (train with --image-folder)
    seed: 0                       # sampling seed (each source draws from its own stream: adding one changes no other)
    dedup: image_text             # image_text | id | none
    output: mgm_stage2.json       # default output (--output overrides); .json array or .jsonl
    sources:
      - name: llava_instruct
        files: llava/llava_v1_5_mix665k.json         # one path or a list; globs allowed
        image_root: .                                  # where this source's image paths resolve (default: root)
        count: 643000                                  # records to sample (default / "all": every usable record)
        exclude_image_prefixes: [textvqa/]             # drop records with an image under these paths (TextCaps)
        path_fixes: [{from: "ocr_vqa/images/", to: "ocr_vqa/"}]   # prefix rewrites of image paths, first match
        modality: image                                # keep only image (or text) records; default any

Per source, in recipe order: read (bad JSON lines and malformed records are counted, never fatal), rewrite image
paths, filter, validate (records.py's rules; images must exist, ``--verify-images`` also decodes them), drop
duplicates (of this source or of earlier sources' picks), then draw ``count`` records with a seeded sample. Records
keep their fields and gain ``source`` (the source name) and an ``id`` when they had none. A missing source is
reported and skipped (``--strict`` makes it an error), so the paper's recipes run on whatever part of the data exists.

The output and a report (``OUTPUT.report.json``: per source found/missing, counts by reason with the first
examples) are written atomically.
"""

from __future__ import annotations

import copy
import dataclasses
import glob
import os
import random
import re
from pathlib import Path
from typing import Any

from minigemini.data.jsonio import iter_raw
from minigemini.data.records import DataError, check_record
from minigemini.data.skips import Skip, SkipCounter
from minigemini.templates import IMAGE_PLACEHOLDER

__all__ = ["MixResult", "Recipe", "Source", "check_image", "load_recipe", "mix"]

DEDUP_MODES = ("image_text", "id", "none")
MODALITIES = ("image", "text")
_SOURCE_KEYS = {"name", "files", "image_root", "count", "exclude_image_prefixes", "path_fixes", "modality"}
_RECIPE_KEYS = {"name", "root", "image_folder", "seed", "dedup", "output", "sources", "description"}


@dataclasses.dataclass
class Source:
    name: str
    files: list[str]
    image_root: str | None = None
    count: int | None = None  # None: every usable record
    exclude_image_prefixes: list[str] = dataclasses.field(default_factory=list)
    path_fixes: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    modality: str | None = None


@dataclasses.dataclass
class Recipe:
    name: str
    sources: list[Source]
    root: str = "."
    image_folder: str | None = None  # default: root
    seed: int = 0
    dedup: str = "image_text"
    output: str | None = None


def expand_path(path: str) -> str:
    return os.path.expanduser(os.path.expandvars(str(path)))


def _source_from(raw: Any, index: int) -> Source:
    where = f"sources[{index}]"
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must be a mapping")  # noqa: TRY004 (a user error: one line, exit 2)
    unknown = set(raw) - _SOURCE_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)} (known: {sorted(_SOURCE_KEYS)})")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where} needs a 'name'")
    files = raw.get("files")
    files = [files] if isinstance(files, str) else files
    if not files or not all(isinstance(f, str) for f in files):
        raise ValueError(f"source {name!r} needs 'files' (a path or a list of paths)")
    count = raw.get("count")
    if count == "all":
        count = None
    if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 0):
        raise ValueError(f"source {name!r}: 'count' must be a non-negative integer or 'all', got {count!r}")
    fixes = []
    for fix in raw.get("path_fixes") or []:
        if not isinstance(fix, dict) or set(fix) != {"from", "to"}:
            raise ValueError(f"source {name!r}: each path fix is {{from: PREFIX, to: PREFIX}}, got {fix!r}")
        fixes.append((str(fix["from"]), str(fix["to"])))
    modality = raw.get("modality")
    if modality not in (None, *MODALITIES):
        raise ValueError(f"source {name!r}: 'modality' must be one of {MODALITIES}, got {modality!r}")
    excludes = raw.get("exclude_image_prefixes") or []
    if isinstance(excludes, str):
        excludes = [excludes]
    return Source(
        name=name,
        files=list(files),
        image_root=raw.get("image_root"),
        count=count,
        exclude_image_prefixes=[str(e) for e in excludes],
        path_fixes=fixes,
        modality=modality,
    )


def load_recipe(path: str | os.PathLike) -> Recipe:
    """Parse and check a mixture recipe; unknown keys, bad counts and duplicate source names are errors."""
    import yaml

    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"recipe not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ValueError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a recipe is a mapping with 'sources'")  # noqa: TRY004
    unknown = set(raw) - _RECIPE_KEYS
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)} (known: {sorted(_RECIPE_KEYS)})")
    sources = [_source_from(s, i) for i, s in enumerate(raw.get("sources") or [])]
    if not sources:
        raise ValueError(f"{path}: no sources")
    names = [s.name for s in sources]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{path}: source names must be unique, repeated: {duplicates}")
    dedup = raw.get("dedup", "image_text")
    if dedup not in DEDUP_MODES:
        raise ValueError(f"{path}: 'dedup' must be one of {DEDUP_MODES}, got {dedup!r}")
    return Recipe(
        name=str(raw.get("name") or path.stem),
        sources=sources,
        root=str(raw.get("root", ".")),
        image_folder=raw.get("image_folder"),
        seed=int(raw.get("seed", 0)),
        dedup=dedup,
        output=raw.get("output"),
    )


def check_image(path: str, decode: bool, source: str = "", name: str = "") -> None:
    """Raises a ``missing_image`` or ``unreadable_image`` Skip (``--verify-images``: after a full decode) unless
    ``path`` is a usable image; ``name`` is how the record names it (default: ``path``)."""
    if not os.path.isfile(path):
        raise Skip("missing_image", source, name or path)
    if decode:
        from PIL import Image

        try:
            with Image.open(path) as image:
                image.load()  # a full decode: truncated files fail here, not in the middle of training
        except Exception:  # noqa: BLE001 (PIL raises many types for broken files)
            raise Skip("unreadable_image", source, name or path) from None


def images_of(obj: dict[str, Any]) -> list[str]:
    images = obj.get("image", obj.get("images"))
    if isinstance(images, str):
        return [images]
    return list(images) if isinstance(images, list) else []


def _fix_path(path: str, fixes: list[tuple[str, str]]) -> str:
    for old, new in fixes:
        if path.startswith(old):
            return new + path[len(old) :]
    return path


def _first_user_text(obj: dict[str, Any]) -> str:
    for turn in obj.get("conversations") or []:
        if isinstance(turn, dict) and turn.get("from", turn.get("role")) in ("human", "user"):
            text = str(turn.get("value", turn.get("content", "")))
            return re.sub(r"\s+", " ", text.replace(IMAGE_PLACEHOLDER, "")).strip()
    return ""


@dataclasses.dataclass
class MixResult:
    records: list[dict[str, Any]]
    report: dict[str, Any]


def _expand_files(patterns: list[str], root: str) -> tuple[list[str], list[str]]:
    found, missing = [], []
    for pattern in patterns:
        full = os.path.join(root, expand_path(pattern))
        matches = sorted(glob.glob(full)) if glob.has_magic(full) else ([full] if os.path.isfile(full) else [])
        if matches:
            found.extend(matches)
        else:
            missing.append(full)
    return found, missing


def mix(
    recipe: Recipe,
    root: str | None = None,
    verify_images: bool = False,
    scale: float = 1.0,
    strict: bool = False,
) -> MixResult:
    """Build the mixture in memory; returns the records and the report (nothing is written here)."""
    root = expand_path(root if root is not None else recipe.root)
    out_folder = os.path.abspath(os.path.join(root, expand_path(recipe.image_folder or ".")))
    seen: set[Any] = set()
    records: list[dict[str, Any]] = []
    sources_report: dict[str, Any] = {}
    for spec in recipe.sources:
        report = _mix_source(spec, recipe, root, out_folder, verify_images, scale, seen, records)
        sources_report[spec.name] = report
        if strict and report["status"] != "found":
            raise DataError(f"source {spec.name!r} is {report['status']}: {report.get('missing_files')}")
    if not records:
        raise DataError(
            f"recipe {recipe.name!r} produced no records under root {root!r}; "
            + "; ".join(f"{n}: {r['status']}" for n, r in sources_report.items())
        )
    report = {
        "recipe": recipe.name,
        "root": os.path.abspath(root),
        "image_folder": out_folder,
        "seed": recipe.seed,
        "dedup": recipe.dedup,
        "scale": scale,
        "total": len(records),
        "found": [n for n, r in sources_report.items() if r["status"] == "found"],
        "missing": [n for n, r in sources_report.items() if r["status"] != "found"],
        "sources": sources_report,
    }
    return MixResult(records=records, report=report)


def _mix_source(spec, recipe, root, out_folder, verify_images, scale, seen, records) -> dict[str, Any]:
    files, missing_files = _expand_files(spec.files, root)
    image_root = os.path.join(root, expand_path(spec.image_root)) if spec.image_root is not None else root
    requested = None if spec.count is None else round(spec.count * scale)
    report: dict[str, Any] = {"files": files, "image_root": os.path.abspath(image_root), "requested": requested}
    if missing_files:
        report["missing_files"] = missing_files
    if not files:
        report.update(status="missing", read=0, usable=0, sampled=0, dropped={})
        return report
    if not os.path.isdir(image_root):
        report["warning"] = f"image root {image_root} does not exist: records with images will be dropped"
    dropped = SkipCounter(log_first=0)
    candidates: list[tuple[Any, dict[str, Any]]] = []
    keys_here: set[Any] = set()
    read = 0
    unreadable_files = []
    for path in files:
        try:
            for where, obj, error in iter_raw(path):
                read += 1
                try:
                    if error is not None:
                        raise Skip("bad_json", where, error)
                    item = _prepare(obj, where, spec, image_root, out_folder, verify_images)
                    key = _dedup_key(item, recipe.dedup)
                    if key is not None and (key in seen or key in keys_here):
                        raise Skip(
                            "duplicate", where, "same id" if recipe.dedup == "id" else "same images and question"
                        )
                except Skip as skip:
                    dropped.add(skip)
                    continue
                if key is not None:
                    keys_here.add(key)
                candidates.append((key, item))
        except (DataError, UnicodeDecodeError, OSError) as err:  # one broken file never stops the mix
            unreadable_files.append(f"{path}: {err}")
            dropped.add(Skip("unreadable_file", path, str(err)))

    take = len(candidates) if requested is None else min(requested, len(candidates))
    rng = random.Random(f"{recipe.seed}:{spec.name}")  # str seeds are stable across processes
    picked = sorted(rng.sample(range(len(candidates)), take))
    for number, index in enumerate(picked):
        key, item = candidates[index]
        if key is not None:
            seen.add(key)
        item.setdefault("id", f"{spec.name}-{number}")
        records.append(item)
    status = "found" if not unreadable_files or candidates else "unreadable"
    report.update(status=status, read=read, usable=len(candidates), sampled=take, dropped=dropped.report())
    if requested is not None and take < requested:
        report["short_by"] = requested - take
    return report


def _prepare(obj, where, spec, image_root, out_folder, verify_images) -> dict[str, Any]:
    """A copy of ``obj`` with fixed, output-relative image paths; raises the Skip that drops it."""
    if not isinstance(obj, dict):
        raise Skip("bad_record", where, f"expected an object, got {type(obj).__name__}")
    item = copy.deepcopy(obj)
    images = [_fix_path(str(p), spec.path_fixes) for p in images_of(item)]
    if images and any(p.startswith(tuple(spec.exclude_image_prefixes)) for p in images if spec.exclude_image_prefixes):
        raise Skip("excluded", where, images[0])
    if spec.modality is not None and ("image" if images else "text") != spec.modality:
        raise Skip("wrong_modality", where, f"a {'text' if not images else 'image'} record in a {spec.modality} source")
    if images:
        item.pop("images", None)
        item["image"] = images[0] if len(images) == 1 and not isinstance(obj.get("image"), list) else images
    record = check_record(item, where, [image_root])  # records.py's rules: the mix trains as it validates
    if verify_images:
        for path in record.images:
            check_image(path, True, where)
    if images:
        out = [_output_path(p, out_folder) for p in record.images]
        item["image"] = out[0] if isinstance(item["image"], str) else out
    item["source"] = spec.name
    return item


def _output_path(path: str, out_folder: str) -> str:
    absolute = os.path.abspath(path)
    relative = os.path.relpath(absolute, out_folder)
    return absolute if relative.startswith(os.pardir) else relative


def _dedup_key(item: dict[str, Any], mode: str) -> Any:
    if mode == "none":
        return None
    if mode == "id":
        return None if item.get("id") is None else ("id", str(item["id"]))
    images = item.get("image")
    images = (images,) if isinstance(images, str) else tuple(images or ())
    return ("image_text", images, _first_user_text(item))


def describe(report: dict[str, Any]) -> str:
    """The printed summary: one line per source, then the drop reasons with a first example."""
    lines = [f"recipe {report['recipe']}: {report['total']} records from root {report['root']}"]
    width = max(len(n) for n in report["sources"]) + 2
    for name, source in report["sources"].items():
        requested = "all" if source["requested"] is None else source["requested"]
        dropped = sum(d["count"] for d in source["dropped"].values())
        line = (
            f"  {name:<{width}}{source['status']:<11}read {source['read']:>8}  usable {source['usable']:>8}  "
            f"dropped {dropped:>7}  sampled {source['sampled']:>8} / {requested}"
        )
        if source.get("short_by"):
            line += f"  (short by {source['short_by']})"
        lines.append(line)
        if source.get("missing_files"):
            lines.append(f"      missing: {', '.join(source.get('missing_files', []))}")
        if source.get("warning"):
            lines.append(f"      warning: {source['warning']}")
        for reason, entry in sorted(source["dropped"].items()):
            example = f" (e.g. {entry['examples'][0]})" if entry["examples"] else ""
            lines.append(f"      {reason}: {entry['count']}{example}")
    if report["missing"]:
        lines.append(f"missing sources: {', '.join(report['missing'])}")
    return "\n".join(lines)
