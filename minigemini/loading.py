"""Loading a model for inference: device, the one dtype vocabulary, quantisation, and ``load_pretrained``.

``load_pretrained`` reads a directory saved by this package or a published MGM release checkpoint (converted on load);
every command and the Python API load through it.  It knows no synthetic world: ``mgm ... --model default`` is the
command line's name for a plain checkpoint that ``synthetic.default_model.default_checkpoint`` writes once.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import torch

from minigemini.convert.release import is_release_checkpoint
from minigemini.errors import UserError
from minigemini.modeling import MiniGeminiForConditionalGeneration
from minigemini.precision import cpu_inference_dtype, parse_dtype
from minigemini.processing import PROCESSOR_CONFIG_NAME, MiniGeminiProcessor
from minigemini.quantization import check_not_quantized, quantization_config, scheme_from_flags

__all__ = [
    "as_processor",
    "default_dtype",
    "describe_model",
    "load_pretrained",
    "model_and_processor",
    "model_device_and_dtype",
    "resolve_device",
]


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"``: CUDA if available (this process's GPU under torchrun), else MPS, else CPU.

    Asking for an absent accelerator is an error."""
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} was requested but CUDA is not available on this machine")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device mps was requested but MPS is not available on this machine")
    return device


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on CUDA (fp16 where bf16 is unsupported), fp16 on MPS; on a CPU bf16 where it has bf16 matrix kernels
    (half the memory, faster), else fp32 (bf16 there runs a scalar fallback, many times slower)."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return cpu_inference_dtype()


def load_pretrained(
    path: str | os.PathLike,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    load_in_4bit: bool = False,
    load_in_8bit: bool = False,
    chat_template: str | None = None,
    quantization: Any = None,
):
    """Load a saved Mini-Gemini and its processor; returns ``(model, processor)`` in eval mode on ``device``.

    ``path``: a directory saved by this package, or a published MGM release checkpoint (converted on load by
    ``MiniGeminiForConditionalGeneration.from_release_checkpoint``).  ``chat_template`` overrides the processor's (a
    release template name, e.g. ``"vicuna_v1"``).  ``quantization``: a scheme name of ``quantization.SCHEMES``
    (``"nf4"``, ``"int8"``, ...) or a transformers quantization config; it quantises the LLM only (``load_in_4bit`` /
    ``load_in_8bit``: the release's spellings of ``"nf4"``/``"int8"``).  A checkpoint saved quantised (``mgm
    quantize``) loads quantised with none, in the dtype it was saved in.
    """
    path = os.fspath(path)
    device = resolve_device(device)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"model directory not found: {path}")
    quantization = scheme_from_flags(quantization, load_in_4bit, load_in_8bit)
    saved_quantized = check_not_quantized(path, quantization) is not None
    # a checkpoint saved quantised loads in the dtype it was saved in (transformers casts only part of it otherwise)
    dtype = "auto" if saved_quantized else parse_dtype(dtype) or default_dtype(device)
    kwargs: dict[str, Any] = {"dtype": dtype}
    quantized = quantization is not None or saved_quantized
    if quantization is not None:
        kwargs["quantization_config"] = quantization_config(quantization, device, dtype)
    if quantized:  # quantised weights are placed while they load; they cannot be moved afterwards
        kwargs["device_map"] = {"": device}
    if not os.path.isfile(os.path.join(path, PROCESSOR_CONFIG_NAME)) and is_release_checkpoint(path):
        # a published MGM checkpoint (YanweiLi/MGM-*): converted on load, processor and template derived from it
        model, processor = MiniGeminiForConditionalGeneration.from_release_checkpoint(path, chat_template, **kwargs)
        if processor is None:
            raise ValueError(f"{path} is a release checkpoint without tokenizer files; add them to the directory")
    else:
        overrides = {"chat_template": chat_template} if chat_template else {}
        processor = MiniGeminiProcessor.from_pretrained(path, **overrides)
        model = MiniGeminiForConditionalGeneration.from_pretrained(path, **kwargs)
    if not quantized:
        model = model.to(device)
    return model.eval(), processor


@functools.lru_cache(maxsize=2)
def load_cached(path: str, device: str | None, dtype: str | None, quantization: str | None = None):
    return load_pretrained(path, device=device, dtype=dtype, quantization=quantization)


@functools.lru_cache(maxsize=4)
def _load_processor(path: str) -> MiniGeminiProcessor:
    return MiniGeminiProcessor.from_pretrained(path)


def as_processor(processor: Any):
    """A processor (anything with ``apply_chat_template``) as it is, or a directory holding one (loaded once, cached);
    anything else is refused with one line naming the argument."""
    if isinstance(processor, (str, os.PathLike)):
        path = os.fspath(processor)
        if not os.path.isfile(os.path.join(path, PROCESSOR_CONFIG_NAME)):
            raise UserError(
                f"processor: {path} is not a directory holding a Mini-Gemini processor ({PROCESSOR_CONFIG_NAME})"
            )
        return _load_processor(os.path.abspath(path))
    if not callable(getattr(processor, "apply_chat_template", None)):
        raise UserError(
            f"processor must be a MiniGeminiProcessor or a directory holding one, not {type(processor).__name__}"
        )
    return processor


def model_and_processor(
    model: Any, processor: Any = None, device: str | None = None, dtype: str | None = None, quantization: Any = None
):
    """``(model, processor)`` from what a user passes: ``model`` a loaded Mini-Gemini or a directory (loaded once and
    cached, on ``device``/``dtype``, quantised with the scheme name ``quantization``); ``processor`` a processor, a
    directory holding one, or None (the model's own).
    Anything else is refused with one line naming the argument."""
    if isinstance(model, (str, os.PathLike)):
        model, own = load_cached(os.fspath(model), device, dtype, quantization)
        return model, own if processor is None else as_processor(processor)
    if not (isinstance(model, torch.nn.Module) and callable(getattr(model, "generate", None))):
        raise UserError(f"model must be a Mini-Gemini model or a directory holding one, not {type(model).__name__}")
    if processor is None:
        source = getattr(model, "name_or_path", None) or getattr(model.config, "_name_or_path", None)
        if not source or not os.path.isdir(source):
            raise UserError("pass processor= (the model was not loaded from a directory that holds one)")
        processor = source
    return model, as_processor(processor)


def model_device_and_dtype(model) -> tuple[torch.device, torch.dtype]:
    parameter = next(model.model.vision_tower.parameters())
    return model.get_input_embeddings().weight.device, parameter.dtype


def describe_model(model, processor) -> str:
    """``on cpu (float32), vicuna_v1 chat template``: what a front end prints once the model is loaded."""
    device, dtype = model_device_and_dtype(model)
    template = processor.template_name or "the tokenizer's own"
    return f"on {device} ({str(dtype).replace('torch.', '')}), {template} chat template"
