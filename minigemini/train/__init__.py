"""Training: the paper's two stages on the Hugging Face Trainer, recipes, LoRA / QLoRA, distributed launchers.

Heavy imports (the Trainer, PEFT) happen on first use of the names below, so `import minigemini.train` is cheap.
"""

from importlib import import_module

from minigemini.train.config import STAGE_DEFAULTS, TrainConfig, load_recipe

_LAZY = {
    "train": ".run",
    "TrainResult": ".run",
    "describe_summary": ".run",
    "MiniGeminiTrainer": ".trainer",
    "configure_trainable": ".stages",
    "apply_lora": ".lora",
    "load_lora": ".lora",
    "merge_lora": ".lora",
    "JsonlLogCallback": ".callbacks",
    "ProgressBarCallback": ".callbacks",
}

__all__ = ["STAGE_DEFAULTS", "TrainConfig", "load_recipe"] + list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
