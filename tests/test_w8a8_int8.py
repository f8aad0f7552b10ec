"""`mgm quantize --scheme w8a8-int8` (minigemini/w8a8_int8.py): compressed-tensors' W8A8 int8 checkpoint, which vLLM
serves with an int8 LLM (served for real in tests/vllm_plugin/test_int8.py) and transformers loads with the
compressed-tensors package. Here: what is written, shard by shard; transformers' own loader and `mgm chat` on it; an
interrupted write; the one-line refusals."""

import io
import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText, AutoProcessor

from minigemini import MiniGeminiForConditionalGeneration, cli
from minigemini.modeling import VISION_MODULES
from minigemini.w8a8_int8 import SCHEME, int8_per_channel, save_w8a8_int8
from tests.conftest import tiny_model
from tests.helpers.serving import save_tiny_mgm

LLM_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
IMAGE = Image.new("RGB", (40, 30), (200, 30, 90))


def saved_tensors(path) -> dict[str, torch.Tensor]:
    return {name: tensor for shard in sorted(path.glob("*.safetensors")) for name, tensor in load_file(shard).items()}


def test_int8_per_channel_is_compressed_tensors_symmetric_int8_with_one_scale_per_row():
    weight = torch.tensor([[0.5, -1.0, 0.25], [100.0, 3.0, -50.0]])
    q, scale = int8_per_channel(weight)
    assert q.dtype == torch.int8 and scale.shape == (2, 1) and scale.dtype == torch.float32
    # compressed-tensors' symmetric int8: each row's largest magnitude spans half of the 255 steps of [-128, 127]
    assert torch.allclose(scale.squeeze(1), torch.tensor([1.0, 100.0]) / 127.5)
    assert q.tolist() == [[64, -127, 32], [127, 4, -64]]
    # half a step at most (the row's positive extreme, 127.5 steps, is clamped to 127: exactly half a step)
    assert (q.float() * scale - weight).abs().max(dim=1).values.le(scale.squeeze(1) * 0.5001).all()
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
        assert error.le(scale * 0.5001).all()  # half a step of its row's scale
    kept = set(saved) - quantized - {name for name in saved if name.endswith("weight_scale")}
    tied = {"lm_head.weight"} if model.config.get_text_config().tie_word_embeddings else set()
    assert kept == set(original) - quantized - tied
    assert all(torch.equal(saved[name], original[name]) for name in kept)  # vision side, embeddings, norms, head
    config = json.loads((tmp_path / "q" / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "compressed-tensors" and config["format"] == "int-quantized"
    assert config["quantization_status"] == "compressed" and config["version"]  # compressed-tensors' writer
    group = config["config_groups"]["group_0"]
    assert group["weights"]["strategy"] == "channel" and group["input_activations"]["dynamic"] is True
    assert "re:.*vision_tower.*" in config["ignore"] and "lm_head" in config["ignore"]


class _Processor:
    def save_pretrained(self, path):
        pass


def test_an_interrupted_write_leaves_no_output(tmp_path, monkeypatch):
    def fail(*args):
        raise KeyboardInterrupt  # a crash or Ctrl-C after save_pretrained, while the shards are rewritten

    monkeypatch.setattr("minigemini.w8a8_int8._quantize_shard", fail)
    with pytest.raises(KeyboardInterrupt):
        save_w8a8_int8(tiny_model(), _Processor(), tmp_path / "q")
    assert list(tmp_path.iterdir()) == []  # neither the output nor its staging directory


@pytest.fixture
def mgm_cli(monkeypatch, capsys):
    def run(args, stdin=""):
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        capsys.readouterr()  # what the test printed before (progress bars of its own saves)
        code = cli.main(args)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    """A tiny fp32 Mini-Gemini and its `mgm quantize --scheme w8a8-int8` checkpoint."""
    root = tmp_path_factory.mktemp("w8a8")
    source = save_tiny_mgm(root / "mgm")
    assert cli.main(["quantize", str(source), str(root / "q"), "--scheme", SCHEME, "--dtype", "fp32"]) == 0
    return source, root / "q"


def logits(model, processor) -> torch.Tensor:
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]}]
    text = processor.apply_chat_template(conversation, add_generation_prompt=True)
    with torch.no_grad():
        return model(**processor(images=IMAGE, text=text, return_tensors="pt")).logits[0]


def test_transformers_loads_it_with_the_llms_linear_layers_int8_and_logits_near_full_precision(quantized):
    """transformers' own loader (compressed-tensors' quantizer): the LLM's linear layers carry the W8A8 scheme and
    int8 weights as loaded (dequantised on the first forward; their inputs quantised per token in every forward), the
    vision side and the LM head are plain. Int8 per channel rounds each weight by at most half a step (1/255 of its
    row's range) and per-token int8 rounds each input likewise: the largest logit change is a few hundredths of the
    logits' spread (std over positions and vocabulary; measured 0.04-0.05 on four seeds), while the same checkpoint
    read without its scales, or another random model, is 5-6.5 spreads away. The bound, 0.15 of the spread, is three
    times the measured error."""
    source, path = quantized
    model = AutoModelForImageTextToText.from_pretrained(path, device_map="cpu")
    schemed = {name for name, module in model.named_modules() if hasattr(module, "quantization_scheme")}
    assert schemed and all(name.startswith("model.language_model.layers.") for name in schemed)
    assert {name.rsplit(".", 1)[-1] for name in schemed} == set(LLM_LINEAR)
    down = model.model.language_model.layers[0].mlp.down_proj
    assert down.weight.dtype == torch.int8 and down.weight_scale.shape == (down.out_features, 1)
    assert down.quantization_status == "compressed" and down.quantization_scheme.input_activations.dynamic is True
    for name in VISION_MODULES:
        assert all(p.dtype == torch.float32 for p in getattr(model.model, name).parameters()), name
    assert type(model.lm_head) is torch.nn.Linear and model.lm_head.weight.dtype == torch.float32
    processor = AutoProcessor.from_pretrained(path)
    reference = logits(AutoModelForImageTextToText.from_pretrained(source), processor)
    error = (logits(model, processor) - reference).abs().max().item()
    assert 0 < error <= 0.15 * reference.std().item(), (error, reference.std().item())


def test_mgm_chat_answers_from_it_and_mgm_quantize_refuses_it_in_one_line(quantized, tmp_path, mgm_cli):
    _, path = quantized
    code, out, err = mgm_cli(["chat", "--model", str(path), "--device", "cpu", "--max-new-tokens", "2"], "hi\n")
    assert code == 0 and out.count("assistant: ") == 1, err
    code, _, err = mgm_cli(["quantize", str(path), str(tmp_path / "q2"), "--scheme", SCHEME])
    assert code == 2 and err == (
        f"mgm quantize: error: {path} is already quantized (compressed-tensors) and loads so as it is: drop "
        "--quantize, or quantize its full-precision checkpoint\n"
    )


def test_without_compressed_tensors_loading_and_writing_it_are_refused_in_one_line(quantized, tmp_path, mgm_cli,
                                                                                   monkeypatch):  # fmt: skip
    source, path = quantized
    real = __import__("importlib").util.find_spec
    monkeypatch.setattr(
        "importlib.util.find_spec", lambda name, *a: None if name == "compressed_tensors" else real(name, *a)
    )
    code, _, err = mgm_cli(["chat", "--model", str(path), "--device", "cpu"])
    assert code == 2 and err == (
        f"mgm chat: error: {path} is quantized in the compressed-tensors format (mgm quantize --scheme w8a8-int8), "
        'which transformers loads with compressed-tensors: pip install "minigemini[quant]"\n'
    )
    monkeypatch.setitem(__import__("sys").modules, "compressed_tensors", None)  # `import compressed_tensors` fails
    code, _, err = mgm_cli(["quantize", str(source), str(tmp_path / "q"), "--scheme", SCHEME])
    assert code == 2 and err == (
        "mgm quantize: error: compressed_tensors is not installed; it comes with the quant extra: "
        'pip install "minigemini[quant]"\n'
    )
    assert not (tmp_path / "q").exists()


def test_an_existing_output_is_refused_before_loading(quantized, mgm_cli):
    source, path = quantized
    for scheme in (SCHEME, "nf4"):
        code, _, err = mgm_cli(["quantize", str(source), str(path), "--scheme", scheme])
        assert (
            code == 2
            and err == f"mgm quantize: error: {path} already exists and is not empty; choose a new directory\n"
        )


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
    assert not (tmp_path / "q").exists()
