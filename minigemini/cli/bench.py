"""`mgm bench`: latency per component, decode speed, FLOPs and peak memory."""

from __future__ import annotations

import json
from pathlib import Path

from minigemini.cli.options import add_dtype_argument, add_quantize_arguments
from minigemini.profiling import PRESETS, run_bench


def print_table(result: dict) -> None:
    width = max(map(len, result))
    for key, value in result.items():
        seconds = key.endswith("_s") and value is not None
        label = key[:-2] + " (ms)" if key.endswith("_s") else key
        shown = f"{value * 1000:.1f}" if seconds else value
        print(f"{label:<{width + 3}} {shown}")


def run(args) -> int:
    result = run_bench(args)
    print_table(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="latency breakdown per component, FLOPs and peak memory")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", type=Path, help="a saved Mini-Gemini directory")
    source.add_argument("--preset", choices=sorted(PRESETS), default="tiny", help="random-weight model (default tiny)")
    parser.add_argument("--hd", action="store_true", help="HD settings for a preset (5x visual tokens, HR 1536)")
    add_dtype_argument(parser, default="fp32", auto=False, help="precision of the model (default fp32)")
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: cuda if available)")
    add_quantize_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--text-tokens", type=int, default=32, help="text tokens around the image in the prompt")
    parser.add_argument("--new-tokens", type=int, default=16, help="tokens generated to measure decode speed")
    parser.add_argument("--flop-tokens", type=int, default=100, help="generated tokens counted in the FLOPs")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.set_defaults(func=run)
