"""`mgm chat`: multi-turn chat in the terminal (the session itself is `minigemini.serve.terminal`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from minigemini.cli.options import (
    add_generation_arguments,
    add_model_arguments,
    add_text_to_image_arguments,
    load_image_generator,
    load_model,
)
from minigemini.loading import describe_model
from minigemini.serve.terminal import HELP, ChatSession


def run_chat(args: argparse.Namespace, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    interactive = stdin.isatty()
    model, processor = load_model(args)
    session = ChatSession(model, processor, args, stdout, lambda: load_image_generator(args))
    session.say(f"Mini-Gemini {args.model} {describe_model(model, processor)}")
    session.say(HELP)
    if args.image:
        session.attach([str(path) for path in args.image])
    if args.gen:
        session.say(f"[gen] picture requests on; backend: {session.image_generator().name}")
    if interactive:
        try:
            import readline  # noqa: F401  (line editing and history for input())
        except ImportError:
            pass
    while True:
        if interactive and stdin is sys.stdin:
            try:
                line = input("user: ") + "\n"
            except EOFError:
                session.say()
                break
        else:
            line = stdin.readline()
            if not line:  # end of input
                break
        if not session.handle(line):
            break
    return 0


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "chat",
        help="multi-turn chat in the terminal (streamed; /image PATH, /gen, /reset, /quit)",
        description=__doc__.split("\n\n")[0],
    )
    add_model_arguments(parser)
    parser.add_argument(
        "--image", action="extend", nargs="+", default=[], metavar="IMG", help="images for the first message"
    )
    parser.add_argument("--gen", action="store_true", help="ask for a picture with every message (<GEN>)")
    parser.add_argument("--ocr", action="store_true", help="append the OCR tokens of attached images")
    parser.add_argument("--system", default=None, help="system prompt (default: the template's)")
    parser.add_argument("--output-dir", type=Path, default=Path("."), help="where generated pictures are saved")
    parser.add_argument("--seed", type=int, default=0, help="seed of the text-to-image backend")
    add_generation_arguments(parser)
    add_text_to_image_arguments(parser)
    parser.set_defaults(func=run_chat)
