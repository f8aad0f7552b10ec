"""Questions per second of `mgm eval` on each engine, on the same questions, side by side in one run.

Engines: transformers (in process), vllm (in process, in the vLLM environment), and the endpoint engine against
`mgm serve` and against vLLM's OpenAI-compatible server with the plugin.  Each is a real `mgm eval` command on the
synthetic benchmark (or --bench/--data); the rate is the runner's own (answering only: model loading and engine
start-up are timed apart, as `startup_s`).  Beside each: accuracy and the share of answers identical to the
transformers engine's.

    python benchmarks/bench_eval.py --model default --n 40 --json benchmarks/bench_eval.json
    python benchmarks/bench_eval.py --model runs/mgm-7b --dtype bf16 --engines transformers vllm  # on a GPU

vLLM's environment: MGM_VLLM_PYTHON or .venv-vllm/bin/python (`make vllm-venv`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from minigemini.cli.options import model_directory
from minigemini.evaluation.runner import read_predictions
from minigemini.synthetic.benchmark import write_synthetic_benchmark

VLLM_PYTHON = Path(os.environ.get("MGM_VLLM_PYTHON") or ROOT / ".venv-vllm" / "bin" / "python")
ENGINES = ("transformers", "vllm", "endpoint:mgm-serve", "endpoint:vllm-serve")
_RATE = re.compile(r"\] (\d+)/(\d+) \(([\d.]+) questions/s\)")
_ENV = {"VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_LOGGING_LEVEL": "WARNING", "TOKENIZERS_PARALLELISM": "false"}


def _env() -> dict[str, str]:
    return {
        **os.environ,
        **_ENV,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def _server(command: list[str], port: int, log: Path, timeout: float = 900):
    with open(log, "w") as output:
        process = subprocess.Popen(command, env=_env(), stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    started = time.perf_counter()
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{command[2]} exited ({process.returncode}): {log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            if time.perf_counter() - started > timeout:
                raise RuntimeError(f"the server did not start in {timeout:.0f} s: {log.read_text()[-3000:]}")
            time.sleep(1)
        yield f"http://127.0.0.1:{port}/v1", time.perf_counter() - started
    finally:
        os.killpg(process.pid, 15)
        process.wait(60)


def _mgm_eval(python: Path, arguments: list[str], out: Path) -> dict:
    started = time.perf_counter()
    result = subprocess.run(
        [str(python), "-m", "minigemini.cli", "eval", *arguments, "--out", str(out), "--allow-partial"],
        env=_env(), capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"mgm eval failed ({result.returncode}): {result.stderr[-3000:]}")
    rates = _RATE.findall(result.stderr)
    _, total, rate = rates[-1]
    scores = json.loads((out / "scores.json").read_text())
    wall = time.perf_counter() - started
    answers = {q: r.get("prediction") for q, r in read_predictions(out / "predictions.jsonl").items()}
    questions = int(total)
    return {"questions": questions, "questions_per_s": float(rate), "wall_s": round(wall, 1),
            "startup_s": round(wall - questions / float(rate), 1), "metrics": scores["metrics"], "answers": answers}  # fmt: skip


def run_engine(engine: str, common: list[str], model: str, work: Path, args) -> dict:
    out = work / engine.replace(":", "-")
    python = Path(sys.executable)
    if engine == "transformers":
        return _mgm_eval(python, ["--model", model, "--device", args.device, *common], out)
    vllm_args = ["--vllm-arg", "enforce_eager=true"] if args.device == "cpu" else []
    if engine == "vllm":
        return _mgm_eval(VLLM_PYTHON, ["--engine", "vllm", "--model", model, *vllm_args, *common], out)
    port = _free_port()
    if engine == "endpoint:mgm-serve":
        command = [str(python), "-m", "minigemini.cli", "serve", "--model", model, "--port", str(port),
                   "--device", args.device, "--dtype", args.dtype, "--batch-wait-ms", "5"]  # fmt: skip
    else:
        command = [str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--port", str(port),
                   "--host", "127.0.0.1", "--dtype", {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}.get(
                       args.dtype, "auto")] + (["--enforce-eager"] if args.device == "cpu" else [])  # fmt: skip
    with _server(command, port, work / f"{out.name}.log") as (url, startup):
        result = _mgm_eval(python, ["--endpoint", url, "--concurrency", str(args.concurrency), *common], out)
    return {**result, "startup_s": round(startup, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default", help="model directory (default: the default model)")
    parser.add_argument("--bench", default="synthetic")
    parser.add_argument("--data", default=None, help="benchmark data (default: the synthetic set, --n questions)")
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    model = str(model_directory(args.model))
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as folder:
        work = Path(folder)
        data = args.data or str(write_synthetic_benchmark(work / "bench", n=args.n, seed=0))
        common = ["--bench", args.bench, "--data", data, "--dtype", args.dtype]
        results = {engine: run_engine(engine, common, model, work, args) for engine in args.engines}
    reference = results.get("transformers", {}).get("answers")
    print("| engine | questions | questions/s | start-up s | metrics | identical to transformers |")
    print("|---|---|---|---|---|---|")
    for engine, result in results.items():
        answers = result.pop("answers")
        same = None if reference is None else sum(reference.get(q) == a for q, a in answers.items()) / len(answers)
        result["identical_to_transformers"] = same
        print(f"| {engine} | {result['questions']} | {result['questions_per_s']:.2f} | {result['startup_s']} | "
              f"{json.dumps(result['metrics'])} | {'–' if same is None else f'{same:.0%}'} |")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "device": args.device, "dtype": args.dtype,
                                               "results": results}, indent=2) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
