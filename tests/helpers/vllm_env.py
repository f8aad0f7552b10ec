"""Helpers for the vLLM tests: the vLLM environment, tiny checkpoints vLLM's CPU kernels accept, references.

vLLM's CPU build pins transformers < 5.20, so it lives in its own environment (`make vllm-venv`: `.venv-vllm`, this
package installed there without dependencies). The tests run here, in the project's environment: they build tiny
checkpoints and the project's own `generate()` answers, then run a script in the vLLM environment that starts a real
engine on them. `MGM_VLLM_PYTHON` points at another environment's python.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer

from minigemini import MiniGeminiForConditionalGeneration, MiniGeminiImageProcessor, MiniGeminiProcessor
from tests.conftest import CHATML_TEMPLATE, build_tokenizer, tiny_config
from tests.helpers.serving import free_port

ROOT = Path(__file__).resolve().parents[2]
VLLM_PYTHON = Path(os.environ.get("MGM_VLLM_PYTHON") or ROOT / ".venv-vllm" / "bin" / "python")
#: vLLM's CPU engine, sized for tiny models and a shared 2-core machine (KV cache in GiB: VLLM_CPU_KVCACHE_SPACE)
VLLM_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_LOGGING_LEVEL": "WARNING", "TOKENIZERS_PARALLELISM": "false"}


def vllm_python() -> Path:
    """The vLLM environment's python; the tests fail (never skip) when it is missing, except on a CPU vLLM's CPU
    build cannot run on (x86 without AVX2: it ships AVX2 and AVX-512 kernels only), where they skip saying so."""
    cpuinfo = Path("/proc/cpuinfo")
    if platform.machine() in ("x86_64", "AMD64") and cpuinfo.is_file() and " avx2" not in cpuinfo.read_text():
        pytest.skip("this CPU lacks AVX2, which vLLM's CPU build (vllm-cpu) needs")
    if not VLLM_PYTHON.is_file():
        pytest.fail(
            f"no vLLM environment at {VLLM_PYTHON.parent.parent}: build it with `make vllm-venv` (or set MGM_VLLM_PYTHON)"
        )
    return VLLM_PYTHON


def vllm_environment(**extra: str) -> dict[str, str]:
    return {**os.environ, **VLLM_ENV, **extra}


def run_vllm_script(script: Path, job: dict, workdir: Path, timeout: float) -> dict:
    """Run `script JOB.json OUT.json` in the vLLM environment; its JSON answer (stderr shown if it fails)."""
    job_file, out_file = workdir / "job.json", workdir / "out.json"
    job_file.write_text(json.dumps(job))
    result = subprocess.run(
        [str(vllm_python()), str(script), str(job_file), str(out_file)],
        cwd=workdir, env=vllm_environment(), capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    if result.returncode != 0 or not out_file.is_file():
        sys.stderr.write(result.stdout[-5000:] + result.stderr[-20000:])
        pytest.fail(f"{script.name} failed in the vLLM environment (exit {result.returncode}); its output is above")
    return json.loads(out_file.read_text())


def save_tiny_vllm_mgm(path: Path, family: str = "llama", hd: bool = False, seed: int = 0):
    """A random Mini-Gemini like `tests.helpers.serving.save_tiny_mgm` (ChatML tokenizer, processor), with attention
    heads of 32: the smallest head size vLLM's CPU attention has kernels for. Returns (model, processor)."""
    build_tokenizer(path, chat_template=CHATML_TEMPLATE)
    tokenizer = AutoTokenizer.from_pretrained(path)
    shape = tiny_config(family, hd)
    image_processor = MiniGeminiImageProcessor(
        image_size=shape.vision_config.image_size,
        image_size_aux=shape.image_size_aux,
        image_grid=shape.image_grid,
        image_global=shape.image_global,
    )
    processor = MiniGeminiProcessor(image_processor, tokenizer, image_seq_length=shape.image_seq_length)
    text_config = {
        **shape.text_config.to_dict(),
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 32,
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    config = tiny_config(family, hd, image_token_id=processor.image_token_id, text_config=text_config)
    torch.manual_seed(seed)
    model = MiniGeminiForConditionalGeneration(config).eval()
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return model, processor


def noise_image(path: Path, size: tuple[int, int], seed: int) -> Path:
    """A random RGB picture saved as PNG (lossless: both engines read the same pixels)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def vllm_prompt_ids(input_ids: list[int], image_token_id: int, image_seq_length: int) -> list[int]:
    """The processor's ids with each image's `image_seq_length` expanded tokens folded back to one `<image>` (vLLM
    expands it); two images may be adjacent (a tokenizer that drops the newline between them)."""
    folded: list[int] = []
    run = 0
    for token in [*input_ids, None]:
        if token == image_token_id:
            run += 1
            continue
        if run:
            assert run % image_seq_length == 0, f"a run of {run} image tokens is not whole images"
            folded += [image_token_id] * (run // image_seq_length)
            run = 0
        if token is not None:
            folded.append(token)
    return folded


def reference_request(model, processor, question: str, images: list[Path], max_tokens: int) -> dict:
    """One chat turn through the project's processor and greedy `generate()`: the request for vLLM (prompt ids
    with one `<image>` per image, image paths), the tokens `generate()` answered and the log-probabilities of its
    first step over the vocabulary."""
    prompt = processor.apply_chat_template([{"role": "user", "content": "<image>\n" * len(images) + question}])
    pictures = [Image.open(path).convert("RGB") for path in images]
    inputs = processor(text=prompt, images=pictures or None)
    with torch.inference_mode():
        output = model.generate(
            **inputs, max_new_tokens=max_tokens, do_sample=False, output_scores=True, return_dict_in_generate=True
        )
    prompt_ids = inputs["input_ids"][0].tolist()
    return {
        "prompt_token_ids": vllm_prompt_ids(prompt_ids, processor.image_token_id, processor.image_seq_length),
        "images": [str(path) for path in images],
        "max_tokens": max_tokens,
        "reference": output.sequences[0, len(prompt_ids) :].tolist(),
        "first_logprobs": output.scores[0][0].float().log_softmax(-1).tolist(),
    }


def vllm_cpu_int8_dtype() -> str:
    """The dtype vLLM's CPU int8 kernel (`CPUInt8ScaledMMLinearKernel`) runs in on this CPU: bfloat16 where the CPU
    has AMX (vLLM then takes its AMX kernel, which refuses fp32 and aborts in fp16 without AMX-FP16), float32 where
    it has none (oneDNN). A CPU that reports AMX while the OS does not grant it to processes (arch_prctl
    ARCH_REQ_XCOMP_PERM, which torch's `_init_amx` asks) is skipped, saying so: vLLM picks its AMX kernel there by
    CPUID alone, and the worker dies with SIGILL."""
    if not torch.cpu._is_amx_tile_supported():
        return "float32"
    if torch.cpu._init_amx():
        return "bfloat16"
    pytest.skip("this CPU reports AMX but the OS does not grant it: vLLM's CPU int8 kernel would die with SIGILL")


@contextlib.contextmanager
def vllm_server(model_dir: Path, log: Path, *args: str, startup_timeout: float = 600):
    """vLLM's OpenAI-compatible server on `model_dir`, from the vLLM environment, on a free port; yields its base URL.

    It is the server `vllm serve` runs, started as `python -m vllm.entrypoints.openai.api_server`: the `vllm` command
    of vllm-cpu 0.32.0 exits at once (it looks up the version of a distribution named `vllm`, which vllm-cpu is not).
    """
    port = free_port()
    command = [str(vllm_python()), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
               "--port", str(port), "--host", "127.0.0.1", *args]  # fmt: skip
    with open(log, "w") as output:
        server = subprocess.Popen(
            command, env=vllm_environment(), stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(server, url, log, startup_timeout, "the vLLM server")
        yield url
    finally:
        stop_process_group(server)


def wait_until_healthy(server: subprocess.Popen, url: str, log: Path, timeout: float, name: str) -> None:
    """Poll ``url``/health until the server we started answers 200; fail with its log if it exits or is too slow."""
    deadline = time.monotonic() + timeout
    while True:
        if server.poll() is not None:
            pytest.fail(f"{name} exited ({server.returncode}) while starting:\n{log.read_text()[-6000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"{name} did not start in {timeout:.0f} s:\n{log.read_text()[-6000:]}")
        time.sleep(0.5)


def stop_process_group(process: subprocess.Popen, grace: float = 30) -> None:
    """SIGTERM to the server we started and to its engine processes (its own session), SIGKILL if they linger."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def data_url(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()
