"""`mgm serve`: the OpenAI-compatible HTTP server (the app itself is `minigemini.serve.app`).

Limits against hostile clients, and the memory they add up to: docs/serving.md.  The API key is best given as the
environment variable MGM_API_KEY: a --api-key on the command line is visible to every user of the machine (ps).
"""

from __future__ import annotations

import argparse
import copy
import os
from pathlib import Path

from minigemini.cli.options import add_model_arguments, add_text_to_image_arguments, load_image_generator, load_model
from minigemini.errors import require
from minigemini.image_processing import DEFAULT_MAX_IMAGE_PIXELS
from minigemini.loading import describe_model
from minigemini.serve.app import create_app
from minigemini.serve.connections import deadline_protocol
from minigemini.serve.limits import BYTES_PER_DECODED_PIXEL, memory_bound
from minigemini.serve.settings import DEFAULT_MAX_REQUEST_PIXELS, MiB, ServerSettings

GiB = 1 << 30


def _log_config(level: str) -> dict:
    """uvicorn's logging, plus the server's own logger (``minigemini.serve``: disconnects, cancellations)."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["minigemini"] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    return config


def _describe_bounds(bounds: dict[str, int | None]) -> str:
    words = {"decoding": "decoding images", "encoded": "encoded images waiting", "bodies": "request bodies"}

    def size(value: int | None) -> str:
        if value is None:
            return "unbounded"
        return f"<= {value / GiB:.1f} GiB" if value >= GiB // 10 else f"<= {value / MiB:.0f} MiB"

    return ", ".join(f"{words[key]} {size(value)}" for key, value in bounds.items())


def build_server(args: argparse.Namespace):
    """Load the model and the text-to-image backend, build the app, return an (unstarted) ``uvicorn.Server``."""
    import uvicorn

    if args.max_tokens > args.max_tokens_limit:
        raise ValueError(f"--max-tokens {args.max_tokens} is above --max-tokens-limit {args.max_tokens_limit}")
    if args.max_queue < 0:
        raise ValueError(f"--max-queue must be >= 0 (0: unbounded), got {args.max_queue}")
    if args.allow_local_files is not None and not Path(args.allow_local_files).is_dir():
        raise FileNotFoundError(f"--allow-local-files: not a directory: {args.allow_local_files}")
    if args.decode_slots < 1:
        raise ValueError(f"--decode-slots must be >= 1, got {args.decode_slots}")
    if min(args.header_timeout, args.body_timeout) < 0:
        raise ValueError("--header-timeout and --body-timeout must be >= 0 (0: no deadline)")
    from_command_line = args.api_key and args.api_key != os.environ.get("MGM_API_KEY")
    model, processor = load_model(args)
    image_generator = load_image_generator(args)
    settings = ServerSettings(
        model_name=args.served_model_name or Path(args.model).resolve().name,
        allow_local_files=args.allow_local_files,
        allow_remote_urls=args.allow_remote_urls,
        max_request_bytes=int(args.max_request_mb * MiB),
        max_image_bytes=int(args.max_image_mb * MiB),
        max_images=args.max_images,
        max_image_pixels=args.max_image_pixels or None,
        default_max_tokens=args.max_tokens,
        default_temperature=args.temperature,
        max_tokens_limit=args.max_tokens_limit,
        api_key=args.api_key or None,
        max_queue=args.max_queue or None,
        max_request_pixels=args.max_request_pixels or None,
        decode_slots=args.decode_slots,
        max_queued_images=args.max_queued_images or None,
        max_batch_images=args.max_batch_images or None,
        max_inflight_bytes=int(args.max_inflight_mb * MiB) or None,
    )
    app = create_app(
        model,
        processor,
        settings,
        image_generator,
        max_batch_size=args.max_batch_size,
        batch_wait=args.batch_wait_ms / 1000,
    )
    print(f"Mini-Gemini {args.model} {describe_model(model, processor)}; pictures: {image_generator.name}")
    if args.host not in ("127.0.0.1", "localhost", "::1") and not settings.api_key:
        print(
            f"warning: listening on {args.host}: anyone who can reach this machine can use the model "
            "(MGM_API_KEY=KEY asks for a key)"
        )
    if from_command_line:
        print("warning: --api-key is visible to every user of this machine (ps); set MGM_API_KEY instead")
    bounds = memory_bound(settings, getattr(processor, "image_processor", None))
    print(f"memory for requests, besides the model: {_describe_bounds(bounds)} (docs/serving.md)")
    protocol = deadline_protocol(args.header_timeout or None, args.body_timeout or None)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        timeout_keep_alive=30,
        http=protocol,
        log_config=_log_config(args.log_level),
    )
    return uvicorn.Server(config)


def run_serve(args: argparse.Namespace) -> int:
    require("fastapi", "uvicorn", "httpx")  # before the (slow) model load
    build_server(args).run()
    return 0


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="OpenAI-compatible HTTP server (chat completions with images, streaming, image generation)",
        description=__doc__.split("\n\n")[0],
    )
    add_model_arguments(parser)
    _add_server_arguments(parser.add_argument_group("server"))
    _add_limit_arguments(parser.add_argument_group("limits against hostile clients (memory figure: docs/serving.md)"))
    add_text_to_image_arguments(parser)
    parser.set_defaults(func=run_serve)


def _add_server_arguments(net) -> None:
    net.add_argument("--host", default="127.0.0.1")
    net.add_argument("--port", type=int, default=8000)
    net.add_argument("--served-model-name", default=None, help="model id reported by /v1/models (default: dir name)")
    net.add_argument("--max-batch-size", type=int, default=8, help="requests batched into one generate call")
    net.add_argument("--batch-wait-ms", type=float, default=5.0, help="how long a batch waits for companions")
    net.add_argument(
        "--max-queue",
        type=int,
        default=64,
        help="requests that may wait for the model; more get 429 at once (0: unbounded)",
    )
    net.add_argument(
        "--api-key",
        default=os.environ.get("MGM_API_KEY"),
        metavar="KEY",
        help="require 'Authorization: Bearer KEY' (all but /health and /openapi.json; default: "
        "$MGM_API_KEY, which other users cannot see in ps, unlike this flag)",
    )
    net.add_argument("--allow-local-files", default=None, metavar="DIR", help="let requests read images inside DIR")
    net.add_argument("--allow-remote-urls", action="store_true", help="let requests fetch http(s) image URLs")
    net.add_argument("--max-request-mb", type=float, default=32.0, help="request body limit")
    net.add_argument("--max-image-mb", type=float, default=20.0, help="limit per image (encoded bytes)")
    net.add_argument("--max-images", type=int, default=8, help="images per request")
    net.add_argument("--max-image-pixels", type=int, default=DEFAULT_MAX_IMAGE_PIXELS, help="limit per image (0: none)")
    net.add_argument("--max-tokens", type=int, default=512, help="default max_tokens of a request")
    net.add_argument("--max-tokens-limit", type=int, default=4096, help="larger max_tokens get 400")
    net.add_argument("--temperature", type=float, default=0.0, help="default temperature of a request (0 = greedy)")
    net.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


def _add_limit_arguments(limits) -> None:
    limits.add_argument(
        "--max-request-pixels",
        type=int,
        default=DEFAULT_MAX_REQUEST_PIXELS,
        help="decoded pixels per request, each image counted as the square it is padded to; checked "
        "from the headers before decoding (0: none; default %(default)s)",
    )
    limits.add_argument(
        "--decode-slots",
        type=int,
        default=2,
        help="requests decoding images at once; decoding holds at most slots x max-request-pixels "
        f"x {BYTES_PER_DECODED_PIXEL} bytes (default %(default)s)",
    )
    limits.add_argument(
        "--max-queued-images",
        type=int,
        default=32,
        help="encoded images that may wait for the model; more get 429 (0: unbounded; default %(default)s)",
    )
    limits.add_argument(
        "--max-batch-images",
        type=int,
        default=16,
        help="images in one batched generate call; a request with more runs alone (0: unbounded; default %(default)s)",
    )
    limits.add_argument(
        "--max-inflight-mb",
        type=float,
        default=256.0,
        help="request bodies held by the requests in progress; more get 429 (0: unbounded; default %(default)s)",
    )
    limits.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        help="seconds a client has to send a request's headers, else 408 and the connection is "
        "closed (0: none; default %(default)s)",
    )
    limits.add_argument(
        "--body-timeout",
        type=float,
        default=60.0,
        help="seconds a client has to send a request's body once its headers are in, else 408 and "
        "the connection is closed (0: none; default %(default)s)",
    )
