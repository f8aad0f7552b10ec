"""`mgm data`: build and inspect training data (paper §3.3, appendix B).

mgm data mix recipes/data/stage2.yaml --root /datasets/mgm        # assemble a mixture from local sources
mgm data ocr docvqa.json --image-folder images/ -o docvqa_ocr.json  # append "Reference OCR token: ..."
mgm data gen recaption --input laion_gpt4v.json --base-url http://localhost:8000/v1 --model M -o gen.json
mgm data convert qa.csv -o train.jsonl                            # a table of image, question, answer
mgm data stats train.json --image-folder images/ --tokenizer MODEL_DIR
mgm data shard train.json --image-folder images/ -o shards/ --format parquet   # streamed training data
mgm data synth --output data/world --scenes 8000                  # the offline synthetic world
"""

from __future__ import annotations

import argparse
import importlib

__all__ = ["DATA_SUBCOMMANDS", "add_parser"]

# `mgm data SUBCOMMAND`: each module has add_parser(subparsers) (registering its own name, with
# set_defaults(func=run)) and run(args). A new subcommand is one more entry here.
DATA_SUBCOMMANDS = (
    "minigemini.cli.data_convert",
    "minigemini.cli.data_mix",
    "minigemini.cli.data_ocr",
    "minigemini.cli.data_gen",
    "minigemini.cli.data_stats",
    "minigemini.cli.data_shard",
    "minigemini.cli.data_synth",
)


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "data",
        help="build and inspect training data: convert, mix, ocr, gen, stats, shard, synth",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subcommands = parser.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    for module_name in DATA_SUBCOMMANDS:
        importlib.import_module(module_name).add_parser(subcommands)
    return parser
