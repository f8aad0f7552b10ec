"""Stage-2 padding and training speed: each step's samples sorted by length on their own (LLaVA's modality-length
sampler, `length_group_steps: 1`) against several steps' samples sorted together, in one run.

A step of 8 dialogues pads every dialogue to the longest of the 8; sorting only inside the step leaves that padding
wherever the lengths of a random 8 differ.  This runs the default model (SmolLM2-135M + the committed weights, LoRA
merged) with a fresh LoRA set up as `mgm train --recipe synthetic`'s stage 2 (minigemini/synthetic/recipe/recipe.yaml), on a freshly
written synthetic world (dialogues and picture requests in the recipe's proportion), with the recipe's batch of 8:

    python research/length_grouping.py --scenes 240 --group-steps 16

Each order's whole epoch is trained and timed (after one untimed warm-up step), the two orders
interleaved step by step so that load on the machine hits both alike; speed is counted in tokens that are not padding
per second (what `mgm train` reports as tok/s).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import yaml

from minigemini.data.collator import DATA_STATS_KEY, MiniGeminiCollator
from minigemini.data.sampler import modality_length_grouped_indices
from minigemini.synthetic.default_model import load_default_model
from minigemini.synthetic.writer import write_world
from minigemini.train.config import TrainConfig
from minigemini.train.run import build_dataset, prepare_for_stage

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "synthetic.yaml"


def padding(order: list[int], lengths: list[int], batch_size: int) -> tuple[int, int]:
    """(tokens, padded tokens) of the micro-batches ``order`` is cut into."""
    real = padded = 0
    for start in range(0, len(order), batch_size):
        batch = [abs(lengths[i]) for i in order[start : start + batch_size]]
        real, padded = real + sum(batch), padded + max(batch) * len(batch)
    return real, padded


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=400, help="scenes of the world written for the run")
    parser.add_argument("--group-steps", type=int, default=16, help="length_group_steps of the grouped order")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    stage2 = yaml.safe_load(RECIPE.read_text())["stage2"]
    batch_size = stage2["per_device_batch_size"]
    with tempfile.TemporaryDirectory() as folder:
        # the recipe's world has 1,500 picture requests to 8,000 scenes
        write_world(folder, scenes=args.scenes, generation=args.scenes * 3 // 16, seed=args.seed)
        model, processor = load_default_model(dtype=torch.float32)
        config = TrainConfig.from_sources(
            None,
            {**stage2, "stage": 2, "model": "default", "data": [f"{folder}/instructions.json"],
             "image_folder": [folder], "output": f"{folder}/run"},
        )  # fmt: skip
        dataset = build_dataset(config, processor)
        lengths = dataset.modality_lengths
        model = prepare_for_stage(model, config).train()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate)
        collate = MiniGeminiCollator(pad_token_id=processor.tokenizer.pad_token_id)

        arms = {"each step sorted alone": 1, f"{args.group_steps} steps sorted together": args.group_steps}
        orders = {
            name: modality_length_grouped_indices(
                lengths, batch_size, generator=torch.Generator().manual_seed(args.seed), length_group_steps=k
            )
            for name, k in arms.items()
        }
        print(
            f"torch {torch.__version__}, {torch.get_num_threads()} threads; {len(lengths)} samples "
            f"({sum(n > 0 for n in lengths)} with an image), batch {batch_size}, stage-2 LoRA r {config.lora_r}"
        )

        def train_step(indices: list[int]) -> float:
            batch = collate([dataset[i] for i in indices])
            batch.pop(DATA_STATS_KEY)
            started = time.perf_counter()
            model(**batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return time.perf_counter() - started

        train_step(list(range(batch_size)))  # warm-up, untimed
        seconds = dict.fromkeys(arms, 0.0)
        steps = -(-len(lengths) // batch_size)
        for step in range(steps):
            for name in list(arms) if step % 2 == 0 else list(arms)[::-1]:
                seconds[name] += train_step(orders[name][step * batch_size : (step + 1) * batch_size])

    print(f"| order | padding | epoch ({steps} steps) | tokens / s |")
    print("| --- | --- | --- | --- |")
    for name in arms:
        real, padded = padding(orders[name], lengths, batch_size)
        print(f"| {name} | {100 * (1 - real / padded):.1f} % | {seconds[name]:.0f} s | {real / seconds[name]:.0f} |")
    alone, grouped = seconds.values()
    print(f"epoch time, grouped against each step sorted alone: x{alone / grouped:.2f} faster")


if __name__ == "__main__":
    main()
