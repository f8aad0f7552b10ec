"""Recipes reproduce the paper's settings; CLI overrides; global batch -> accumulation; clear errors before training."""

from __future__ import annotations

import json
import os

import pytest
import yaml

from minigemini.cli.train import build_parser, config_from_args
from minigemini.train import STAGE_DEFAULTS, TrainConfig
from tests.helpers.cli import train_main as main
from tests.helpers.training import conversation, make_model_dir, write_images, write_jsonl

RECIPES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "recipes")
PAPER = {  # §4.1 and the release scripts
    "stage1.yaml": {
        "stage": 1,
        "learning_rate": 1e-3,
        "global_batch_size": 256,
        "max_length": 2048,
        "template": "plain",
    },
    "stage2.yaml": {
        "stage": 2,
        "learning_rate": 2e-5,
        "global_batch_size": 128,
        "max_length": 2048,
        "template": "model",
    },
    "stage2_hd.yaml": {"stage": 2, "learning_rate": 2e-5, "global_batch_size": 128, "max_length": 4096},
    "stage2_large.yaml": {"stage": 2, "learning_rate": 1e-5, "global_batch_size": 128, "max_length": 2048},
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_recipes_reproduce_the_paper(name):
    config = TrainConfig.from_sources(os.path.join(RECIPES, name))
    for key, value in PAPER[name].items():
        assert getattr(config, key) == value, key
    assert (config.epochs, config.warmup_ratio, config.lr_scheduler, config.weight_decay) == (1, 0.03, "cosine", 0.0)
    assert config.precision == "bf16" and config.gradient_checkpointing
    assert config.accumulation_steps(world_size=8) * config.per_device_batch_size * 8 == config.global_batch_size


def test_stage_defaults_match_the_recipes():
    for stage, name in ((1, "stage1.yaml"), (2, "stage2.yaml")):
        recipe = TrainConfig.from_sources(os.path.join(RECIPES, name))
        bare = TrainConfig.from_sources(None, {"stage": stage})
        for key in STAGE_DEFAULTS[stage]:
            assert getattr(bare, key) == getattr(recipe, key), key


def test_command_line_overrides_the_recipe():
    args = build_parser().parse_args(
        [
            "--recipe",
            os.path.join(RECIPES, "stage2_large.yaml"),
            "--model",
            "m",
            "--data",
            "a.json",
            "b.jsonl",
            "--image-folder",
            "img",
            "--output",
            "out",
            "--lr",
            "3e-5",
            "--per-device-batch-size",
            "2",
            "--no-gradient-checkpointing",
            "--tune-vision-aux",
            "--set",
            "warmup_ratio=0.1",
            "--set",
            "lora-r=16",
        ]
    )
    config = config_from_args(args)
    assert config.learning_rate == 3e-5 and config.per_device_batch_size == 2 and config.warmup_ratio == 0.1
    assert config.data == ["a.json", "b.jsonl"] and config.image_folder == ["img"] and config.lora_r == 16
    assert config.gradient_checkpointing is False and config.tune_vision_aux and not config.tune_vision
    assert config.deepspeed == os.path.join(RECIPES, "distributed", "zero3.json")  # resolved beside the recipe
    assert config.accumulation_steps(world_size=4) == 16
    with pytest.raises(ValueError, match="not a multiple"):
        config.accumulation_steps(world_size=3)


def test_bad_settings_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown training setting"):
        TrainConfig.from_sources(None, {"learning_rat": 1e-3})
    with pytest.raises(ValueError, match="must be a number"):
        TrainConfig.from_sources(None, {"learning_rate": "fast"})
    with pytest.raises(ValueError, match="add --lora"):
        TrainConfig.from_sources(None, {"bits": 4, "model": "m", "data": ["d"], "output": "o"}).validate()
    with pytest.raises(ValueError, match="unknown template 'vicuna'; use 'model' .* or one of vicuna_v1, gemma"):
        TrainConfig.from_sources(None, {"template": "vicuna", "model": "m", "data": ["d"], "output": "o"}).validate()
    with pytest.raises(ValueError, match="length_group_steps must be >= 1, got 0"):
        TrainConfig.from_sources(None, {"length_group_steps": 0, "model": "m", "data": ["d"], "output": "o"}).validate()
    with pytest.raises(ValueError, match="modality_length sampler only; this run's sampler is 'random'"):
        TrainConfig.from_sources(
            None, {"stage": 1, "length_group_steps": 4, "model": "m", "data": ["d"], "output": "o"}
        ).validate()
    (tmp_path / "bad.yaml").write_text("- a list\n")
    with pytest.raises(ValueError, match="mapping"):
        TrainConfig.from_sources(tmp_path / "bad.yaml")


def test_distributed_configs():
    for stage in (2, 3):
        with open(os.path.join(RECIPES, "distributed", f"zero{stage}.json")) as f:
            ds = json.load(f)
        assert ds["zero_optimization"]["stage"] == stage
        assert "optimizer" not in ds and "scheduler" not in ds  # the Trainer's (param groups, cosine) are used
        assert ds["train_micro_batch_size_per_gpu"] == ds["gradient_accumulation_steps"] == "auto"
    with open(os.path.join(RECIPES, "distributed", "fsdp.yaml")) as f:
        fsdp = yaml.safe_load(f)
    assert (
        fsdp["distributed_type"] == "FSDP" and fsdp["fsdp_config"]["fsdp_state_dict_type"] == "SHARDED_STATE_DICT"
    )  # final save: gathered


@pytest.fixture(scope="module")
def small_workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    model = make_model_dir(root / "model")
    names = write_images(root / "images", 1)
    good = write_jsonl(root / "good.jsonl", [conversation("<image>\nDescribe.", "A cat.", image=names[0])])
    return root, model, good


def run_cli(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err
    return code, err


def test_cli_reports_problems_in_one_line_before_training(small_workspace, capsys, tmp_path):
    root, model, good = small_workspace
    base = ["--model", model, "--image-folder", str(root / "images"), "--no-progress"]
    bad = write_jsonl(tmp_path / "bad.jsonl", ["{nope", json.dumps({"conversations": []})])
    code, err = run_cli(capsys, *base, "--data", bad, "--output", str(tmp_path / "o1"))
    assert code == 2 and "no usable training sample" in err and "bad_json: 1" in err and "empty_conversation: 1" in err
    assert not os.path.exists(tmp_path / "o1" / "train_log.jsonl")

    code, err = run_cli(capsys, *base, "--data", good, "--output", str(tmp_path / "o2"), "--resume")
    assert code == 2 and "no complete checkpoint" in err

    # DeepSpeed missing, or a DeepSpeed config that contradicts the recipe: tests/train/test_engines.py; QLoRA
    # without bitsandbytes: tests/train/test_lora.py


def test_cli_trains_one_step(small_workspace, capsys, tmp_path):
    root, model, good = small_workspace
    code = main(
        [
            "--stage",
            "1",
            "--model",
            model,
            "--data",
            good,
            "--image-folder",
            str(root / "images"),
            "--output",
            str(tmp_path / "run"),
            "--global-batch-size",
            "1",
            "--per-device-batch-size",
            "1",
            "--max-steps",
            "1",
            "--precision",
            "fp32",
            "--dataloader-workers",
            "0",
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "Stage 1: 1 step, 1 samples seen" in out and "Skipped 0 records" in out
    assert os.path.isfile(tmp_path / "run" / "model.safetensors")


def test_mgm_cli_subcommands(small_workspace, capsys, tmp_path, monkeypatch):
    """The entries the `mgm` command needs (SUBCOMMANDS in minigemini/cli.py) work as `mgm train` / `mgm merge-lora`."""
    from minigemini import cli

    _root, model, _ = small_workspace
    bad = write_jsonl(tmp_path / "bad.jsonl", ["{nope"])
    assert cli.main(["train", "--model", model, "--data", bad, "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mgm train: error: no usable training sample") and len(err.strip().splitlines()) == 1
    assert cli.main(["merge-lora", "--adapter", str(tmp_path), "--output", str(tmp_path / "m")]) == 2
    assert "not a LoRA adapter folder" in capsys.readouterr().err


FLAGS = [
    "--bits",
    "--data",
    "--dataloader-workers",
    "--deepspeed",
    "--epochs",
    "--export",
    "--fsdp",
    "--fsdp-config",
    "--global-batch-size",
    "--gradient-checkpointing",
    "--image-folder",
    "--length-group-steps",
    "--logging-steps",
    "--lora",
    "--lora-alpha",
    "--lora-dropout",
    "--lora-r",
    "--lr",
    "--lr-scheduler",
    "--max-length",
    "--max-steps",
    "--model",
    "--no-gradient-checkpointing",
    "--no-pad-to-square",
    "--no-progress",
    "--no-supervised-head",
    "--output",
    "--pad-to-square",
    "--per-device-batch-size",
    "--precision",
    "--processor",
    "--projector-lr",
    "--recipe",
    "--report-to",
    "--resume",
    "--sampler",
    "--save-steps",
    "--save-total-limit",
    "--seed",
    "--set",
    "--stage",
    "--supervised-head",
    "--template",
    "--tune-vision",
    "--tune-vision-aux",
    "--variant",
    "--warmup-ratio",
    "--weight-decay",
]


def test_the_flags_are_derived_from_the_settings_and_keep_their_names():
    parser = build_parser()
    options = {option for action in parser._actions for option in action.option_strings}
    assert set(FLAGS) <= options
    for name in TrainConfig.field_names():  # every setting has its flag
        assert f"--{name.replace('_', '-')}" in options, name
    help_text = parser.format_help()
    assert "--tune-vision-aux" in help_text and "also train the HR (ConvNeXt) encoder" in help_text
    # only the flags given override the recipe (no defaults of the parser)
    assert config_from_args(parser.parse_args(["--no-progress"])).to_dict() == {
        **TrainConfig().to_dict(),
        "progress": False,
    }
    args = parser.parse_args(
        ["--lr", "1e-4", "--pad-to-square", "--no-gradient-checkpointing", "--precision", "bfloat16"]
    )
    config = config_from_args(args)
    assert (config.learning_rate, config.pad_to_square, config.gradient_checkpointing) == (1e-4, True, False)
    assert (
        config.precision == "bf16"
        and config_from_args(parser.parse_args(["--no-pad-to-square"])).pad_to_square is False
    )


def test_settings_are_checked_where_they_are_built():
    with pytest.raises(ValueError, match="stage must be 1 or 2, got 3"):
        TrainConfig(stage=3)
    with pytest.raises(ValueError, match="sampler must be one of"):
        TrainConfig(sampler="shuffled")
    with pytest.raises(ValueError, match="lora must be true or false, got 'maybe'"):
        TrainConfig.from_sources(None, {"lora": "maybe"})
    with pytest.raises(ValueError, match="lora_r must be an integer, got 2.5"):
        TrainConfig.from_sources(None, {"lora_r": 2.5})
    config = TrainConfig.from_sources(None, {"learning_rate": "1e-3", "data": "one.json", "lora": "yes", "stage": "2"})
    assert (config.learning_rate, config.data, config.lora, config.stage) == (1e-3, ["one.json"], True, 2)
    with pytest.raises(ValueError, match="--model is required"):
        config.validate()  # what a run needs besides sound values


def test_trainer_arguments_come_from_the_settings_metadata():
    config = TrainConfig.from_sources(None, {"stage": 1, "output": "out", "epochs": 2, "dataloader_workers": 0})
    arguments = config.trainer_arguments()
    assert arguments["output_dir"] == "out" and arguments["num_train_epochs"] == 2.0
    assert arguments["per_device_train_batch_size"] == 16 and arguments["learning_rate"] == 1e-3
    assert arguments["dataloader_num_workers"] == 0 and arguments["warmup_steps"] == 0.03
    assert "gradient_checkpointing" not in arguments and "fsdp_config" not in arguments  # derived in run.py


def test_shipped_recipes_and_launcher_configs_work_by_name_from_any_folder(tmp_path, monkeypatch, capsys):
    from minigemini.cli import main
    from minigemini.train.config import RECIPES_DIR
    from minigemini.train.engines import fsdp_settings

    monkeypatch.chdir(tmp_path)
    config = TrainConfig.from_sources("stage2_lora", {"deepspeed": "zero3"})
    assert config.lora and config.deepspeed == str(RECIPES_DIR / "distributed" / "zero3.json")
    # the repository's paths keep working, from the repository or (by their name) from anywhere
    assert TrainConfig.from_sources("recipes/stage2_large.yaml").deepspeed == str(
        RECIPES_DIR / "distributed/zero3.json"
    )
    assert TrainConfig.from_sources(os.path.join(RECIPES, "stage1.yaml")).stage == 1
    assert TrainConfig.from_sources(None, {"deepspeed": "recipes/distributed/zero2.json"}).deepspeed.endswith(
        "zero2.json"
    )
    with pytest.raises(FileNotFoundError, match="nor a shipped one of that name .*stage2_lora"):
        TrainConfig.from_sources("stage3")
    assert main(["train", "--show-path", "fsdp"]) == 0
    assert capsys.readouterr().out.strip() == str(RECIPES_DIR / "distributed" / "fsdp.yaml")
    # --fsdp alone shards everything; its words become fsdp_config entries (the Trainer's fsdp string is deprecated)
    assert fsdp_settings("full_shard", None)["reshard_after_forward"] is True
    assert fsdp_settings("shard_grad_op offload auto_wrap", None) == {
        "reshard_after_forward": False,
        "cpu_offload": True,
        "state_dict_type": "SHARDED_STATE_DICT",
    }
    with pytest.raises(ValueError, match="unknown option 'hybrid'"):
        fsdp_settings("hybrid", None)
