"""bf16 autocast against fp32 on this CPU, in one run: what ``precision: auto`` (minigemini/precision.py) decides from.

Two measurements, each the median of ``--repeats`` timings after one warm-up:
  matmul       a 1024 x 1024 matrix product (GFLOP/s)
  tower step   one training step of the default model's encoder pre-training (both towers, a batch of ``--batch``
               64 px / 192 px images and captions: forward, backward, AdamW), as `mgm train --recipe synthetic` runs it

    python benchmarks/bench_precision.py

Nothing is downloaded: random weights and inputs in the default model's shapes (speed does not depend on values).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minigemini.precision import cpu_has_fast_bf16, resolve_precision
from minigemini.synthetic.default_model import synthetic_config
from minigemini.synthetic.recipe.encoders import ContrastiveTowers

SMOLLM2_SHAPE = {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                 "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152}  # fmt: skip


def timed(work, repeats: int) -> float:
    work()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def matmul(bf16: bool, repeats: int) -> float:
    a = torch.randn(1024, 1024)

    def work():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            a @ a

    return 2 * 1024**3 / timed(work, repeats) / 1e9


def tower_step(bf16: bool, batch: int, repeats: int) -> float:
    torch.manual_seed(0)
    config = synthetic_config(SMOLLM2_SHAPE, "mining")
    towers = ContrastiveTowers(config, vocab_size=200, embed_dim=256, max_words=24)
    optimizer = torch.optim.AdamW(towers.parameters(), lr=1e-4)
    low = torch.randn(batch, 3, config.vision_config.image_size, config.vision_config.image_size)
    high = torch.randn(batch, 3, config.image_size_aux, config.image_size_aux)
    ids = torch.randint(1, 200, (batch, 24))

    def work():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = towers(low, high, ids)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return timed(work, repeats)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads; bf16 "
          f"kernels: {cpu_has_fast_bf16()}; precision auto -> {resolve_precision('auto', on_cpu=True)}")  # fmt: skip
    fp32, bf16 = matmul(False, args.repeats), matmul(True, args.repeats)
    rows = [("matmul 1024^2 (GFLOP/s)", fp32, bf16, fp32 / bf16)]  # a rate: higher is faster
    fp32, bf16 = tower_step(False, args.batch, args.repeats), tower_step(True, args.batch, args.repeats)
    rows.append((f"tower step, batch {args.batch} (s)", fp32, bf16, bf16 / fp32))  # a time: lower is faster
    print("| measurement | fp32 | bf16 autocast | fp32 faster by |\n| --- | --- | --- | --- |")
    for name, fp32, bf16, speedup in rows:
        print(f"| {name} | {fp32:.3g} | {bf16:.3g} | {speedup:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
