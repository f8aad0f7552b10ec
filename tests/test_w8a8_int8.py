"""`mgm quantize --scheme w8a8-int8` (minigemini/w8a8_int8.py): the compressed-tensors checkpoint vLLM serves with an
int8 LLM (served for real in tests/vllm_plugin/test_int8.py). Here: what is written, shard by shard, and the one-line
refusals."""

import io
import json

import pytest
import torch
from safetensors.torch import load_file

from minigemini import MiniGeminiForConditionalGeneration, cli
from minigemini.w8a8_int8 import SCHEME, int8_per_channel, save_w8a8_int8
from tests.conftest import tiny_model
from tests.helpers.serving import save_tiny_mgm

LLM_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def saved_tensors(path) -> dict[str, torch.Tensor]:
    return {name: tensor for shard in sorted(path.glob("*.safetensors")) for name, tensor in load_file(shard).items()}


def test_int8_per_channel_rounds_each_row_to_its_own_scale():
    weight = torch.tensor([[0.5, -1.0, 0.25], [100.0, 3.0, -50.0]])
    q, scale = int8_per_channel(weight)
    assert q.dtype == torch.int8 and scale.shape == (2, 1) and scale.dtype == torch.float32
    assert q[:, :2].tolist() == [[64, -127], [127, 4]]  # each row's largest magnitude is 127
    assert (q.float() * scale - weight).abs().max(dim=1).values.le(scale.squeeze(1) / 2 + 1e-6).all()
    assert int8_per_channel(torch.zeros(1, 4))[0].eq(0).all()  # an all-zero row: no division by zero


@pytest.mark.parametrize("shard_size", [None, "60KB"])
def test_the_llms_linear_weights_are_int8_and_everything_else_is_saved_as_it_is(tmp_path, shard_size):
    model = tiny_model()
    options = {"max_shard_size": shard_size} if shard_size else {}
    save_w8a8_int8(model, _Processor(), tmp_path / "q", **options)
    saved, original = saved_tensors(tmp_path / "q"), model.state_dict()
    if shard_size:  # several shards, and the index names every tensor, scales included
        assert len(list((tmp_path / "q").glob("*.safetensors"))) > 1
        weight_map = json.loads((tmp_path / "q" / "model.safetensors.index.json").read_text())["weight_map"]
        assert set(weight_map) == set(saved)
    quantized = {name for name, tensor in saved.items() if tensor.dtype == torch.int8}
    assert quantized and all(name.startswith("model.language_model.") for name in quantized)
    assert {name.split(".")[-2] for name in quantized} == set(LLM_LINEAR)
    for name in quantized:
        scale = saved[name.removesuffix("weight") + "weight_scale"]
        error = (saved[name].float() * scale - original[name]).abs()
        assert error.max() <= scale.max() / 2 + 1e-7
    kept = set(saved) - quantized - {name for name in saved if name.endswith("weight_scale")}
    tied = {"lm_head.weight"} if model.config.get_text_config().tie_word_embeddings else set()
    assert kept == set(original) - quantized - tied
    assert all(torch.equal(saved[name], original[name]) for name in kept)  # vision side, embeddings, norms, head
    config = json.loads((tmp_path / "q" / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "compressed-tensors" and config["format"] == "int-quantized"
    group = config["config_groups"]["group_0"]
    assert group["weights"]["strategy"] == "channel" and group["input_activations"]["dynamic"] is True
    assert "re:.*vision_tower.*" in config["ignore"] and "lm_head" in config["ignore"]


class _Processor:
    def save_pretrained(self, path):
        pass


@pytest.fixture
def mgm_cli(monkeypatch, capsys):
    def run(args):
        monkeypatch.setattr("sys.stdin", io.StringIO(""))
        capsys.readouterr()  # what the test printed before (progress bars of its own saves)
        code = cli.main(args)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def test_mgm_quantize_writes_it_and_the_project_refuses_to_load_it_in_one_line(tmp_path, mgm_cli, monkeypatch):
    model_dir = save_tiny_mgm(tmp_path / "mgm")
    code, out, err = mgm_cli(["quantize", str(model_dir), str(tmp_path / "q"), "--scheme", SCHEME, "--dtype", "fp32"])
    assert code == 0, err
    assert "serve it with vLLM" in out and (tmp_path / "q" / "tokenizer_config.json").is_file()
    code, _, err = mgm_cli(["quantize", str(tmp_path / "q"), str(tmp_path / "q2"), "--scheme", SCHEME])
    assert code == 2 and len(err.splitlines()) == 1
    real = __import__("importlib").util.find_spec
    monkeypatch.setattr(
        "importlib.util.find_spec", lambda name, *a: None if name == "compressed_tensors" else real(name, *a)
    )
    code, _, err = mgm_cli(["chat", "--model", str(tmp_path / "q"), "--device", "cpu"])
    assert code == 2 and len(err.splitlines()) == 1
    assert "compressed-tensors format (mgm quantize --scheme w8a8-int8), which vLLM serves" in err


def test_an_llm_with_expert_weights_is_refused_in_one_line(tmp_path, mgm_cli):
    torch.manual_seed(0)
    MiniGeminiForConditionalGeneration(tiny_model("mixtral").config).save_pretrained(tmp_path / "moe")
    save_tiny_mgm(tmp_path / "tok")  # tokenizer and processor beside the MoE weights
    for name in (tmp_path / "tok").iterdir():
        if not name.name.startswith(("model", "config")):
            name.rename(tmp_path / "moe" / name.name)
    code, _, err = mgm_cli(["quantize", str(tmp_path / "moe"), str(tmp_path / "q"), "--scheme", SCHEME])
    error = err.splitlines()[-1]  # after the loading progress bar: the model is loaded before it is looked at
    assert (
        code == 2 and error.startswith("mgm quantize: error: w8a8-int8 quantises dense LLMs") and "Traceback" not in err
    )
