"""`mgm data gen`: generation instructions (<GEN> / <h>) from a teacher model."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from minigemini.data.skips import SkipCounter
from minigemini.datatools.gen import KINDS, GenConfig, build, read_lines_or_json


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "gen",
        help="build generation instructions (<GEN> / <h>...</h>) with an OpenAI-compatible chat endpoint",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("kind", choices=KINDS, help="recaption: from captions; context: from text conversations")
    parser.add_argument("--input", nargs="+", required=True, help="captions (.txt/.json/.jsonl) or conversations")
    parser.add_argument("--output", "-o", required=True, help="LLaVA-format .json / .jsonl")
    endpoint = parser.add_argument_group("endpoint")
    endpoint.add_argument(
        "--base-url", required=True, help="e.g. https://api.openai.com/v1 or http://localhost:8000/v1"
    )
    endpoint.add_argument("--model", required=True, help="model name the endpoint serves")
    endpoint.add_argument("--api-key", help="API key (default: $OPENAI_API_KEY; none for a local server)")
    endpoint.add_argument("--rpm", type=float, default=60.0, help="at most this many requests per minute (0: no cap)")
    endpoint.add_argument("--workers", type=int, default=4, help="requests in flight at once")
    endpoint.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    endpoint.add_argument("--retries", type=int, default=3, help="retries per item after an error or timeout")
    endpoint.add_argument("--backoff", type=float, default=2.0, help="first retry delay in seconds (doubles)")
    endpoint.add_argument("--max-consecutive-errors", type=int, default=20, help="stop after this many failed items")
    endpoint.add_argument("--price-input", type=float, help="USD per million prompt tokens (for the cost report)")
    endpoint.add_argument("--price-output", type=float, help="USD per million completion tokens")
    what = parser.add_argument_group("what is asked")
    what.add_argument("--count", type=int, help="items to build (a seeded sample of the inputs; default all)")
    what.add_argument("--seed", type=int, default=0)
    what.add_argument("--examples", help="pool of high-quality text-to-image prompts (.txt lines or JSON list)")
    what.add_argument("--instruction-templates", help="pool of simple picture requests (.txt lines or JSON list)")
    what.add_argument("--temperature", type=float, default=0.7)
    what.add_argument("--max-reply-tokens", type=int, default=512)
    what.add_argument("--max-prompt-words", type=int, default=80, help="drop replies whose prompt is longer")
    what.add_argument("--retry-rejected", action="store_true", help="ask again for items whose reply was dropped")
    what.add_argument("--cache", help="resume cache (default: OUTPUT.gen-cache.jsonl)")
    what.add_argument("--no-progress", dest="progress", action="store_false")
    parser.set_defaults(func=run)
    return parser


def config_from_args(args: argparse.Namespace) -> GenConfig:
    config = GenConfig(
        kind=args.kind,
        inputs=args.input,
        output=args.output,
        base_url=args.base_url,
        model=args.model,
        api_key=args.api_key or os.environ.get("OPENAI_API_KEY"),
        count=args.count,
        seed=args.seed,
        temperature=args.temperature,
        max_reply_tokens=args.max_reply_tokens,
        max_prompt_words=args.max_prompt_words,
        rpm=args.rpm or None,
        workers=args.workers,
        timeout=args.timeout,
        retries=args.retries,
        backoff=args.backoff,
        max_consecutive_errors=args.max_consecutive_errors,
        price_input=args.price_input,
        price_output=args.price_output,
        retry_rejected=args.retry_rejected,
        cache=args.cache,
        progress=args.progress,
    )
    if args.examples:
        config.example_prompts = read_lines_or_json(args.examples)
    if args.instruction_templates:
        config.instruction_templates = read_lines_or_json(args.instruction_templates)
    return config


def describe(report: dict[str, Any]) -> str:
    lines = [
        (
            f"{report['kind']}: {report['items']} items, {report['kept']} kept, {report['rejected']} dropped by the "
            f"format filter, {report['remaining']} remaining ({report['done_before']} were done before this run)"
        )
    ]
    for key, label in (("rejected_this_run", "dropped"), ("endpoint_errors", "endpoint"), ("input_problems", "input")):
        lines.extend(f"  {label} {line}" for line in SkipCounter.from_report(report[key]).lines())
    now, total = report["tokens_this_run"], report["tokens_total"]
    line = (
        f"tokens this run: {now.get('prompt_tokens', 0)} prompt + {now.get('completion_tokens', 0)} completion; "
        f"all runs: {total.get('prompt_tokens', 0)} + {total.get('completion_tokens', 0)}"
    )
    if "cost_usd_total" in report:
        line += f"; cost ${report['cost_usd_this_run']:.4f} this run, ${report['cost_usd_total']:.4f} in all"
    lines.append(line)
    if report["fatal"]:
        lines.append(f"stopped: {report['fatal']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    report = build(config_from_args(args))
    print(describe(report))
    print(f"wrote {report['kept']} records to {report['output']} (report: {report['output']}.report.json)")
    if report["fatal"]:
        print(f"mgm data gen: error: {report['fatal']}", file=sys.stderr)
        return 2
    if report["remaining"]:
        print(f"{report['remaining']} items remain: run the same command again to resume", file=sys.stderr)
        return 1
    return 0
