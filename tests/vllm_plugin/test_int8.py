"""`mgm quantize --scheme w8a8-int8` writes a checkpoint that a real vLLM engine (vLLM's CPU build, in its own
environment) serves through the plugin with the LLM in int8: the engine builds the LLM's layers with vLLM's int8
kernel and the vision side in full precision, and its answers stay close to the full-precision model's `generate()`
(fp32, transformers) in a batch mixing requests with one image, two and none. One engine (about 20-30 s to start).

int8 weights and per-token int8 activations change the logits slightly, so the check is not token equality: the
first step's top log-probabilities are within a quarter of the spread (std over the vocabulary) of the reference's
log-probabilities, and each greedy answer starts with one of the reference's five likeliest tokens. Measured (error /
spread, worst request): 0.03 with vLLM's AMX kernel in bf16, 0.01 with oneDNN in fp32, 0.12 with oneDNN limited to
AVX-512 without VNNI (ONEDNN_MAX_CPU_ISA=AVX512_CORE); another model's log-probabilities are 4-5 spreads away.
"""

from pathlib import Path

import pytest
import torch

from minigemini.cli import main
from minigemini.w8a8_int8 import SCHEME
from tests.helpers.vllm_env import (
    noise_image,
    reference_request,
    run_vllm_script,
    save_tiny_vllm_mgm,
    vllm_cpu_int8_dtype,
    vllm_python,
)

SCRIPT = Path(__file__).with_name("int8_script.py")
MAX_TOKENS = 8
QUESTIONS = [
    ("What is in this picture?", [0]),
    ("Which of the two is brighter?", [0, 1]),
    ("Tell me a story about a cat.", []),
    ("What is in this picture?", [1]),
    ("Say hello.", []),
    ("Describe it.", [0]),
]


@pytest.fixture(scope="module")
def int8_run(tmp_path_factory):
    vllm_python()
    dtype = vllm_cpu_int8_dtype()
    root = tmp_path_factory.mktemp("vllm-int8")
    model, processor = save_tiny_vllm_mgm(root / "mgm", "llama", seed=0)
    # saved in another dtype than the engine's: the plugin runs the whole image side in the engine's dtype
    saved_dtype = "fp32" if dtype == "bfloat16" else "bf16"
    assert main(["quantize", str(root / "mgm"), str(root / "int8"), "--scheme", SCHEME, "--dtype", saved_dtype]) == 0
    images = [noise_image(root / f"image{i}.png", size, seed=i) for i, size in enumerate([(40, 30), (24, 52)])]
    requests = [reference_request(model, processor, question, [images[i] for i in which], MAX_TOKENS)
                for question, which in QUESTIONS]  # fmt: skip
    job = {"model": str(root / "int8"), "dtype": dtype, "max_tokens": MAX_TOKENS, "requests": requests}
    return run_vllm_script(SCRIPT, job, root, timeout=600), requests, dtype


def test_the_engine_runs_the_llm_with_vllms_int8_kernel_and_the_image_side_in_its_own_dtype(int8_run):
    result, _, dtype = int8_run
    int8 = ["CompressedTensorsW8A8Int8", "CPUInt8ScaledMMLinearKernel"]
    assert result["llm_layers"] == {kind: int8 for kind in ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")}
    assert result["vision_dtypes"] == [f"torch.{dtype}"]  # the engine's, not the checkpoint's


def test_int8_first_step_log_probabilities_are_close_to_the_full_precision_models(int8_run):
    result, requests, _ = int8_run
    for served, request in zip(result["first_logprobs"], requests, strict=True):
        reference = torch.tensor(request["first_logprobs"])
        errors = [abs(logprob - reference[int(token)].item()) for token, logprob in served.items()]
        assert max(errors) <= 0.25 * reference.std().item(), (errors, reference.std().item())
        assert int(reference.argmax()) in map(int, served)  # the reference's choice is among the engine's top 5


def test_each_int8_greedy_answer_starts_with_a_token_the_full_precision_model_ranks_in_its_top_five(int8_run):
    result, requests, _ = int8_run
    for answer, request in zip(result["tokens"], requests, strict=True):
        assert len(answer) == MAX_TOKENS
        assert answer[0] in torch.tensor(request["first_logprobs"]).topk(5).indices.tolist(), answer
