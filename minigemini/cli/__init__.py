"""The `mgm` command: one parser, one error handler, one module per command (`minigemini/cli/<command>.py`).

Every command module has `add_parser(subparsers)`, which registers its name and sets `func` to its runner. Errors
from the library (`UserError`, `ValueError`, `OSError`, a missing optional extra) become one line on stderr and exit
code 2; Ctrl-C is exit code 130.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from minigemini.errors import UserError, missing_extra

__all__ = ["SUBCOMMANDS", "build_parser", "main", "run"]

# command -> module with `add_parser(subparsers)`.
SUBCOMMANDS = {
    "demo": "minigemini.cli.demo",
    "bench": "minigemini.cli.bench",
    "convert": "minigemini.cli.convert",
    "init": "minigemini.cli.init",
    "eval": "minigemini.cli.eval",
    "train": "minigemini.cli.train",
    "merge-lora": "minigemini.cli.merge_lora",
    "quantize": "minigemini.cli.quantize",
    "export-default": "minigemini.cli.export_default",
    "chat": "minigemini.cli.chat",
    "serve": "minigemini.cli.serve",
    "web": "minigemini.cli.web",
    "data": "minigemini.cli.datatools",
}

# what Ctrl-C means for a command that can be continued
_RESUME_HINTS = {
    "train": " (continue with --resume)",
    "data": " (run again to resume)",
    "eval": " (run again to resume)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mgm", description="Mini-Gemini: run, train, evaluate and serve MGM models.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in SUBCOMMANDS.values():
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def _command_name(args: argparse.Namespace) -> str:
    sub = getattr(args, "data_command", None)  # `mgm data mix: error: ...`
    return f"mgm {args.command}" + (f" {sub}" if sub else "")


def _missing_extra(name: str, error: ImportError) -> int:
    """One line naming the extra that installs a missing optional dependency; other import errors propagate."""
    extra = missing_extra(error)
    if extra is None:
        raise error
    print(f"{name}: error: {extra}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    """Run a parsed command; the library's errors become one line on stderr."""
    from huggingface_hub.errors import StrictDataclassError

    name = _command_name(args)
    try:
        return args.func(args) or 0
    except ImportError as error:
        return _missing_extra(name, error)
    except (UserError, ValueError, OSError, StrictDataclassError) as error:
        print(f"{name}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{name}: interrupted{_RESUME_HINTS.get(args.command, '')}", file=sys.stderr)
        return 130


def _quiet_upstream() -> None:
    """DeepSpeed, imported by accelerate whenever it is installed, logs that it falls back to the CPU in every command
    (even `mgm init`): that line says nothing about what the command does, and is dropped."""
    logging.getLogger("DeepSpeed").addFilter(lambda record: "Setting accelerator to CPU" not in record.getMessage())


def main(argv: list[str] | None = None) -> int:
    _quiet_upstream()
    try:
        parser = build_parser()
    except ImportError as error:  # a command module needs an extra even to build its parser
        return _missing_extra("mgm", error)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
