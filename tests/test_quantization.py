"""Quantised loading on a CPU (bitsandbytes >= 0.50 and torchao run there): only the LLM is quantised, through every
door (transformers' own loader, ``load_pretrained``, ``mgm.chat``, the pipeline, the command line, ``mgm quantize``)."""

from __future__ import annotations

import io
import json

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, BitsAndBytesConfig, TorchAoConfig, pipeline

import minigemini as mgm
from minigemini import cli
from minigemini.loading import load_pretrained
from minigemini.modeling import VISION_MODULES
from tests.helpers.serving import save_tiny_mgm
from tests.helpers.tiny_release import make_release

pytest.importorskip("bitsandbytes")
pytest.importorskip("torchao")

IMAGE = Image.new("RGB", (40, 30), (200, 30, 90))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(save_tiny_mgm(tmp_path_factory.mktemp("mgm")))


def plain_configs():
    from torchao.quantization import Int8WeightOnlyConfig

    return {
        "nf4": BitsAndBytesConfig(load_in_4bit=True),
        "int8": BitsAndBytesConfig(load_in_8bit=True),
        "torchao-int8": TorchAoConfig(Int8WeightOnlyConfig()),
    }


def assert_llm_only_quantized(model, dtype=torch.float32):
    """Every linear layer of the towers, mining and projector is a plain nn.Linear in the load's dtype; the LLM's
    are quantised (another class, or a quantised tensor subclass as weight)."""
    for name in VISION_MODULES:
        for path, module in getattr(model.model, name).named_modules():
            if isinstance(module, torch.nn.Linear):
                assert type(module) is torch.nn.Linear, f"{name}.{path} is {type(module).__name__}"
                assert type(module.weight) is torch.nn.Parameter and module.weight.dtype == dtype, f"{name}.{path}"
    down = model.model.language_model.layers[0].mlp.down_proj
    assert type(down) is not torch.nn.Linear or type(down.weight) is not torch.nn.Parameter
    assert type(model.lm_head) is torch.nn.Linear  # the output embedding stays full precision (transformers' default)


@pytest.mark.parametrize("scheme", ["nf4", "int8", "torchao-int8"])
def test_a_plain_config_quantizes_the_llm_only(model_dir, scheme):
    """The issue's reproduction: a user's plain config, with no skip list, used to quantise the CLIP and ConvNeXt
    towers too and crash in generate; the model's own `_keep_in_fp32_modules` keeps them out."""
    config = plain_configs()[scheme]
    model = AutoModelForImageTextToText.from_pretrained(model_dir, quantization_config=config, device_map="cpu")
    assert_llm_only_quantized(model)
    assert isinstance(mgm.chat(model, IMAGE, "What?", processor=model_dir, max_new_tokens=3), str)


def test_load_pretrained_chat_and_batch_chat_take_a_scheme(model_dir):
    model, _ = load_pretrained(model_dir, device="cpu", dtype="fp32", quantization="nf4")
    assert_llm_only_quantized(model)
    assert type(model.model.language_model.layers[0].mlp.down_proj).__name__ == "Linear4bit"
    model, _ = load_pretrained(model_dir, device="cpu", dtype="fp32", load_in_8bit=True)  # the release's spelling
    assert type(model.model.language_model.layers[0].mlp.down_proj).__name__ == "Linear8bitLt"
    answer = mgm.chat(model_dir, IMAGE, "What?", max_new_tokens=3, device="cpu", dtype="fp32", quantization="int8")
    answers = mgm.batch_chat(model_dir, [(IMAGE, "What?"), (None, "Hi")], max_new_tokens=3, device="cpu",
                             dtype="fp32", quantization="int8", progress=False)  # fmt: skip
    assert isinstance(answer, str) and len(answers) == 2


def test_the_pipeline_takes_a_quantization_config(model_dir):
    pipe = pipeline(
        "image-text-to-text",
        model=model_dir,
        model_kwargs={"quantization_config": BitsAndBytesConfig(load_in_4bit=True)},
    )
    assert_llm_only_quantized(pipe.model)
    message = [{"role": "user", "content": [{"type": "image", "image": IMAGE}, {"type": "text", "text": "What?"}]}]
    assert isinstance(pipe(text=message, max_new_tokens=3, return_full_text=False)[0]["generated_text"], str)


def test_a_release_checkpoint_is_quantized_as_it_is_converted(tmp_path):
    make_release(tmp_path / "release", "llama")
    model, _ = load_pretrained(tmp_path / "release", device="cpu", dtype="fp32", quantization="int8")
    assert_llm_only_quantized(model)


@pytest.fixture
def mgm_cli(monkeypatch, capsys):
    def run(args, stdin=""):
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        code = cli.main(args)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def test_every_command_takes_quantize_and_the_release_aliases():
    parser = cli.build_parser()
    for command in (["chat"], ["serve"], ["web"], ["eval"], ["bench"]):
        assert parser.parse_args([*command, "--quantize", "torchao-int8"]).quantize == "torchao-int8"
        assert parser.parse_args([*command, "--load-4bit"]).quantize == "nf4"
        assert parser.parse_args([*command, "--load-8bit"]).quantize == "int8"
        assert parser.parse_args(command).quantize is None
        with pytest.raises(SystemExit):
            parser.parse_args([*command, "--load-4bit", "--quantize", "int8"])


def test_mgm_chat_runs_4bit_on_a_cpu(model_dir, mgm_cli):
    code, out, err = mgm_cli(["chat", "--model", model_dir, "--device", "cpu", "--load-4bit", "--max-new-tokens", "2"],
                             "hello\n")  # fmt: skip
    assert code == 0 and out.count("assistant: ") == 1, err


def test_mgm_bench_measures_a_quantized_preset(mgm_cli, tmp_path):
    args = ["bench", "--device", "cpu", "--quantize", "int8", "--repeats", "1", "--new-tokens", "2"]
    code, _, err = mgm_cli([*args, "--flop-tokens", "2", "--json", str(tmp_path / "b.json")])
    assert code == 0, err
    assert json.loads((tmp_path / "b.json").read_text())["model"] == "preset tiny (random weights), int8"


def test_mgm_quantize_writes_a_checkpoint_that_loads_with_no_config(model_dir, tmp_path, mgm_cli):
    code, out, err = mgm_cli(
        ["quantize", model_dir, str(tmp_path / "q"), "--scheme", "nf4", "--device", "cpu", "--dtype", "fp32"]
    )
    assert code == 0, err
    model = AutoModelForImageTextToText.from_pretrained(tmp_path / "q", device_map="cpu")
    assert_llm_only_quantized(model)
    assert isinstance(mgm.chat(str(tmp_path / "q"), IMAGE, "What?", max_new_tokens=2, device="cpu"), str)
    code, out, _ = mgm_cli(["chat", "--model", str(tmp_path / "q"), "--device", "cpu", "--max-new-tokens", "2"], "hi\n")
    assert code == 0 and out.count("assistant: ") == 1
    code, _, err = mgm_cli(["quantize", str(tmp_path / "q"), str(tmp_path / "q2"), "--scheme", "int8"])
    assert code == 2 and err.startswith(f"mgm quantize: error: {tmp_path / 'q'} is already quantized (nf4)")
    assert len(err.splitlines()) == 1


def test_mgm_quantize_interrupted_while_saving_leaves_no_output(model_dir, tmp_path, mgm_cli, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("disk full")  # after the weights are written, before the processor is

    monkeypatch.setattr(mgm.MiniGeminiProcessor, "save_pretrained", fail)
    code, _, err = mgm_cli(["quantize", model_dir, str(tmp_path / "q"), "--scheme", "nf4", "--device", "cpu"])
    assert code == 2 and err.splitlines()[-1] == "mgm quantize: error: disk full"  # after the progress bars
    assert list(tmp_path.iterdir()) == []  # neither the output nor its staging directory


def test_bad_input_is_one_line(model_dir, mgm_cli, monkeypatch, tmp_path):
    code, _, err = mgm_cli(["chat", "--model", model_dir, "--device", "cpu", "--quantize", "torchao-int4"])
    assert (
        code == 2
        and err == "mgm chat: error: quantization torchao-int4 runs on cuda, not cpu; choose nf4 or int8 there\n"
    )
    real = __import__("importlib").util.find_spec
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    command = ["eval", "--model", model_dir, "--bench", "synthetic", "--device", "cpu", "--out", str(tmp_path / "e")]
    code, _, err = mgm_cli([*command, "--load-8bit"])
    assert (
        code == 2 and err == 'mgm eval: error: quantization int8 needs bitsandbytes: pip install "minigemini[quant]"\n'
    )
    code, _, err = mgm_cli([*command, "--engine", "vllm", "--quantize", "nf4"])  # vLLM loads its own model
    assert code == 2 and err.startswith("mgm eval: error: --quantize loads the model for --engine transformers")


def test_full_training_from_a_4bit_model_is_refused_in_one_line(model_dir, mgm_cli, tmp_path):
    command = ["train", "--model", model_dir, "--data", str(tmp_path / "x.jsonl"), "--output", str(tmp_path / "o")]
    code, _, err = mgm_cli([*command, "--bits", "4"])
    assert (
        code == 2
        and err == "mgm train: error: --bits 4 quantises the LLM, which then trains only through LoRA: add --lora\n"
    )
    saved = str(tmp_path / "nf4")
    assert mgm_cli(["quantize", model_dir, saved, "--scheme", "nf4", "--device", "cpu", "--dtype", "fp32"])[0] == 0
    command[2] = saved  # a checkpoint saved quantized needs no --bits to be 4-bit
    code, _, err = mgm_cli(command)
    assert code == 2 and err == (
        f"mgm train: error: {saved} was saved quantized (nf4) and its quantized weights cannot train: add --lora, "
        "or start from its full-precision checkpoint\n"
    )


def test_an_fp16_load_keeps_the_vision_side_in_fp32_and_answers(model_dir):
    """The price of transformers' `_keep_in_fp32_modules`: in fp16 (MPS, GPUs without bf16) the towers, mining and
    projector load in fp32, the LLM in fp16; the model casts between them."""
    model, processor = load_pretrained(model_dir, device="cpu", dtype="fp16")
    assert next(model.model.vision_tower_aux.parameters()).dtype == torch.float32
    assert model.model.language_model.layers[0].mlp.down_proj.weight.dtype == torch.float16
    assert isinstance(mgm.chat(model, IMAGE, "What?", processor=processor, max_new_tokens=2), str)


def test_quantized_default_model_scores_near_full_precision(tmp_path):
    """`mgm eval --bench synthetic` on the default model, a small sample: int8 and nf4 stay near full precision (the
    issue's bounds, 2 and 8 points, are measured on 200 questions in benchmarks/RESULTS.md; these are looser)."""
    from minigemini.synthetic.default_model import default_checkpoint

    checkpoint, scores = str(default_checkpoint()), {}
    for mode in ("full", "int8", "nf4"):
        command = ["eval", "--model", checkpoint, "--bench", "synthetic", "--synthetic-n", "24", "--device", "cpu"]
        command += ["--out", str(tmp_path / mode)] + ([] if mode == "full" else ["--quantize", mode])
        assert cli.main(command) == 0
        scores[mode] = json.loads((tmp_path / mode / "scores.json").read_text())["metrics"]["accuracy"]
    assert scores["full"] > 0.3  # the model answers: the bounds below mean something
    assert abs(scores["int8"] - scores["full"]) <= 0.15 and abs(scores["nf4"] - scores["full"]) <= 0.25, scores
