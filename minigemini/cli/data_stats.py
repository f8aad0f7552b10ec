"""`mgm data stats`: statistics of a training file."""

from __future__ import annotations

import argparse
import json

from minigemini.data.jsonio import write_json
from minigemini.data.records import DataError
from minigemini.datatools.stats import compute_stats, describe, load_tokenizer, write_clean


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "stats",
        help="counts by source and modality, length percentiles, missing or unreadable images",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("data", nargs="+", help="LLaVA-format .json / .jsonl file(s), or shards (mgm data shard)")
    parser.add_argument(
        "--image-folder", nargs="+", help="root(s) of relative image paths (default: the data's folder)"
    )
    parser.add_argument("--tokenizer", help="tokenizer or model directory (default: count whitespace words)")
    parser.add_argument("--image-tokens", type=int, default=576, help="tokens per image added to each length")
    parser.add_argument("--verify-images", action="store_true", help="decode every image (slow)")
    parser.add_argument(
        "--verify-hashes",
        action="store_true",
        help="shards: check each shard's SHA-256 against the manifest.json that `mgm data shard` wrote",
    )
    parser.add_argument(
        "--max-length", type=int, help="report records longer than this (tokens with --tokenizer, else words)"
    )
    parser.add_argument(
        "--write-clean",
        metavar="FILE",
        help="write the records with no problem to FILE (.jsonl: JSON Lines, else a JSON array) and name those left out",
    )
    parser.add_argument("--json", help="also write the statistics to this JSON file")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    tokenizer = load_tokenizer(args.tokenizer) if args.tokenizer else None
    options = {
        "tokenizer": tokenizer,
        "image_tokens": args.image_tokens,
        "verify_images": args.verify_images,
        "max_length": args.max_length,
        "verify_hashes": args.verify_hashes,
    }
    if args.write_clean:
        stats, kept = write_clean(args.data, args.write_clean, args.image_folder, **options)
    else:
        stats = compute_stats(args.data, image_folders=args.image_folder, **options)
    print(describe(stats))
    if args.write_clean:
        dropped = stats["problem_records"]
        print(f"wrote {kept} record(s) to {args.write_clean}; left out {len(dropped)}" + (":" if dropped else ""))
        for where, reason in dropped.items():
            print(f"  {where} ({reason})")
    if args.json:
        write_json(args.json, stats)
    if stats["records"] == 0:
        print(json.dumps(stats["problems"], indent=2))
        raise DataError("no usable record")
    return 0
