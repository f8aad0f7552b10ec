"""TrainConfig: one flat set of training settings, from stage defaults < a recipe (YAML) < command-line overrides.

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

import dataclasses
import os
import types
import typing
from typing import Any

from minigemini.precision import PRECISIONS
from minigemini.templates import TEMPLATE_NAMES

__all__ = ["MODEL_TEMPLATE", "STAGE_DEFAULTS", "TrainConfig", "load_recipe"]

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


@dataclasses.dataclass
class TrainConfig:
    # what to train, on what
    stage: int = 2
    model: str | None = None  # a save_pretrained directory (mgm init / mgm convert / a stage-1 output)
    data: list[str] = dataclasses.field(default_factory=list)
    image_folder: list[str] = dataclasses.field(default_factory=list)
    output: str | None = None
    processor: str | None = None  # default: the model directory
    template: str | None = None  # a release template name or MODEL_TEMPLATE; None: the stage's (plain / model)
    pad_to_square: bool | None = None
    max_length: int | None = None
    # what is trained
    tune_vision: bool = False  # also train the LR (CLIP) encoder
    tune_vision_aux: bool = False  # also train the HR (ConvNeXt) encoder
    lora: bool = False
    lora_r: int = 128
    lora_alpha: int = 256
    lora_dropout: float = 0.05
    bits: int = 16  # 4 or 8: QLoRA (needs CUDA + bitsandbytes)
    # optimisation
    learning_rate: float | None = None
    projector_lr: float | None = None  # mining + projector; default: learning_rate
    global_batch_size: int | None = None
    per_device_batch_size: int | None = None
    epochs: float = 1.0
    max_steps: int = -1
    warmup_ratio: float = 0.03
    lr_scheduler: str = "cosine"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    precision: str = "auto"  # bf16, except fp32 on a CPU without bf16 kernels (minigemini/precision.py)
    gradient_checkpointing: bool = True
    supervised_head: bool = True  # LM head + loss at supervised positions only
    seed: int = 42
    sampler: str | None = None
    length_group_steps: int = 1  # modality_length: steps whose samples are sorted by length together (less padding)
    shuffle_buffer: int = 1000  # shard data: samples each DataLoader worker shuffles among (data/stream.py)
    # runtime
    save_steps: int = 1000
    save_total_limit: int | None = 1
    logging_steps: int = 1
    dataloader_workers: int = 2
    deepspeed: str | None = None  # a DeepSpeed JSON config (recipes/distributed/zero2.json, zero3.json)
    fsdp: str | None = None  # e.g. "full_shard auto_wrap"; or launch with `accelerate launch --config_file fsdp.yaml`
    fsdp_config: str | None = None
    resume: bool = False
    report_to: str = "none"
    progress: bool = True

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
        stage = int(values.get("stage", cls.stage))
        if stage not in STAGE_DEFAULTS:
            raise ValueError(f"stage must be 1 or 2, got {stage}")
        merged = {**STAGE_DEFAULTS[stage], **values, "stage": stage}
        return cls(**{k: _coerce(cls, k, v) for k, v in merged.items()})

    def __post_init__(self):
        for key in ("data", "image_folder"):
            value = getattr(self, key)
            if isinstance(value, (str, os.PathLike)):
                setattr(self, key, [os.fspath(value)])
        for key, value in STAGE_DEFAULTS.get(self.stage, {}).items():
            if getattr(self, key) is None and value is not None:
                setattr(self, key, value)

    def validate(self) -> None:
        """Check the settings that need no files; raises ValueError with the fix."""
        if self.stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {self.stage}")
        for key in ("model", "output"):
            if not getattr(self, key):
                raise ValueError(f"--{key} is required")
        if not self.data:
            raise ValueError("--data is required (LLaVA-format .json or .jsonl files)")
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
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        for key in ("learning_rate", "global_batch_size", "per_device_batch_size", "max_length"):
            value = getattr(self, key)
            if value is None or value <= 0:
                raise ValueError(f"{key} must be positive, got {value}")

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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_recipe(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML (or JSON) recipe: a flat mapping of TrainConfig settings."""
    import yaml

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


def _coerce(cls, name: str, value: Any) -> Any:
    """Convert strings from YAML / `--set` to the field's type (YAML reads 1e-3 as a string, for one)."""
    hint = typing.get_type_hints(cls)[name]
    args = typing.get_args(hint)
    if value is None:
        return None
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        types_ = [a for a in args if a is not type(None)]
    else:
        types_ = [hint]
    target = types_[0]
    if typing.get_origin(target) is list:
        return [os.fspath(v) for v in value] if isinstance(value, (list, tuple)) else [os.fspath(value)]
    if target is bool:
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"{name} must be true or false, got {value!r}")
        return bool(value)
    if target in (int, float):
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number, got {value!r}") from None
        if target is int:
            if number != int(number):
                raise ValueError(f"{name} must be an integer, got {value!r}")
            return int(number)
        return number
    return value
