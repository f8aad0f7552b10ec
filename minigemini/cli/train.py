"""`mgm train`: run a training stage from a recipe (YAML) with command-line overrides.

    mgm train --recipe stage1 --model MODEL_DIR --data pretrain.json --image-folder images/ --output OUT
    torchrun --nproc_per_node 8 -m minigemini.train --recipe stage2 ...                          # DDP
    torchrun --nproc_per_node 8 -m minigemini.train --recipe stage2 ... --fsdp                   # FSDP
    accelerate launch --config_file $(mgm train --show-path fsdp) -m minigemini.train ...        # FSDP
    torchrun --nproc_per_node 8 -m minigemini.train ... --deepspeed zero3                        # DeepSpeed
    several machines: docs/distributed.md; fine-tuning a released model on your data: docs/finetune.md

Recipes and launcher configs ship with the package (minigemini/recipes/): name them (stage2_lora, zero3, fsdp) from
any folder, or give a path.

Precedence: stage defaults < --recipe < flags < --set KEY=VALUE.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from minigemini.errors import UserError
from minigemini.train.config import TrainConfig, settings_parser, shipped_file

__all__ = ["add_parser", "config_from_args", "run"]


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags beside the settings' own (``settings_parser``, the parser's parent): the recipe and --set."""
    parser.add_argument(
        "--recipe",
        help="YAML recipe: a path, or a shipped one by name (stage1, stage2, stage2_hd, stage2_large, stage2_lora), or "
        "`synthetic`: the default model's whole "
        "recipe (minigemini/synthetic/recipe/recipe.yaml: world, encoders, read, init, align, stage 1, chat, stage 2, "
        "drill)",
    )
    parser.add_argument(
        "--variant",
        choices=("mining", "lr_only", "hd"),
        default="mining",
        help="synthetic recipe only: mining (the default model), lr_only (LLaVA-style baseline), hd",
    )
    parser.add_argument(
        "--export",
        nargs="?",
        const="default",
        help="synthetic recipe only: write the committed form of the result (default: minigemini/assets/default_model)",
    )
    parser.add_argument(
        "--show-path",
        metavar="NAME",
        help="print the path of a shipped recipe or launcher config (stage2_lora, zero3, fsdp, ...) and exit, e.g. "
        "accelerate launch --config_file $(mgm train --show-path fsdp) -m minigemini.train ...",
    )
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any TrainConfig setting (repeatable), e.g. --set warmup_ratio=0.05",
    )


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train",
        help="train a stage (1: alignment, 2: instruction tuning) from a recipe",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[settings_parser()],
    )
    _add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mgm train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[settings_parser()],
    )
    _add_arguments(parser)
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    fields = set(TrainConfig.field_names())
    overrides = {key: value for key, value in vars(args).items() if key in fields}  # the flags given
    for setting in args.settings or []:
        key, sep, value = setting.partition("=")
        if not sep:
            raise ValueError(f"--set expects KEY=VALUE, got {setting!r}")
        import yaml

        overrides[key.strip().replace("-", "_")] = yaml.safe_load(value)
    return TrainConfig.from_sources(args.recipe, overrides)


def run(args: argparse.Namespace) -> int:
    from minigemini.train.run import describe_summary, train

    if args.show_path:
        print(shipped_file(args.show_path, "--show-path"))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("minigemini").setLevel(logging.INFO)
    pipeline = _synthetic_pipeline(args)
    if pipeline is not None:
        return pipeline
    config = config_from_args(args)
    finished = False
    try:
        result = train(config)
        if result.trainer.is_world_process_zero():
            print(describe_summary(result.summary))
        del result
        finished = True
    except (UserError, ValueError, OSError):
        if int(os.environ.get("RANK", "0")) != 0:
            return 2  # every rank refuses alike: rank 0 prints the line (`mgm`'s error handler), the others exit
        raise
    finally:
        _leave_process_group(finished)
    return 0


def _leave_process_group(finished: bool) -> None:
    """Under torchrun, tear the gloo process group down in an order that cannot hang or abort at exit.

    Left to interpreter teardown, its threads once aborted a finished run ("terminate called without an active
    exception", exit -6); destroyed while DDP's reducer still held it, the reducer's later release joined the gloo
    threads with the GIL held while one of them waited for the GIL to free a tensor: a hang."""
    import gc

    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    gc.collect()  # the trainer's DDP reducer lets go of the group while the group is still registered
    if finished:
        dist.barrier()  # every rank done and the gloo threads idle (a failed rank would leave the others waiting)
    dist.destroy_process_group()


def _synthetic_pipeline(args: argparse.Namespace) -> int | None:
    """Run the synthetic recipe when --recipe names it (or a file with `pipeline: synthetic`); else None."""
    from minigemini.synthetic.recipe.pipeline import SYNTHETIC_RECIPE, is_pipeline, run_synthetic_recipe
    from minigemini.train.config import load_recipe

    if args.recipe is None:
        return None
    # `recipes/synthetic.yaml`: where the recipe lived before it became package data
    named = args.recipe == "synthetic" or Path(args.recipe).as_posix().endswith("recipes/synthetic.yaml")
    path = SYNTHETIC_RECIPE if named and not Path(args.recipe).is_file() else args.recipe
    if path == SYNTHETIC_RECIPE and not SYNTHETIC_RECIPE.is_file():
        raise FileNotFoundError(f"{SYNTHETIC_RECIPE} not found: the package is incomplete, reinstall it")
    recipe = load_recipe(path)
    if not is_pipeline(recipe):
        return None
    if not args.output:
        raise ValueError("--output is required: the folder for every step of the recipe")
    export = None
    if args.export is not None:
        from minigemini.synthetic.default_model import DEFAULT_MODEL_DIR

        export = DEFAULT_MODEL_DIR if args.export == "default" else args.export
    run_synthetic_recipe(recipe, args.output, variant=args.variant, export=export)
    return 0
