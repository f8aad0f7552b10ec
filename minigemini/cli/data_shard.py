"""`mgm data shard`: LLaVA JSON/JSONL + images -> Parquet or WebDataset shards with the images inside, and a manifest.

Records whose image is missing or does not decode are left out, counted and named (in the manifest); a stopped run
resumes at its first unfinished shard when run again.  Train on the folder: `mgm train --data OUT ...`.
"""

from __future__ import annotations

import argparse

from minigemini.datatools.shard import SHARD_FORMATS, write_shards


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "shard",
        help="write Parquet or WebDataset shards (images inside) for streamed training",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("data", nargs="+", help="LLaVA-format .json / .jsonl file(s)")
    parser.add_argument("--image-folder", nargs="+", default=[], help="root(s) of relative image paths")
    parser.add_argument("-o", "--output", required=True, help="folder for the shards and manifest.json")
    parser.add_argument("--format", choices=sorted(SHARD_FORMATS), default="parquet")
    parser.add_argument("--shard-size", type=int, default=1000, help="input records per shard (default 1000)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    result = write_shards(
        args.data,
        args.output,
        image_folders=args.image_folder,
        fmt=args.format,
        shard_size=args.shard_size,
        progress=args.progress,
    )
    manifest = result.manifest
    skipped = ", ".join(f"{reason} {count}" for reason, count in manifest["skipped"].items()) or "none"
    print(
        f"{manifest['samples']} samples of {manifest['records']} records in {len(manifest['shards'])} "
        f"{manifest['format']} shard(s) ({result.written} written now); skipped: {skipped}"
    )
    for reason, examples in manifest["skipped_examples"].items():
        print(f"  {reason}: " + "; ".join(examples[:3]))
    print(f"manifest: {result.path}")
    return 0
