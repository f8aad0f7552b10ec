"""TrainConfig: one flat set of training settings, from stage defaults < a recipe (YAML) < command-line overrides.

Each setting is declared once, as a field with its help in ``metadata`` (as TRL's configs): ``settings_parser`` derives
the `mgm train` flags from the fields with ``HfArgumentParser``, ``trainer_arguments`` the ``TrainingArguments`` the
settings give as they are, and the values are converted and checked in ``__post_init__``, where the object is built.

The defaults of each stage are the paper's (§4.1) and the release scripts' settings:

- stage 1 (modality alignment): mining + projector trained, LLM and both encoders frozen, ``plain`` template, images
  resized and centre-cropped (no padding, as the release's stage 1), lr 1e-3, global batch 256, 1 epoch, 2048 tokens;
- stage 2 (instruction tuning): also the LLM, the model's chat template, images padded to square, lr 2e-5, global
  batch 128, 1 epoch, 2048 tokens (4096 for HD), samples grouped by modality and length;
- both: AdamW, cosine schedule, warm-up ratio 0.03, no weight decay, bf16 (``auto``: fp32 on a CPU without bf16
  kernels), gradient checkpointing.

The global batch is a property of the recipe, not of the machine: gradient accumulation is derived from it, the
per-device batch and the number of processes, so one recipe runs on one CPU or on many GPUs.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import re
import types
import typing
from pathlib import Path
from typing import Any

from transformers import HfArgumentParser
from transformers.hf_argparser import string_to_bool

from minigemini.precision import PRECISIONS, dtype_name
from minigemini.templates import TEMPLATE_NAMES

__all__ = [
    "MODEL_TEMPLATE",
    "RECIPES_DIR",
    "SAMPLERS",
    "STAGE_DEFAULTS",
    "TRAINER",
    "TrainConfig",
    "load_recipe",
    "settings_parser",
    "shipped_file",
]

#: The recipes and launcher configs that ship with the package (``recipes/`` of the repository links to them).
RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"

#: ``template`` value for the model's own chat template: its processor's (a release template name), else the
#: tokenizer's jinja template.  Stage 2's default; stage 1 may name it too (its default is ``plain``).
MODEL_TEMPLATE = "model"

#: Settings that differ between the stages (everything else has one default below).
STAGE_DEFAULTS: dict[int, dict[str, Any]] = {
    1: {
        "template": "plain",
        "pad_to_square": False,
        "learning_rate": 1e-3,
        "global_batch_size": 256,
        "per_device_batch_size": 16,
        "max_length": 2048,
        "sampler": "random",
    },
    2: {
        "template": MODEL_TEMPLATE,
        "pad_to_square": True,
        "learning_rate": 2e-5,
        "global_batch_size": 128,
        "per_device_batch_size": 8,
        "max_length": 2048,
        "sampler": "modality_length",
    },
}

SAMPLERS = ("modality_length", "random", "sequential")

#: Non-finite steps in a row that stop a run (``max_nonfinite_steps``; train/guard.py).  One such step is mostly a
#: transient (a bad batch, a loss spike) that skipping it mends; once the weights or the optimizer state are broken,
#: every later step is non-finite too, and five in a row tell the two apart for five skipped steps' cost.
NONFINITE_PATIENCE = 5

#: Field metadata key naming the ``TrainingArguments`` field a setting is passed to as it is (``trainer_arguments``).
TRAINER = "trainer"


def _setting(default: Any = None, help: str = "", **metadata: Any) -> Any:
    """A TrainConfig field: its default, its --help, and other metadata (argparse options, ``TRAINER``)."""
    return dataclasses.field(default=default, metadata={"help": help, **metadata})


def _precision_choice(value: str) -> str:
    """--precision: any spelling of the one dtype vocabulary (bf16 or bfloat16, ...) -> its short name."""
    try:
        return dtype_name(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


@dataclasses.dataclass
class TrainConfig:
    """The settings of one training stage, each declared once: its type, default and help (the `mgm train` flags are
    derived from them by ``settings_parser``, the ``TrainingArguments`` by ``trainer_arguments``).  The values are
    converted (YAML reads 1e-3 as a string) and checked where the object is built; None values of the settings in
    ``STAGE_DEFAULTS`` take the stage's default."""

    # what to train, on what
    stage: int = _setting(2, "1: align (mining + projector), 2: instruction-tune", choices=(1, 2))
    model: str | None = _setting(
        help="starting model directory (save_pretrained: mgm init / mgm convert / stage 1 output), or a LoRA adapter "
        "folder (a --lora stage's output) whose adapter trains on with --lora"
    )
    data: list[str] = dataclasses.field(
        default_factory=list,
        metadata={"help": "LLaVA-format .json / .jsonl files, or shards (mgm data shard; hf:NAME): streamed"},
    )
    image_folder: list[str] = dataclasses.field(
        default_factory=list, metadata={"help": "root folder(s) for relative image paths (first match wins)"}
    )
    output: str | None = _setting(
        help="output directory: checkpoints, final model + processor, logs", trainer="output_dir"
    )
    processor: str | None = _setting(help="processor directory (default: the model directory)")
    template: str | None = _setting(
        help=f"chat template: {MODEL_TEMPLATE} (the model's own: its processor's, else the tokenizer's; stage 2's "
        f"default), plain (stage 1's default), {', '.join(name for name in TEMPLATE_NAMES if name != 'plain')}"
    )
    pad_to_square: bool | None = _setting(
        help="pad images to square with the mean colour (stage 2's default) or not (stage 1's)", nargs="?", const=True
    )
    max_length: int | None = _setting(help="longest sample in tokens, visual tokens included")
    verify_images: bool = _setting(
        False,
        "decode every image of JSON data before training (slow): a corrupt one is skipped and named at the start, "
        "not when a step draws it (shards: mgm data stats --verify-images)",
    )
    # what is trained
    tune_vision: bool = _setting(False, "also train the LR (CLIP) encoder")
    tune_vision_aux: bool = _setting(False, "also train the HR (ConvNeXt) encoder")
    lora: bool = _setting(False, "LoRA on the LLM (stage 2)")
    lora_r: int = _setting(128, "LoRA rank")
    lora_alpha: int = _setting(256, "LoRA alpha")
    lora_dropout: float = _setting(0.05, "LoRA dropout")
    bits: int = _setting(16, "4/8: QLoRA (bitsandbytes, on a GPU or a CPU)", choices=(4, 8, 16))
    # optimisation
    learning_rate: float | None = _setting(help="learning rate", aliases=["--lr"], trainer="learning_rate")
    projector_lr: float | None = _setting(help="learning rate of the mining layer and projector (default: --lr)")
    global_batch_size: int | None = _setting(help="samples per optimizer step over all processes")
    per_device_batch_size: int | None = _setting(
        help="samples per forward pass on each process", trainer="per_device_train_batch_size"
    )
    epochs: float = _setting(1.0, "passes over the data", trainer="num_train_epochs")
    max_steps: int = _setting(-1, "stop after this many optimizer steps (-1: the epochs decide)", trainer="max_steps")
    warmup_ratio: float = _setting(0.03, "share of the steps that warm the learning rate up", trainer="warmup_steps")
    lr_scheduler: str = _setting("cosine", "learning-rate schedule (the Trainer's names)", trainer="lr_scheduler_type")
    weight_decay: float = _setting(0.0, "AdamW weight decay", trainer="weight_decay")
    max_grad_norm: float = _setting(1.0, "gradient clipping norm", trainer="max_grad_norm")
    precision: str = _setting(
        "auto",
        "auto: bf16, except fp16 on a GPU without bf16 and fp32 on a CPU without bf16 kernels (minigemini/precision.py)",
        metavar="{auto,bf16,fp16,fp32}",
        type=_precision_choice,
    )
    gradient_checkpointing: bool = _setting(True, "recompute activations in the backward pass (less memory)")
    supervised_head: bool = _setting(
        True, "LM head at supervised positions only (default on); --no-supervised-head computes all logits"
    )
    seed: int = _setting(42, "random seed (data order, LoRA initialisation, dropout)", trainer="seed")
    sampler: str | None = _setting(
        help="order of the samples (stage 1: random, stage 2: modality_length)", choices=SAMPLERS
    )
    length_group_steps: int = _setting(
        1, "modality_length sampler: sort this many steps' samples by length together (less padding)"
    )
    shuffle_buffer: int = _setting(1000, "shard data: samples each DataLoader worker shuffles among (data/stream.py)")
    max_nonfinite_steps: int = _setting(
        NONFINITE_PATIENCE,
        "stop after this many optimizer steps in a row whose loss or gradient norm is NaN or infinite (each is "
        "skipped and named; 0: skip them, never stop)",
    )
    # runtime
    save_steps: int = _setting(1000, "save a checkpoint every this many steps", trainer="save_steps")
    save_total_limit: int | None = _setting(1, "checkpoints kept (the oldest are deleted)", trainer="save_total_limit")
    logging_steps: int = _setting(1, "log every this many steps", trainer="logging_steps")
    dataloader_workers: int = _setting(2, "DataLoader worker processes", trainer="dataloader_num_workers")
    deepspeed: str | None = _setting(
        help="DeepSpeed JSON config: a path, or a shipped one by name (zero2, zero2_offload, zero3)",
        trainer="deepspeed",
    )
    fsdp: str | None = _setting(
        help="FSDP2: --fsdp alone shards everything (full_shard); shard_grad_op keeps the parameters whole between "
        "forward and backward, offload adds CPU offload (or: accelerate launch --config_file $(mgm train --show-path "
        "fsdp))",
        nargs="?",
        const="full_shard",
    )
    fsdp_config: str | None = _setting(
        help="FSDP JSON config (Trainer fsdp_config keys; checkpoints sharded by default)"
    )
    resume: bool = _setting(False, "continue from the last checkpoint in --output")
    report_to: str = _setting("none", "none, tensorboard, wandb, ...", trainer="report_to")
    progress: bool = _setting(True, "a progress bar (--no-progress: none)")

    # ------------------------------------------------------------------------------------------ building

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_sources(cls, recipe: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None):
        """Stage defaults < recipe file < overrides (None values in overrides are ignored)."""
        values: dict[str, Any] = {}
        if recipe is not None:
            values.update(load_recipe(recipe))
        values.update({k: v for k, v in (overrides or {}).items() if v is not None})
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ValueError(f"unknown training setting(s) {unknown}; known: {', '.join(cls.field_names())}")
        return cls(**values)

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for name in self.field_names():
            setattr(self, name, _typed(name, hints[name], getattr(self, name)))
        for key in ("deepspeed", "fsdp_config"):  # a path, or the name of a shipped config (zero3)
            if getattr(self, key):
                setattr(self, key, shipped_file(getattr(self, key), f"--{key.replace('_', '-')}"))
        if self.stage not in STAGE_DEFAULTS:
            raise ValueError(f"stage must be 1 or 2, got {self.stage}")
        for key, value in STAGE_DEFAULTS[self.stage].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        self._check_values()

    def _check_values(self) -> None:
        """The settings must make sense alone and together; raises ValueError with the fix."""
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.template != MODEL_TEMPLATE and self.template not in TEMPLATE_NAMES:
            raise ValueError(
                f"unknown template {self.template!r}; use {MODEL_TEMPLATE!r} (the model's own chat template) or one of "
                f"{', '.join(TEMPLATE_NAMES)}"
            )
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if self.length_group_steps < 1:
            raise ValueError(f"length_group_steps must be >= 1, got {self.length_group_steps}")
        if self.length_group_steps > 1 and self.sampler != "modality_length":
            raise ValueError(
                f"length_group_steps {self.length_group_steps} sorts batches of the modality_length sampler only; "
                f"this run's sampler is {self.sampler!r}"
            )
        if self.bits not in (4, 8, 16):
            raise ValueError(f"bits must be 4, 8 or 16, got {self.bits}")
        if self.bits != 16 and not self.lora:
            raise ValueError(f"--bits {self.bits} quantises the LLM, which then trains only through LoRA: add --lora")
        if self.lora and self.stage == 1:
            raise ValueError("LoRA adapts the LLM, which stage 1 keeps frozen: use --lora in stage 2")
        if self.deepspeed and self.fsdp:
            raise ValueError("choose DeepSpeed or FSDP, not both")
        if self.max_nonfinite_steps < 0:
            raise ValueError(f"max_nonfinite_steps must be >= 0 (0: never stop), got {self.max_nonfinite_steps}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        for key in ("learning_rate", "global_batch_size", "per_device_batch_size", "max_length"):
            value = getattr(self, key)
            if value <= 0:
                raise ValueError(f"{key} must be positive, got {value}")

    def validate(self) -> None:
        """Check that the settings name what a run needs (the values themselves are checked when the object is built);
        raises ValueError with the fix."""
        for key in ("model", "output"):
            if not getattr(self, key):
                raise ValueError(f"--{key} is required")
        if not self.data:
            raise ValueError("--data is required (LLaVA-format .json or .jsonl files)")

    def accumulation_steps(self, world_size: int = 1) -> int:
        """Gradient-accumulation steps so that per-device batch x processes x steps == global batch."""
        per_step = self.per_device_batch_size * world_size
        if self.global_batch_size % per_step:
            raise ValueError(
                f"global batch {self.global_batch_size} is not a multiple of per-device batch "
                f"{self.per_device_batch_size} x {world_size} process(es); change --per-device-batch-size or "
                "--global-batch-size"
            )
        return self.global_batch_size // per_step

    def trainer_arguments(self) -> dict[str, Any]:
        """The ``TrainingArguments`` keywords the settings give as they are (their fields' ``TRAINER`` metadata)."""
        return {f.metadata[TRAINER]: getattr(self, f.name) for f in dataclasses.fields(self) if TRAINER in f.metadata}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def settings_parser() -> argparse.ArgumentParser:
    """The command line of the settings, derived from the fields by ``HfArgumentParser``: ``--name`` and
    ``--name-with-dashes`` with the field's help, ``--no-name`` for each yes/no setting.  No defaults are filled in
    (the stage's, the recipe's and the fields' apply in ``from_sources``): the namespace holds only the flags given."""
    parser = _SettingsParser(TrainConfig, add_help=False)
    for field in dataclasses.fields(TrainConfig):
        if _is_bool(field) and field.default is not True:  # HfArgumentParser adds --no-NAME for default-True ones
            parser.add_argument(f"--no-{field.name.replace('_', '-')}", action="store_false", dest=field.name)
    for action in parser._actions:
        action.default = argparse.SUPPRESS
        action.option_strings.sort(key=lambda option: "_" in option)  # --with-dashes first, as the docs write them
    return parser


class _SettingsParser(HfArgumentParser):
    """``HfArgumentParser`` where a field's metadata may name the flag's ``type`` (else its annotation's), and its
    ``TRAINER`` entry, no argparse option, is left out."""

    @staticmethod
    def _parse_dataclass_field(parser, field):
        field = copy.copy(field)
        metadata = {key: value for key, value in field.metadata.items() if key != TRAINER}
        field.type = metadata.pop("type", field.type)
        field.metadata = types.MappingProxyType(metadata)
        HfArgumentParser._parse_dataclass_field(parser, field)


def _is_bool(field: dataclasses.Field) -> bool:
    return typing.get_type_hints(TrainConfig)[field.name] in (bool, bool | None)


def shipped_file(value: str | os.PathLike, what: str = "recipe") -> str:
    """A file by its path, else a recipe or launcher config of the package by name (``RECIPES_DIR``): ``stage2_lora``,
    ``zero3``, ``fsdp``, or an old repository path such as ``recipes/distributed/zero3.json``."""
    value = os.fspath(value)
    if os.path.isfile(value):
        return value
    name = re.sub(r"^(.*/)?recipes/", "", Path(value).as_posix())
    for folder in (RECIPES_DIR, RECIPES_DIR / "distributed"):
        for candidate in (name, f"{name}.yaml", f"{name}.json", Path(name).name):
            if (folder / candidate).is_file():
                return str(folder / candidate)
    known = sorted(path.stem for path in RECIPES_DIR.rglob("*") if path.suffix in (".yaml", ".json"))
    raise FileNotFoundError(f"{what} {value}: no such file, nor a shipped one of that name ({', '.join(known)})")


def load_recipe(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML (or JSON) recipe, by path or by the name of a shipped one (``shipped_file``): a flat mapping of
    TrainConfig settings."""
    import yaml

    path = shipped_file(path)
    with open(path, encoding="utf-8") as f:
        try:
            values = yaml.safe_load(f) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"recipe {path} is not valid YAML: {err}") from None
    if not isinstance(values, dict):
        raise ValueError(f"recipe {path} must be a mapping of settings, got {type(values).__name__}")  # noqa: TRY004
    values = {str(k).replace("-", "_"): v for k, v in values.items()}
    # config files named by a recipe are looked up next to it first (recipes/distributed/zero3.json)
    for key in ("deepspeed", "fsdp_config"):
        value = values.get(key)
        if isinstance(value, str) and not os.path.isabs(value):
            beside = os.path.join(os.path.dirname(os.path.abspath(path)), value)
            if os.path.exists(beside):
                values[key] = beside
    return values


def _typed(name: str, hint: Any, value: Any) -> Any:
    """A value from a recipe, ``--set`` or Python in the field's type (YAML reads 1e-3 as a string, for one)."""
    if value is None:
        return None
    kinds = [a for a in typing.get_args(hint) if a is not type(None)] if isinstance(hint, types.UnionType) else [hint]
    kind = kinds[0]
    if typing.get_origin(kind) is list:
        return [os.fspath(v) for v in value] if isinstance(value, (list, tuple)) else [os.fspath(value)]
    if kind is bool:
        try:
            return string_to_bool(value) if isinstance(value, str) else bool(value)
        except argparse.ArgumentTypeError:
            raise ValueError(f"{name} must be true or false, got {value!r}") from None
    if kind in (int, float):
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number, got {value!r}") from None
        if kind is int:
            if number != int(number):
                raise ValueError(f"{name} must be an integer, got {value!r}")
            return int(number)
        return number
    return value
