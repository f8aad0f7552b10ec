"""The `mgm` command. Each subcommand lives in its own module, which adds its parser and handler here."""

import argparse
import importlib
import sys

from huggingface_hub.errors import StrictDataclassError

# subcommand -> module with `add_parser(subparsers)`; modules are imported lazily so `mgm --help` stays fast.
SUBCOMMANDS = {
    "demo": "minigemini.demo",
    "bench": "minigemini.bench",
    "convert": "minigemini.convert",
    "init": "minigemini.init_model",
    "eval": "minigemini.evaluation.command",
    "train": "minigemini.train.command",
    "merge-lora": "minigemini.train.merge",
    "chat": "minigemini.serve.chat",
    "serve": "minigemini.serve.server",
    "web": "minigemini.serve.web",
    "data": "minigemini.data.command",
}


class UserError(Exception):
    """A problem with the user's input or environment: printed as one clear line, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mgm", description="Mini-Gemini: run, train, evaluate and serve MGM models.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in SUBCOMMANDS.values():
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except (UserError, ValueError, OSError, StrictDataclassError) as error:
        print(f"mgm {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mgm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
