"""Text-to-image backends behind one interface: ``backend(prompt, seed=..., width=..., height=...) -> PIL.Image``.

- ``DiffusersTextToImage``: any diffusers text-to-image pipeline, by hub id or local directory.  The default is the
  release's ``stabilityai/stable-diffusion-xl-base-1.0`` (``StableDiffusionXLPipeline``), called with the release's
  negative prompt (``generation.NEGATIVE_PROMPT``).  Other pipelines load through ``AutoPipelineForText2Image``,
  falling back to ``DiffusionPipeline``.  CPU (fp32), CUDA or MPS (fp16).
- ``SyntheticTextToImage``: the offline renderer of ``minigemini.synthetic`` (shapes, colours, positions, words),
  deterministic in (prompt, seed).

``load_text_to_image(spec)`` picks one from a string: ``"synthetic"``, ``"sdxl"``, a diffusers id or directory, or
``"auto"`` (SDXL when its weights are already in the local Hugging Face cache, else the synthetic renderer -- so an
offline machine never tries to download gigabytes at the first ``<GEN>``).
"""

from __future__ import annotations

import inspect
import os
import threading
from abc import ABC, abstractmethod
from typing import Any

from PIL import Image

from minigemini.errors import require
from minigemini.generation import NEGATIVE_PROMPT

__all__ = [
    "SDXL_MODEL_ID",
    "DiffusersTextToImage",
    "SyntheticTextToImage",
    "TextToImage",
    "load_text_to_image",
]

SDXL_MODEL_ID = "stabilityai/stable-diffusion-xl-base-1.0"
BACKEND_CHOICES = ("auto", "synthetic", "sdxl")


class TextToImage(ABC):
    """A text-to-image model.  Calls are serialised by a lock, so one instance can serve several threads."""

    name: str = "text-to-image"

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __call__(
        self,
        prompt: str,
        *,
        negative_prompt: str | None = None,
        width: int | None = None,
        height: int | None = None,
        seed: int | None = None,
    ) -> Image.Image:
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("the text-to-image prompt is empty")
        for label, value in (("width", width), ("height", height)):
            if value is not None and not 16 <= value <= 4096:
                raise ValueError(f"{label} must be between 16 and 4096 pixels, got {value}")
        with self._lock:
            return self.generate(prompt.strip(), negative_prompt, width, height, seed)

    @abstractmethod
    def generate(
        self, prompt: str, negative_prompt: str | None, width: int | None, height: int | None, seed: int | None
    ) -> Image.Image: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class SyntheticTextToImage(TextToImage):
    """Draws the scene a prompt describes with ``minigemini.synthetic.render`` (negative prompts are ignored)."""

    name = "synthetic"

    def __init__(self, size: int = 512):
        super().__init__()
        self.size = size

    def generate(self, prompt, negative_prompt, width, height, seed):
        from minigemini.synthetic import render

        return render(prompt, size=(width or self.size, height or self.size), seed=0 if seed is None else seed)


def default_device() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


class DiffusersTextToImage(TextToImage):
    """A diffusers pipeline; ``negative_prompt`` defaults to the release's, used when the pipeline takes one."""

    def __init__(
        self,
        pipeline: Any,
        negative_prompt: str | None = NEGATIVE_PROMPT,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        name: str | None = None,
    ):
        super().__init__()
        self.pipeline = pipeline
        self.negative_prompt = negative_prompt
        self.num_inference_steps = num_inference_steps
        self.guidance_scale = guidance_scale
        self.name = name or getattr(pipeline, "name_or_path", None) or type(pipeline).__name__
        self._parameters = set(inspect.signature(pipeline.__call__).parameters)
        if hasattr(pipeline, "set_progress_bar_config"):
            pipeline.set_progress_bar_config(disable=True)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str = SDXL_MODEL_ID,
        device: str | None = None,
        dtype: Any = None,
        local_files_only: bool = False,
        **kwargs,
    ) -> DiffusersTextToImage:
        """Load a pipeline (SDXL by default) onto ``device`` (default: CUDA, else MPS, else CPU) in ``dtype``
        (default: fp16 on GPUs, fp32 on CPU).  ``kwargs`` go to the constructor (``num_inference_steps``, ...)."""
        import torch

        require("diffusers")
        from diffusers import AutoPipelineForText2Image, DiffusionPipeline, StableDiffusionXLPipeline

        device = device or default_device()
        if dtype is None:
            dtype = torch.float32 if device == "cpu" else torch.float16
        load_args: dict[str, Any] = {_dtype_keyword(): dtype, "local_files_only": local_files_only}
        if name_or_path == SDXL_MODEL_ID:
            loaders = [StableDiffusionXLPipeline]
            if dtype == torch.float16:
                load_args.update(variant="fp16", use_safetensors=True)
        else:
            loaders = [AutoPipelineForText2Image, DiffusionPipeline]
        error: Exception | None = None
        for loader in loaders:
            try:
                pipeline = loader.from_pretrained(name_or_path, **load_args)
                break
            except (ValueError, KeyError) as err:  # AutoPipeline: no text-to-image mapping for this class
                error = err
        else:
            raise ValueError(f"cannot load a text-to-image pipeline from {name_or_path!r}: {error}")
        return cls(pipeline.to(device), name=str(name_or_path), **kwargs)

    def generate(self, prompt, negative_prompt, width, height, seed):
        import torch

        call: dict[str, Any] = {"prompt": prompt}
        negative = negative_prompt if negative_prompt is not None else self.negative_prompt
        if negative and "negative_prompt" in self._parameters:
            call["negative_prompt"] = negative
        if width is not None:
            call["width"] = width
        if height is not None:
            call["height"] = height
        if self.num_inference_steps is not None:
            call["num_inference_steps"] = self.num_inference_steps
        if self.guidance_scale is not None:
            call["guidance_scale"] = self.guidance_scale
        if seed is not None:
            device = getattr(self.pipeline, "device", torch.device("cpu"))
            generator_device = "cpu" if device.type == "mps" else device
            call["generator"] = torch.Generator(device=generator_device).manual_seed(seed)
        with torch.inference_mode():
            images = self.pipeline(**call).images
        image = images[0]
        if not isinstance(image, Image.Image):  # output_type="np" / "pt" pipelines
            from diffusers.utils import numpy_to_pil

            image = numpy_to_pil(image if image.ndim == 4 else image[None])[0]
        return image


def _dtype_keyword() -> str:
    """diffusers renamed ``torch_dtype`` to ``dtype`` (and warns about the old name)."""
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401
    except ImportError:
        return "torch_dtype"
    return "dtype"


def sdxl_is_cached() -> bool:
    """Whether SDXL's weights are already in the local Hugging Face cache (no network is touched)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    try:
        found = try_to_load_from_cache(SDXL_MODEL_ID, "model_index.json")
    except (OSError, ValueError):
        return False
    return isinstance(found, str) and os.path.isfile(found)


def load_text_to_image(
    spec: str | TextToImage | None = "auto", device: str | None = None, dtype: Any = None, **kwargs
) -> TextToImage:
    """A backend from a name: ``"auto"`` (default), ``"synthetic"``, ``"sdxl"``, or a diffusers id / directory."""
    if isinstance(spec, TextToImage):
        return spec
    spec = spec or "auto"
    if spec == "synthetic":
        return SyntheticTextToImage(**kwargs)
    if spec == "auto":
        if sdxl_is_cached():
            try:
                import diffusers  # noqa: F401
            except ImportError:
                return SyntheticTextToImage()
            return DiffusersTextToImage.from_pretrained(SDXL_MODEL_ID, device, dtype, local_files_only=True, **kwargs)
        return SyntheticTextToImage()
    if spec == "sdxl":
        spec = SDXL_MODEL_ID
    return DiffusersTextToImage.from_pretrained(spec, device, dtype, **kwargs)
