"""`mgm web`: the Gradio web chat."""

from __future__ import annotations

import argparse
from typing import Any

from minigemini.cli.options import add_model_arguments, add_text_to_image_arguments, load_image_generator, load_model
from minigemini.errors import require
from minigemini.loading import describe_model
from minigemini.serve.batching import BatchingEngine
from minigemini.serve.web import create_demo, local_theme


def build_web(args: argparse.Namespace):
    """Load the model, start the batching engine and return ``(demo, engine)``; ``demo.launch`` is the caller's."""
    model, processor = load_model(args)
    image_generator = load_image_generator(args)
    engine = BatchingEngine(model, processor, max_batch_size=args.max_batch_size).start()
    text = f"`{args.model}` {describe_model(model, processor)}; pictures: {image_generator.name}"
    demo = create_demo(engine, image_generator, args.max_new_tokens, args.temperature, description=text)
    return demo, engine


def launch_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "server_name": args.host,
        "server_port": args.port,
        "share": False,
        "ssr_mode": False,
        "theme": local_theme(),
        "show_error": True,
        "quiet": False,
    }


def run_web(args: argparse.Namespace) -> int:
    require("gradio")  # before the (slow) model load
    import os

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    demo, engine = build_web(args)
    try:
        demo.launch(**launch_options(args))
    finally:
        engine.close()
    return 0


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "web",
        help="Gradio web chat: image upload, streamed answers, generated pictures",
        description=__doc__.split("\n\n")[0],
    )
    add_model_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--max-batch-size", type=int, default=8, help="browser sessions batched into one generate")
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--temperature", type=float, default=0.2)
    add_text_to_image_arguments(parser)
    parser.set_defaults(func=run_web)
