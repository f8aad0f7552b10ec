"""Full precision, int8 and nf4 side by side on the default model, in one run: what `--quantize` costs and saves.

For each mode (each in its own process, so that its peak memory is its own):
  footprint     the loaded model's weights and buffers (``model.get_memory_footprint()``)
  peak          the weights plus the high-water mark of one generate() (``profiling.peak_memory_bytes``: what torch
                allocates, on a CPU as on CUDA; the loading's own transient not included)
  prefill       prompt tokens per second of one forward pass over an image prompt (batch 1)
  decode        generated tokens per second (``--new-tokens`` greedy tokens, prefill time taken out)
  score         `mgm eval --bench synthetic` on ``--n`` questions of the synthetic world (the same questions for all)

    python benchmarks/bench_quantized.py --n 200 [--device cpu] [--modes full int8 nf4] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def speeds(model, new_tokens: int, repeats: int = 3) -> tuple[float, float, int]:
    """(prefill tokens/s, decode tokens/s, peak bytes above the weights) at batch 1 on a random image prompt in the
    model's shapes; decode from two generate() lengths (1 and ``new_tokens``), so that the prefill cancels out."""
    import torch

    from minigemini.profiling import median_time, peak_memory_bytes, random_inputs

    dtype = next(model.model.vision_tower.parameters()).dtype
    inputs = random_inputs(model.config, 1, 32, model.device, dtype)

    def generate(tokens: int):
        return model.generate(**inputs, min_new_tokens=tokens, max_new_tokens=tokens, do_sample=False)

    with torch.inference_mode():
        prefill = median_time(lambda: model(**inputs), repeats, model.device)
        first, whole = (median_time(lambda n=n: generate(n), repeats, model.device) for n in (1, new_tokens))
        transient = peak_memory_bytes(lambda: generate(new_tokens), model.device)  # warm by now: nf4 is repacked
    return inputs["input_ids"].shape[1] / prefill, (new_tokens - 1) / (whole - first), transient


def one_mode(mode: str, args) -> dict:
    from minigemini.loading import load_pretrained, resolve_device
    from minigemini.synthetic.default_model import default_checkpoint

    checkpoint = str(default_checkpoint())
    device = resolve_device(args.device)
    quantization = None if mode == "full" else mode
    model, _ = load_pretrained(checkpoint, device=device, dtype=args.dtype, quantization=quantization)
    footprint = model.get_memory_footprint()
    model_dtype = next(model.model.vision_tower.parameters()).dtype
    prefill, decode, transient = speeds(model, args.new_tokens)
    peak = footprint + transient
    del model
    row = {"mode": mode, "device": str(device), "dtype": str(model_dtype).removeprefix("torch.")}
    row.update(footprint_mib=round(footprint / 2**20, 1), peak_mib=round(peak / 2**20, 1))
    row.update(prefill_tok_s=round(prefill, 1), decode_tok_s=round(decode, 2), questions=args.n)
    if args.n:
        row.update(score(checkpoint, quantization, args))
    return row


def score(checkpoint: str, quantization: str | None, args) -> dict:
    """`mgm eval --bench synthetic` on ``args.n`` questions: its metrics and seconds."""
    from minigemini import cli

    with tempfile.TemporaryDirectory() as out:
        command = ["eval", "--model", checkpoint, "--bench", "synthetic", "--synthetic-n", str(args.n), "--device",
                   args.device, "--dtype", args.dtype, "--out", out, "--batch-size", str(args.batch_size)]  # fmt: skip
        if quantization:
            command += ["--quantize", quantization]
        started = time.perf_counter()
        if cli.main(command) not in (0, None):
            raise SystemExit(f"mgm {' '.join(command)} failed")
        seconds = time.perf_counter() - started
        return {"score": json.loads((Path(out) / "scores.json").read_text())["metrics"], "eval_s": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", nargs="+", default=["full", "int8", "nf4"])
    parser.add_argument("--n", type=int, default=200, help="synthetic questions (0: speed and memory only)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto", help="dtype of the full-precision parts (auto as for loading)")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(one_mode(args.one, args)), flush=True)
        return
    rows = []
    for mode in args.modes:
        command = [sys.executable, __file__, *sys.argv[1:], "--one", mode]
        done = subprocess.run(command, check=False, capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode or not lines:
            sys.exit(f"{mode} failed:\n{done.stderr[-4000:]}")
        rows.append(json.loads(lines[-1].removeprefix("RESULT ")))
        print(rows[-1], file=sys.stderr, flush=True)
    keys = ["mode", "footprint_mib", "peak_mib", "prefill_tok_s", "decode_tok_s", "score", "eval_s"][
        : 7 if args.n else 5
    ]
    print("| " + " | ".join(keys) + " |\n| " + " | ".join("---" for _ in keys) + " |")
    for row in rows:
        print("| " + " | ".join(str(row[key]) for key in keys) + " |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
