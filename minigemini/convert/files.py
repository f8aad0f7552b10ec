"""Checkpoint files read without loading them: JSON, the weight files an index names, tensor names and shapes from the
file headers (safetensors) or a meta-device load (.bin), and a hub id resolved to a local directory (downloaded)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch

__all__ = ["index_map", "read_json", "resolve_checkpoint_dir", "tensor_shapes", "weight_files"]

_SAFETENSORS_INDEX = "model.safetensors.index.json"
_SAFETENSORS_SINGLE = "model.safetensors"
_BIN_INDEX = "pytorch_model.bin.index.json"
_BIN_SINGLE = "pytorch_model.bin"


def read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); the {what} is damaged") from error
    if not isinstance(data, dict):
        raise ValueError(f"{path} should hold a JSON object (the {what})")  # noqa: TRY004 (a damaged file)
    return data


def tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the tensors in one weight file, without reading the data."""
    if not path.is_file():
        raise FileNotFoundError(f"weight file {path} is missing")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                return {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}  # noqa: SIM118 (a safetensors file, not a dict)
        except (SafetensorError, OSError) as error:
            raise ValueError(f"weight file {path} is damaged or truncated: {error}") from error
    try:
        state = torch.load(path, map_location="meta", weights_only=True, mmap=True)
    except Exception as error:  # torch raises many types for a bad zip / pickle
        raise ValueError(f"weight file {path} is damaged or truncated: {type(error).__name__}: {error}") from error
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"weight file {path} does not hold a state dict")  # noqa: TRY004 (a damaged file)
    return {key: tuple(value.shape) for key, value in state.items() if isinstance(value, torch.Tensor)}


def weight_files(directory: Path) -> list[Path]:
    """The weight files a directory names, index first; every file the index names must exist."""
    for index_name, single_name in ((_SAFETENSORS_INDEX, _SAFETENSORS_SINGLE), (_BIN_INDEX, _BIN_SINGLE)):
        index_path = directory / index_name
        if index_path.is_file():
            weight_map = read_json(index_path, "weight index").get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise ValueError(f"{index_path} has no weight_map")
            names = sorted(set(weight_map.values()))
            missing = [name for name in names if not (directory / name).is_file()]
            if missing:
                raise FileNotFoundError(
                    f"{index_path.name} names {len(missing)} weight file(s) that are not in {directory}: "
                    f"{', '.join(missing)}; the download is incomplete"
                )
            return [directory / name for name in names]
        if (directory / single_name).is_file():
            return [directory / single_name]
    raise FileNotFoundError(
        f"no weights in {directory}: looked for {_SAFETENSORS_INDEX}, {_SAFETENSORS_SINGLE}, {_BIN_INDEX}, "
        f"{_BIN_SINGLE}"
    )


def index_map(directory: Path) -> dict[str, str] | None:
    for index_name in (_SAFETENSORS_INDEX, _BIN_INDEX):
        if (directory / index_name).is_file():
            return read_json(directory / index_name, "weight index")["weight_map"]
    return None


def _download(repo_id: str) -> Path:
    """Config, tokenizer and safetensors weights of a hub repo (its .bin weights only when it has no safetensors)."""
    from huggingface_hub import snapshot_download

    metadata = ["*.json", "*.model", "*.txt", "*.tiktoken"]
    directory = Path(snapshot_download(repo_id, allow_patterns=[*metadata, "*.safetensors"]))
    if not any(directory.glob("*.safetensors")):
        directory = Path(snapshot_download(repo_id, allow_patterns=[*metadata, "*.bin"]))
    return directory


def resolve_checkpoint_dir(source: str | os.PathLike) -> Path:
    """A local directory as is; a hub id (`owner/name`) downloaded with huggingface_hub, with a clear error offline."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise NotADirectoryError(f"{source} is a file; pass the checkpoint's directory")
    text = os.fspath(source)
    if re.fullmatch(r"[\w.-]+/[\w.-]+", text) and not text.startswith("."):
        try:
            return _download(text)
        except Exception as error:  # offline, unknown repo, gated, ...: all say the same to the user
            reason = str(error).splitlines()[0] if str(error) else ""
            raise FileNotFoundError(
                f"{text} is not a local directory, and it could not be fetched from the Hugging Face Hub "
                f"({type(error).__name__}: {reason}). Missing: its config.json, "
                f"weights ({_SAFETENSORS_INDEX} + model-*.safetensors, or pytorch_model*.bin) and tokenizer files; "
                f"download the repository where there is a network and pass its directory."
            ) from error
    raise FileNotFoundError(f"{source}: no such directory")
