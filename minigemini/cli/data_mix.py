"""`mgm data mix`: a training mixture from a recipe of sources."""

from __future__ import annotations

import argparse
import os

from minigemini.data.jsonio import write_json, write_records
from minigemini.datatools.mix import describe, expand_path, load_recipe, mix


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "mix",
        help="assemble a training file from a mixture recipe (YAML)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("recipe", help="mixture recipe YAML (recipes/data/stage1.yaml, stage2.yaml, ...)")
    parser.add_argument("--root", help="data root (default: the recipe's 'root')")
    parser.add_argument("--output", "-o", help="output .json / .jsonl (default: the recipe's 'output' under --root)")
    parser.add_argument("--report", help="report JSON (default: OUTPUT.report.json)")
    parser.add_argument("--verify-images", action="store_true", help="decode every image (slow), not only stat it")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every count (e.g. 0.01 for a trial mix)")
    parser.add_argument("--strict", action="store_true", help="a missing or unreadable source is an error")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe)
    if args.scale <= 0:
        raise ValueError("--scale must be positive")
    root = expand_path(args.root if args.root is not None else recipe.root)
    output = args.output or (os.path.join(root, expand_path(recipe.output)) if recipe.output else None)
    if output is None:
        raise ValueError("no output: pass --output or set 'output' in the recipe")
    result = mix(recipe, root=root, verify_images=args.verify_images, scale=args.scale, strict=args.strict)
    result.report["output"] = os.path.abspath(output)
    write_records(output, result.records)
    report_path = args.report or f"{output}.report.json"
    write_json(report_path, result.report)
    print(describe(result.report))
    print(f"wrote {len(result.records)} records to {output} (report: {report_path})")
    return 0
