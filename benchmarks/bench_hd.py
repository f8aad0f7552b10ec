"""HD (visual token extension: 4 crops + global view, HR 1536) vs normal (HR 768), side by side in one run.

python benchmarks/bench_hd.py [--preset small|tiny] [--repeats 3] [--device cuda --dtype bfloat16]
"""

import argparse
import json

import torch

from minigemini.modeling import MiniGeminiForConditionalGeneration
from minigemini.profiling import component_times, preset_config, random_inputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small", choices=["small", "tiny"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    results = {}
    for name, hd in (("normal", False), ("hd", True)):
        torch.manual_seed(0)
        model = MiniGeminiForConditionalGeneration(preset_config(args.preset, hd)).to(device, dtype).eval()
        inputs = random_inputs(model.config, 1, 32, device, dtype)
        with torch.inference_mode():
            timings = component_times(model, inputs, args.new_tokens, args.repeats)
        results[name] = {
            "visual_tokens": model.config.image_seq_length,
            "hr_size": model.config.image_size_aux,
            **{k: round(v, 4) if v is not None else None for k, v in timings.items()},
        }
    results["hd_over_normal_first_token"] = round(
        results["hd"]["end_to_end_first_token_s"] / results["normal"]["end_to_end_first_token_s"], 2
    )
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
