"""Training data loader memory and speed: LLaVA JSON (read whole) vs Parquet and WebDataset shards (streamed), side by side.

For each size (default 10k and 100k synthetic samples: a caption or a two-turn dialogue on a small image, some
text-only) the data is written once as JSONL + an image folder, then converted with `mgm data shard` (1000 records a
shard).  Each loader then runs in a fresh process, as training runs it: the stage-2 dataset (SupervisedDataset, or
ShardStream with a 1000-sample shuffle buffer), the collator, a DataLoader with 2 workers and micro-batches of 8.  Per
loader:

- memory: the largest proportional set size (PSS: shared pages split between processes) of the main process plus its
  workers, sampled at every batch while ``--samples`` samples are loaded;
- startup: seconds from nothing to the first batch (the JSON path reads, checks and tokenises every record first);
- samples/s: after the first batch.

Each loader runs ``--repeats`` times, interleaved with the others; the table gives its largest memory, shortest
startup and best speed.

    python benchmarks/bench_data.py                       # 10k and 100k, in a scratch folder under /tmp
    python benchmarks/bench_data.py --sizes 2000 --samples 800 --workdir /tmp/bench-data   # a quick look

The target (issue 43): the shard formats' memory grows by at most 10 % from 10k to 100k samples, and their samples/s
are at least the JSON path's.  Run from the repository root (it builds a tiny tokenizer with the tests' helpers).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FORMATS = ("json", "parquet", "webdataset")


def make_data(folder: str, size: int) -> str:
    """JSONL of ``size`` records over a pool of 256 small images; returns its path (kept between runs)."""
    import numpy as np
    from PIL import Image

    path = os.path.join(folder, f"data-{size}.jsonl")
    if os.path.exists(path):
        return path
    images = os.path.join(folder, "images")
    os.makedirs(images, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(256):
        name = os.path.join(images, f"{index}.png")
        if not os.path.exists(name):
            base = np.linspace(0, 255, 48 * 48 * 3).reshape(48, 48, 3) + rng.integers(0, 40, (48, 48, 3))
            Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(name)
    words = ["a", "red", "cat", "sits", "on", "the", "blue", "sofa", "near", "two", "small", "dogs", "ball", "room"]
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        for index in range(size):
            text = " ".join(rng.choice(words, size=int(rng.integers(8, 40))))
            turns = [{"from": "human", "value": "<image>\nDescribe the picture."}, {"from": "gpt", "value": text}]
            record = {"id": str(index), "conversations": turns, "image": f"{index % 256}.png"}
            if index % 10 == 9:  # text-only
                record.pop("image")
                turns[0]["value"] = "Tell me something."
            f.write(json.dumps(record) + "\n")
    os.replace(path + ".tmp", path)
    return path


def make_shards(folder: str, data: str, size: int, fmt: str) -> str:
    from minigemini.datatools.shard import write_shards

    out = os.path.join(folder, f"{fmt}-{size}")
    if not os.path.exists(os.path.join(out, "manifest.json")):
        write_shards([data], out, [os.path.join(folder, "images")], fmt, 1000, progress=False)
    return out


def measure(args) -> None:
    """One loader in this process: print a JSON line of its figures."""
    import psutil
    import torch

    sys.path.insert(0, ROOT)
    from minigemini.data import MiniGeminiCollator, SupervisedDataset
    from minigemini.data.stream import ShardStream
    from tests.helpers.training import make_processor, make_tokenizer

    torch.set_num_threads(1)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    processor = make_processor(make_tokenizer(os.path.join(args.workdir, "tokenizer")), "vicuna_v1")
    collate = MiniGeminiCollator(pad_token_id=processor.tokenizer.pad_token_id)
    started = time.perf_counter()
    if args.measure == "json":
        dataset = SupervisedDataset(args.path, processor, os.path.join(args.workdir, "images"), "vicuna_v1", 512)
        loader = torch.utils.data.DataLoader(dataset, batch_size=8, shuffle=True, num_workers=2, collate_fn=collate)
    else:
        dataset = ShardStream(args.path, processor, "vicuna_v1", 512, batch_size=8, num_workers=2, buffer_size=1000)
        loader = dataset.loader(collate)
    me = psutil.Process()

    def pss() -> int:
        total = 0
        for process in [me, *me.children(recursive=True)]:
            try:
                total += process.memory_full_info().pss
            except psutil.Error:
                pass
        return total

    peak, seen, first = 0, 0, None
    for batch in loader:
        if first is None:
            first = time.perf_counter()
        seen += batch["data_stats"]["samples"]
        peak = max(peak, pss())
        if seen >= args.samples:
            break
    done = time.perf_counter()
    print(json.dumps({"pss_mib": peak / 2**20, "startup_s": first - started, "rate": seen / (done - first)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--samples", type=int, default=4000, help="samples loaded per loader")
    parser.add_argument("--workdir", default=None, help="scratch folder (data is kept there between runs)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per loader, interleaved (best speed, most memory)")
    parser.add_argument("--measure", choices=FORMATS, help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        return measure(args)
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench-data-")
    os.makedirs(workdir, exist_ok=True)
    paths = {}
    for size in args.sizes:
        data = make_data(workdir, size)
        for fmt in FORMATS:
            paths[fmt, size] = data if fmt == "json" else make_shards(workdir, data, size, fmt)
    results: dict[tuple[str, int], dict] = {}
    for _ in range(args.repeats):  # interleaved, so that a busy spell on a shared machine hits every loader alike
        for (fmt, size), path in paths.items():
            command = [sys.executable, os.path.abspath(__file__), "--measure", fmt, "--path", path,
                       "--workdir", workdir, "--samples", str(args.samples)]  # fmt: skip
            finished = subprocess.run(command, check=False, capture_output=True, text=True, cwd=ROOT)
            if finished.returncode:
                sys.exit(f"{fmt} {size}: the loader failed:\n{finished.stderr[-3000:]}")
            run = json.loads(finished.stdout.strip().splitlines()[-1])
            print(f"{fmt:>10} {size:>7}: {run}", file=sys.stderr)
            best = results.setdefault((fmt, size), run)
            best.update(pss_mib=max(best["pss_mib"], run["pss_mib"]), startup_s=min(best["startup_s"], run["startup_s"]),
                        rate=max(best["rate"], run["rate"]))  # fmt: skip
    small, large = min(args.sizes), max(args.sizes)
    print(f"\n| loader | PSS at {small:,} (MiB) | PSS at {large:,} (MiB) | growth | startup {small:,} / {large:,} (s) "
          f"| samples/s at {small:,} / {large:,} |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- |")
    for fmt in FORMATS:
        a, b = results[fmt, small], results[fmt, large]
        growth = 100 * (b["pss_mib"] / a["pss_mib"] - 1)
        print(f"| {fmt} | {a['pss_mib']:.0f} | {b['pss_mib']:.0f} | {growth:+.1f} % | {a['startup_s']:.1f} / "
              f"{b['startup_s']:.1f} | {a['rate']:.0f} / {b['rate']:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
