"""`mgm merge-lora`: fold a LoRA adapter (from `mgm train --lora`) into its base model, as a plain checkpoint.

    mgm merge-lora --adapter runs/stage2-lora --output runs/stage2-merged [--base BASE_DIR] [--dtype bf16]

The result loads with MiniGeminiForConditionalGeneration.from_pretrained / MiniGeminiProcessor.from_pretrained.
"""

from __future__ import annotations

import argparse

from minigemini.cli.options import add_dtype_argument
from minigemini.precision import parse_dtype


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "merge-lora",
        help="merge a LoRA adapter into its base model (a plain checkpoint)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--adapter", required=True, help="adapter folder written by `mgm train --lora`")
    parser.add_argument("--output", required=True, help="folder for the merged model and its processor")
    parser.add_argument("--base", help="base model folder (default: the one named in adapter_config.json)")
    add_dtype_argument(parser, default=None, auto=False, help="dtype of the saved weights (default: as loaded)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from minigemini.train.lora import merge_lora

    dtype = parse_dtype(args.dtype)
    merge_lora(args.adapter, args.output, base=args.base, dtype=dtype)
    print(f"Merged {args.adapter} into {args.output}")
    return 0
