"""`mgm data synth`: write the synthetic world (images + LLaVA-format JSON, and a held-out test set).

mgm data synth --output data/world --scenes 8000 --generation 1500 --seed 0
mgm data synth --output data/world --scenes 8000 --generation 1500 --drills count position   # + drills.json
mgm data synth --output data/world-test --scenes 0 --test-per-type 100 --test-generation 100 --seed 777
"""

from __future__ import annotations

import argparse
import time

from minigemini.synthetic.world import QUESTION_TYPES, SCENE_KINDS, WorldOptions
from minigemini.synthetic.writer import write_world


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "synth",
        help="write the synthetic world: scenes, captions, dialogues, picture requests, a test set",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--output", required=True, help="folder to write (refused when not empty, see --overwrite)")
    parser.add_argument("--scenes", type=int, default=1000, help="training scenes (caption + dialogue each)")
    parser.add_argument("--generation", type=int, default=200, help="text-only picture requests (<GEN>)")
    parser.add_argument("--test-per-type", type=int, default=0, help="held-out questions per question type")
    parser.add_argument("--test-generation", type=int, default=0, help="held-out picture requests")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=192, help="pixels per side of the saved images")
    parser.add_argument(
        "--text-size",
        type=int,
        nargs=2,
        default=(10, 14),
        metavar=("MIN", "MAX"),
        help="font size range of the small print, in pixels",
    )
    parser.add_argument("--kinds", nargs="+", default=list(SCENE_KINDS), choices=SCENE_KINDS, help="scene kinds")
    parser.add_argument("--max-questions", type=int, default=5, help="questions per training dialogue")
    parser.add_argument(
        "--drills",
        nargs="+",
        default=[],
        choices=QUESTION_TYPES,
        metavar="TYPE",
        help="also write drills.json: per scene, one short dialogue of all its questions of these "
        f"types ({', '.join(QUESTION_TYPES)})",
    )
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty folder")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    weights = tuple(w for k, w in zip(SCENE_KINDS, WorldOptions.kind_weights) if k in args.kinds)
    options = WorldOptions(
        image_size=args.image_size, text_size=tuple(args.text_size), kinds=tuple(args.kinds), kind_weights=weights
    )
    started = time.perf_counter()
    counts = write_world(
        args.output,
        scenes=args.scenes,
        generation=args.generation,
        test_per_type=args.test_per_type,
        test_generation=args.test_generation,
        seed=args.seed,
        options=options,
        max_questions=args.max_questions,
        drills=args.drills,
        overwrite=args.overwrite,
        progress=True,
    )
    summary = ", ".join(f"{key} {value}" for key, value in counts.items())
    print(f"Wrote {args.output} in {time.perf_counter() - started:.0f} s: {summary}")
    return 0
