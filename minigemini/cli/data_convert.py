"""`mgm data convert`: a CSV or JSON Lines table of image, question, answer -> a LLaVA-format training file."""

from __future__ import annotations

import argparse

from minigemini.datatools.convert import convert_table


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "convert",
        help="a CSV / JSONL of image, question, answer -> a LLaVA-format training file",
        description=__doc__,
    )
    parser.add_argument("table", help="CSV (with a header) or JSON Lines: image, question, answer (optional id)")
    parser.add_argument("-o", "--output", required=True, help="the LLaVA-format file (.json or .jsonl)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    written, skipped = convert_table(args.table, args.output)
    for skip in skipped:
        print(f"left out {skip} ({skip.reason})")
    print(f"wrote {written} record(s) to {args.output}" + (f"; left out {len(skipped)}" if skipped else ""))
    return 0
