"""`mgm convert`: a published Mini-Gemini (MGM) release checkpoint written in this package's format.

The format itself (detection, config translation, weight names, load checks) is `minigemini.release`;
`MiniGeminiForConditionalGeneration.from_release_checkpoint` loads it. Also `load_stage1_projector`, for a release
stage-1 `mm_projector.bin`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from minigemini.modeling import MiniGeminiForConditionalGeneration
from minigemini.precision import parse_dtype
from minigemini.release import component_of, rename_release_key, summarise
from minigemini.saving import check_new_directory, save_model_and_processor

__all__ = ["convert_and_save", "convert_release_checkpoint", "load_release_checkpoint", "load_stage1_projector"]


def load_release_checkpoint(source: str | os.PathLike, chat_template: str | None = None, **from_pretrained_kwargs):
    """(MiniGeminiForConditionalGeneration, MiniGeminiProcessor or None) of a release checkpoint; see
    `MiniGeminiForConditionalGeneration.from_release_checkpoint`."""
    return MiniGeminiForConditionalGeneration.from_release_checkpoint(source, chat_template, **from_pretrained_kwargs)


def convert_release_checkpoint(
    source: str | os.PathLike,
    destination: str | os.PathLike | None = None,
    chat_template: str | None = None,
    dtype: str | torch.dtype | None = "auto",
):
    """Convert a published MGM checkpoint; save it (model + processor) to `destination` when given.

    `dtype="auto"` keeps the checkpoint's stored dtype. Returns the MiniGeminiForConditionalGeneration (use
    `load_release_checkpoint` to get the processor too).
    """
    return convert_and_save(source, destination, chat_template, dtype)[0]


def convert_and_save(source, destination, chat_template=None, dtype="auto", with_code: bool = False):
    """`convert_release_checkpoint` returning (model, processor): what `mgm convert` runs.  `with_code`: the
    checkpoint also carries the code that loads it without this package (`saving.save_model_and_processor`)."""
    if destination is not None:
        destination = check_new_directory(destination)  # before the (long) load
    dtype = "auto" if dtype is None or dtype == "auto" else parse_dtype(dtype)
    model, processor = load_release_checkpoint(source, chat_template=chat_template, dtype=dtype)
    if destination is not None:
        save_model_and_processor(model, processor, destination, with_code=with_code)
    return model, processor


def load_stage1_projector(model, path: str | os.PathLike) -> list[str]:
    """Load a release stage-1 `mm_projector.bin` (projector + mining weights) onto an existing model.

    Every tensor in the file must land on a parameter of the same shape; returns the names loaded (ours).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{path} is not a readable torch file: {type(error).__name__}: {error}") from error
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    allowed = {"the projector", "the patch info mining layers"}
    unknown = [k for k in state if component_of(k) not in allowed]
    if unknown:
        raise ValueError(f"{path} holds weights that are not projector or mining weights: {summarise(unknown)}")
    renamed = {rename_release_key(k): v for k, v in state.items()}
    own = model.state_dict()
    wrong = []
    for key, value in renamed.items():
        if key not in own:
            wrong.append(f"{key} (no such weight)")
        elif own[key].shape != value.shape:
            wrong.append(f"{key} {tuple(value.shape)} vs the model's {tuple(own[key].shape)}")
    if wrong:
        raise ValueError(f"{path} does not fit this model: {summarise(wrong)}")
    model.load_state_dict(renamed, strict=False)
    return sorted(renamed)
