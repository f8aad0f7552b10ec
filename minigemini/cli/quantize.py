"""`mgm quantize`: save a checkpoint with its LLM quantised, which loads quantised with no option.

    mgm quantize SRC DST --scheme nf4 [--device cpu]

SRC: a Mini-Gemini directory (or a release checkpoint, converted on load); DST loads with ``from_pretrained``, ``mgm
chat --model DST`` and the image-text-to-text pipeline as it is (its config names the quantization).
"""

from __future__ import annotations

import argparse

from minigemini.cli.options import add_dtype_argument, model_directory
from minigemini.quantization import SCHEMES


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "quantize",
        help="save a checkpoint with its LLM quantised (nf4, int8, ...)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", metavar="SRC", help="a Mini-Gemini directory, or `default`")
    parser.add_argument("output", metavar="DST", help="folder for the quantised model and its processor")
    schemes = "; ".join(f"{name}: {scheme.help}" for name, scheme in SCHEMES.items())
    parser.add_argument("--scheme", required=True, choices=list(SCHEMES), help=schemes)
    parser.add_argument(
        "--device", default="auto", help="where to quantise: auto (CUDA if present, else CPU), cpu, cuda"
    )
    add_dtype_argument(parser, help="dtype of the parts kept in full precision (auto: as for loading)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from minigemini.loading import load_pretrained

    model, processor = load_pretrained(
        model_directory(args.source), device=args.device, dtype=args.dtype, quantization=args.scheme
    )
    model.save_pretrained(args.output)
    processor.save_pretrained(args.output)
    print(f"Saved {args.source} with its LLM in {args.scheme} to {args.output}")
    return 0
