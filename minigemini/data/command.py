"""`mgm data`: build and inspect training data (paper §3.3, appendix B).

mgm data mix recipes/data/stage2.yaml --root /datasets/mgm        # assemble a mixture from local sources
mgm data ocr docvqa.json --image-folder images/ -o docvqa_ocr.json  # append "Reference OCR token: ..."
mgm data gen recaption --input laion_gpt4v.json --base-url http://localhost:8000/v1 --model M -o gen.json
mgm data stats train.json --image-folder images/ --tokenizer MODEL_DIR
mgm data synth --output data/world --scenes 8000                  # the offline synthetic world
"""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["DATA_SUBCOMMANDS", "add_parser", "build_parser", "main"]

# Each module has add_parser(subparsers) (registering its own name, with set_defaults(func=run)) and run(args).
# A new subcommand is one more entry here.
DATA_SUBCOMMANDS = (
    "minigemini.data.mix",
    "minigemini.data.ocr_augment",
    "minigemini.data.gen_builder",
    "minigemini.data.stats",
    "minigemini.data.synth_command",
)


def _add_subcommands(parser: argparse.ArgumentParser) -> None:
    subparsers = parser.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    for module_name in DATA_SUBCOMMANDS:
        importlib.import_module(module_name).add_parser(subparsers)


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "data",
        help="build and inspect training data: mix, ocr, gen, stats, synth",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_subcommands(parser)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mgm data", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _add_subcommands(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """`python -m minigemini.data.command ...`: the same as `mgm data ...`, with the same one-line errors."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except (ValueError, OSError) as error:
        print(f"mgm data {args.data_command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mgm data {args.data_command}: interrupted (run again to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
