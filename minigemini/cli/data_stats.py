"""`mgm data stats`: statistics of a training file."""

from __future__ import annotations

import argparse
import json

from minigemini.data.jsonio import write_json
from minigemini.data.records import DataError
from minigemini.datatools.stats import compute_stats, describe, load_tokenizer


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
    parser.add_argument("--json", help="also write the statistics to this JSON file")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    tokenizer = load_tokenizer(args.tokenizer) if args.tokenizer else None
    stats = compute_stats(
        args.data,
        image_folders=args.image_folder,
        tokenizer=tokenizer,
        image_tokens=args.image_tokens,
        verify_images=args.verify_images,
    )
    print(describe(stats))
    if args.json:
        write_json(args.json, stats)
    if stats["records"] == 0:
        print(json.dumps(stats["problems"], indent=2))
        raise DataError("no usable record")
    return 0
