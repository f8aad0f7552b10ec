"""`mgm quantize`: save a checkpoint with its LLM quantised, which loads quantised with no option.

    mgm quantize SRC DST --scheme nf4 [--device cpu]
    mgm quantize SRC DST --scheme w8a8-int8      # vllm serve DST (its CPU build too), or transformers

SRC: a Mini-Gemini directory (or a release checkpoint, converted on load); DST (a new or empty folder, written only
when complete) loads with ``from_pretrained``, ``mgm chat --model DST`` and the image-text-to-text pipeline as it is
(its config names the quantization). w8a8-int8 writes compressed-tensors' W8A8 int8 format (minigemini/w8a8_int8.py):
vLLM serves it with its int8 kernels; transformers loads it with the compressed-tensors package (the quant extra).
"""

from __future__ import annotations

import argparse

from minigemini.cli.options import add_dtype_argument, model_directory
from minigemini.quantization import SCHEMES
from minigemini.w8a8_int8 import SCHEME as W8A8_INT8
from minigemini.w8a8_int8 import SCHEME_HELP as W8A8_INT8_HELP


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "quantize",
        help="save a checkpoint with its LLM quantised (nf4, int8, ...)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", metavar="SRC", help="a Mini-Gemini directory, or `default`")
    parser.add_argument("output", metavar="DST", help="folder for the quantised model and its processor")
    schemes = "; ".join(
        [f"{name}: {scheme.help}" for name, scheme in SCHEMES.items()] + [f"{W8A8_INT8}: {W8A8_INT8_HELP}"]
    )
    parser.add_argument("--scheme", required=True, choices=[*SCHEMES, W8A8_INT8], help=schemes)
    parser.add_argument(
        "--device", default="auto", help="where to quantise: auto (CUDA if present, else CPU), cpu, cuda"
    )
    add_dtype_argument(parser, help="dtype of the parts kept in full precision (auto: as for loading)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from minigemini.loading import load_pretrained
    from minigemini.saving import check_new_directory, save_model_and_processor

    source = model_directory(args.source)
    output = check_new_directory(args.output)  # before the (long) load; the save itself is atomic
    if args.scheme == W8A8_INT8:  # quantised here, from the full-precision model, by compressed-tensors' arithmetic
        from minigemini.errors import require
        from minigemini.quantization import check_not_quantized
        from minigemini.w8a8_int8 import save_w8a8_int8

        require("compressed_tensors", extra="quant")
        check_not_quantized(source, args.scheme)
        model, processor = load_pretrained(source, device=args.device, dtype=args.dtype)
        save_w8a8_int8(model, processor, output)
    else:
        model, processor = load_pretrained(source, device=args.device, dtype=args.dtype, quantization=args.scheme)
        save_model_and_processor(model, processor, output)
    print(f"Saved {args.source} with its LLM in {args.scheme} to {args.output}")
    return 0
