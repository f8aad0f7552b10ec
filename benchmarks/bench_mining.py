"""Patch info mining: the folded form (model default) vs the literal Eq. 1, side by side in one run.

Shapes of the release: N = 576 LR tokens (CLIP-L/14 at 336 px), C = 1024, HR map 2880 x 192 x 192 (ConvNeXt-L at
768 px, 8x8 cells per token); HD: 5 x 576 queries over a 384 x 384 map (1536 px). One full copy of the HR map is
timed too, as the memory floor (mining must read the map at least once), and the HR encoder itself (ConvNeXt-L,
random weights, at the same HR size), since the paper's Table 2 compares mining with it. Peak memory of each form is
measured in a child process of its own (peak resident set size above the inputs, Linux; on a GPU the peak of
allocated GPU memory above the inputs).

    python benchmarks/bench_mining.py [--hd] [--repeats 3] [--dtype float32|bfloat16] [--no-encoder] [--device cuda]
"""

import argparse
import json
import subprocess
import sys
import time

import torch
from transformers import ConvNextConfig

from minigemini.encoders import HighResEncoder
from minigemini.mining import PatchInfoMining, hr_views, mine_views


def best_of(fn, repeats: int, device: torch.device) -> float:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return min(times)


def inputs(hd: bool, dtype: torch.dtype, device: torch.device):
    torch.manual_seed(0)
    mining = PatchInfoMining(1024, 2880, 1024).to(device, dtype).eval()
    side = 384 if hd else 192
    # The ConvNeXt emits its map channels-last in memory; build the input the same way.
    hr_map = torch.randn(1, side, side, 2880, dtype=dtype, device=device).permute(0, 3, 1, 2)
    lr = torch.randn(5 if hd else 1, 576, 1024, dtype=dtype, device=device)
    return mining, hr_map, lr


def forms(mining: PatchInfoMining, hr_map: torch.Tensor, lr: torch.Tensor, hd: bool) -> dict:
    """The model's path (HD: the crops' tokens mine the whole map) and the literal Eq. 1 on cut views."""
    grid = 2 if hd else 1
    return {
        "folded": lambda: mine_views(mining, lr, hr_map, grid, image_global=hd),
        "literal": lambda: mining.forward_reference(lr, hr_views(hr_map, grid, image_global=hd)),
    }


def child_peak_mib(form: str, hd: bool, dtype: str, device: torch.device) -> float:
    """Peak memory growth of one call of `form`, in a fresh process so the two forms cannot share an allocator."""
    flags = ["--hd"] if hd else []
    out = subprocess.run(
        [sys.executable, __file__, "--child", form, "--dtype", dtype, "--device", str(device), *flags],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return float(out.strip().splitlines()[-1])


def high_water_kib() -> int:
    """This process's peak RSS. /proc's VmHWM (Linux) rather than ru_maxrss, which a child inherits from its parent."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))


def run_child(form: str, hd: bool, dtype: torch.dtype, device: torch.device) -> None:
    run = forms(*inputs(hd, dtype, device), hd)[form]
    if device.type == "cuda":
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        with torch.inference_mode():
            run()
        return print((torch.cuda.max_memory_allocated(device) - before) / 2**20)
    before = high_water_kib()
    with torch.inference_mode():
        run()
    print((high_water_kib() - before) / 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hd", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--no-encoder", action="store_true", help="skip timing the ConvNeXt-L HR encoder")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--child", choices=["folded", "literal"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    dtype, device = getattr(torch, args.dtype), torch.device(args.device)
    if args.child:
        return run_child(args.child, args.hd, dtype, device)
    mining, hr_map, lr = inputs(args.hd, dtype, device)
    side = hr_map.shape[-1]
    run = forms(mining, hr_map, lr, args.hd)
    with torch.inference_mode():
        folded = best_of(run["folded"], args.repeats, device)
        literal = best_of(run["literal"], args.repeats, device)
        copy = best_of(lambda: hr_map.clone(memory_format=torch.channels_last), args.repeats, device)
        diff = (run["folded"]().float() - run["literal"]().float()).abs().max().item()
        encoder_s = None
        if not args.no_encoder:
            convnext_l = ConvNextConfig(hidden_sizes=[192, 384, 768, 1536], depths=[3, 3, 27, 3], layer_norm_eps=1e-6)
            encoder = HighResEncoder(type("Config", (), {"vision_aux_config": convnext_l})()).to(device, dtype).eval()
            pixels = torch.randn(1, 3, 4 * side, 4 * side, dtype=dtype, device=device)
            encoder_s = best_of(lambda: encoder(pixels), max(1, args.repeats - 1), device)
    result = {
        "shape": f"{'HD 5x576' if args.hd else '576'} queries, HR map 2880x{side}x{side}",
        "dtype": args.dtype,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "folded_s": round(folded, 5),
        "literal_s": round(literal, 5),
        "hr_map_copy_s": round(copy, 5),
        "speedup_vs_literal": round(literal / folded, 1),
        "folded_over_copy": round(folded / copy, 2),
        "max_abs_diff": diff,
        "hr_encoder_convnext_l_s": None if encoder_s is None else round(encoder_s, 5),
        "mining_over_hr_encoder": None if encoder_s is None else round(folded / encoder_s, 3),
        "peak_mib_folded": round(child_peak_mib("folded", args.hd, args.dtype, device), 1),
        "peak_mib_literal": round(child_peak_mib("literal", args.hd, args.dtype, device), 1),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
