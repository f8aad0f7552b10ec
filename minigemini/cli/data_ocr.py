"""`mgm data ocr`: append OCR tokens to the questions of a training file."""

from __future__ import annotations

import argparse
from pathlib import Path

from minigemini.data.skips import SkipCounter
from minigemini.datatools.ocr_tokens import augment
from minigemini.ocr import DEFAULT_MIN_SCORE


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "ocr",
        help="append 'Reference OCR token: ...' (rapidocr, offline) to the first question of image records",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("data", help="LLaVA-format .json / .jsonl")
    parser.add_argument("--output", "-o", required=True, help="augmented .json / .jsonl")
    parser.add_argument(
        "--image-folder", nargs="+", help="root(s) of relative image paths (default: the data's folder)"
    )
    parser.add_argument("--cache", help="per-image OCR cache (default: OUTPUT.ocr-cache.jsonl); resumes from it")
    parser.add_argument("--min-score", type=float, default=DEFAULT_MIN_SCORE, help="OCR confidence threshold")
    parser.add_argument("--max-tokens", type=int, help="keep at most this many OCR tokens per record")
    parser.add_argument(
        "--image-prefix", action="append", help="only records with an image under this path (repeatable), e.g. docvqa/"
    )
    parser.add_argument("--source", action="append", help="only records whose 'source' (from mgm data mix) is this")
    parser.add_argument("--retry-errors", action="store_true", help="read again the images that failed before")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    if not Path(args.data).is_file():
        raise FileNotFoundError(f"data file not found: {args.data}")
    report = augment(
        args.data,
        args.output,
        image_folders=args.image_folder,
        cache_path=args.cache,
        min_score=args.min_score,
        max_tokens=args.max_tokens,
        image_prefixes=args.image_prefix,
        sources=args.source,
        retry_errors=args.retry_errors,
        progress=args.progress,
    )
    counts = report["counts"]
    print(
        f"{counts['records']} records: {counts['augmented']} augmented, {counts['unchanged']} unchanged, "
        f"{counts['already_had_tokens']} already had OCR tokens; {counts['images']} images "
        f"({counts['images_cached']} from the cache)"
    )
    problems = SkipCounter.from_report(report["problems"])
    if problems:
        print("problems:\n" + "\n".join(f"  {line}" for line in problems.lines()))
    print(f"wrote {report['output']} (report: {report['output']}.report.json)")
    return 0
