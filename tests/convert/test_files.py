"""Checkpoint files read without loading them: tensor shapes from headers, the weight files an index names, a source
resolved to a directory."""

import json

import pytest
import torch
from safetensors.torch import save_file

from minigemini.convert.files import read_json, resolve_checkpoint_dir, tensor_shapes, weight_files


def test_tensor_shapes_from_safetensors_and_bin(tmp_path):
    save_file({"a.weight": torch.zeros(2, 3), "b": torch.zeros(4)}, str(tmp_path / "model.safetensors"))
    assert tensor_shapes(tmp_path / "model.safetensors") == {"a.weight": (2, 3), "b": (4,)}
    torch.save({"state_dict": {"c": torch.zeros(5, 1)}, "step": 3}, tmp_path / "pytorch_model.bin")
    assert tensor_shapes(tmp_path / "pytorch_model.bin") == {"c": (5, 1)}
    shard = tmp_path / "model.safetensors"
    shard.write_bytes(shard.read_bytes()[:20])
    with pytest.raises(ValueError, match="model.safetensors is damaged or truncated"):
        tensor_shapes(shard)
    with pytest.raises(FileNotFoundError, match="is missing"):
        tensor_shapes(tmp_path / "absent.safetensors")


def test_weight_files_follow_the_index(tmp_path):
    with pytest.raises(FileNotFoundError, match="no weights in"):
        weight_files(tmp_path)
    index = {"weight_map": {"a": "model-1.safetensors", "b": "model-2.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    (tmp_path / "model-1.safetensors").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="names 1 weight file.*model-2.safetensors; the download is incomplete"):
        weight_files(tmp_path)
    (tmp_path / "model-2.safetensors").write_bytes(b"")
    assert weight_files(tmp_path) == [tmp_path / "model-1.safetensors", tmp_path / "model-2.safetensors"]


def test_read_json_names_the_damaged_file(tmp_path):
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="should hold a JSON object \\(the model config\\)"):
        read_json(tmp_path / "config.json", "model config")
    (tmp_path / "config.json").write_text("{")
    with pytest.raises(ValueError, match="is not valid JSON"):
        read_json(tmp_path / "config.json", "model config")


def test_a_source_is_a_directory(tmp_path):
    assert resolve_checkpoint_dir(tmp_path) == tmp_path
    (tmp_path / "file.bin").write_bytes(b"")
    with pytest.raises(NotADirectoryError, match="is a file; pass the checkpoint's directory"):
        resolve_checkpoint_dir(tmp_path / "file.bin")
    with pytest.raises(FileNotFoundError, match="no such directory"):
        resolve_checkpoint_dir(tmp_path / "absent" / "deeper")
