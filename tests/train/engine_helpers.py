"""Launching the distributed test runs: 2 processes over gloo on CPU, one launch per engine (tests/train/
engine_worker.py runs several TrainConfigs in the same processes), and reading what they wrote."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from minigemini.train.run import find_checkpoints

ROOT = Path(__file__).resolve().parents[2]
WORKER = ROOT / "tests" / "train" / "engine_worker.py"
DISTRIBUTED = ROOT / "recipes" / "distributed"
ENV = {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}

#: engine -> TrainConfig settings that select it (DDP: none; torchrun's processes make it DDP)
ENGINES = {
    "ddp": {},
    "fsdp": {"fsdp": "full_shard auto_wrap"},
    "zero2": {"deepspeed": str(DISTRIBUTED / "zero2.json")},
    "zero2_offload": {"deepspeed": str(DISTRIBUTED / "zero2_offload.json")},
    "zero3": {"deepspeed": str(DISTRIBUTED / "zero3.json")},
}


def environment() -> dict[str, str]:
    return {**os.environ, **ENV, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *args]


def write_plan(path: Path, runs: list[dict], step_delay: float = 0.0) -> Path:
    path.write_text(json.dumps({"runs": runs, "step_delay": step_delay}))
    return path


def run_plan(plan: Path, log: Path, launcher: list[str] | None = None, timeout: float = 400) -> None:
    """Train a plan's runs in 2 processes (``--standalone`` torchrun unless ``launcher`` is given); fail with the log."""
    command = (launcher or torchrun("--standalone", "--nproc_per_node", "2")) + [str(WORKER), str(plan)]
    with open(log, "wb") as out:
        done = subprocess.run(
            command, check=False, cwd=ROOT, env=environment(), stdout=out, stderr=out, timeout=timeout
        )
    assert done.returncode == 0, log.read_text(errors="replace")[-5000:]


def start_and_kill_rank(plan: Path, output: str, log: Path, rank: int = 1) -> int:
    """Start a plan, SIGKILL one rank as soon as ``output`` has a complete checkpoint; returns that checkpoint's step."""
    command = torchrun("--standalone", "--nproc_per_node", "2") + [str(WORKER), str(plan)]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=environment(), stdout=out, stderr=out)
        try:
            deadline = time.monotonic() + 300
            while True:
                complete = [path for path, done in find_checkpoints(output) if done]
                if complete:
                    pid = int(Path(f"{output}.pid{rank}").read_text())
                    os.kill(pid, signal.SIGKILL)
                    break
                assert process.poll() is None, f"ended before a checkpoint: {log.read_text(errors='replace')[-3000:]}"
                assert time.monotonic() < deadline, "no checkpoint within 300 s"
                time.sleep(0.05)
            process.wait(timeout=120)  # torchrun stops the other rank and fails
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode != 0
    assert not os.path.exists(os.path.join(output, "model.safetensors")), "killed after the end of the run"
    return int(os.path.basename(complete[-1]).rsplit("-", 1)[1])


def losses(output) -> dict[int, float]:
    """Logged loss per step; a resumed run's entries (appended later) replace the killed run's."""
    by_step = {}
    with open(os.path.join(output, "train_log.jsonl"), encoding="utf-8") as f:
        for record in map(json.loads, f):
            if "loss" in record:
                by_step[record["step"]] = record["loss"]
    return by_step


def summary(output) -> dict:
    with open(os.path.join(output, "train_summary.json"), encoding="utf-8") as f:
        return json.load(f)
