"""Patch info mining: the folded form (model default) vs the literal Eq. 1, side by side in one run.

Shapes of the release: N = 576 LR tokens (CLIP-L/14 at 336 px), C = 1024, HR map 2880 x 192 x 192 (ConvNeXt-L at
768 px, 8x8 cells per token); HD: 5 x 576 queries over a 384 x 384 map (1536 px). One full copy of the HR map is
timed too, as the memory floor (mining must read the map at least once).

    python benchmarks/bench_mining.py [--hd] [--repeats 3] [--dtype float32|bfloat16]
"""

import argparse
import json
import time

import torch

from minigemini.mining import PatchInfoMining, hr_views


def best_of(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hd", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    mining = PatchInfoMining(1024, 2880, 1024).to(dtype).eval()
    side = 384 if args.hd else 192
    # The ConvNeXt emits its map channels-last in memory; build the input the same way.
    hr_map = torch.randn(1, side, side, 2880, dtype=dtype).permute(0, 3, 1, 2)
    views = hr_views(hr_map, image_grid=2, image_global=True) if args.hd else hr_map
    lr = torch.randn(views.shape[0], 576, 1024, dtype=dtype)
    with torch.inference_mode():
        folded = best_of(lambda: mining(lr, views), args.repeats)
        literal = best_of(lambda: mining.forward_reference(lr, views), args.repeats)
        copy = best_of(lambda: hr_map.clone(memory_format=torch.channels_last), args.repeats)
        diff = (mining(lr, views).float() - mining.forward_reference(lr, views).float()).abs().max().item()
    result = {
        "shape": f"{'HD 5x576' if args.hd else '576'} queries, HR map 2880x{side}x{side}",
        "dtype": args.dtype,
        "threads": torch.get_num_threads(),
        "folded_s": round(folded, 3),
        "literal_s": round(literal, 3),
        "hr_map_copy_s": round(copy, 3),
        "speedup_vs_literal": round(literal / folded, 1),
        "folded_over_copy": round(folded / copy, 2),
        "max_abs_diff": diff,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
