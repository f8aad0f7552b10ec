"""Stage-1 training throughput: LM head at supervised positions only vs the plain full-logits path, in one run.

A stage-1 sample is 576 visual tokens and a short caption, and only the caption is supervised, so the full-logits path
spends most of its LM-head work (and a (batch, length, vocab) fp32 tensor) on positions whose loss is ignored.  Both
paths run the same training step on the same batches -- frozen LLM and encoders in bf16 (as `mgm train` loads them),
mining + projector in fp32, bf16 autocast, forward + backward + AdamW -- and must give the same loss.

    python benchmarks/bench_train_step.py                  # SmolLM2-135M-shaped LLM (vocab 49,152), random weights
    python benchmarks/bench_train_step.py --vocab 151936   # a Qwen2-sized vocabulary

Nothing is downloaded: the model is built from a config with random weights (speed does not depend on the values).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from minigemini import MiniGeminiConfig, MiniGeminiForConditionalGeneration
from minigemini.modeling import IGNORE_INDEX
from minigemini.train.stages import configure_trainable, upcast_trainable


def build_model(args) -> MiniGeminiForConditionalGeneration:
    text = {
        "model_type": "llama",
        "hidden_size": args.hidden,
        "intermediate_size": args.intermediate,
        "num_hidden_layers": args.layers,
        "num_attention_heads": args.heads,
        "num_key_value_heads": args.kv_heads,
        "vocab_size": args.vocab,
        "max_position_embeddings": 2048,
        "tie_word_embeddings": False,
    }
    config = MiniGeminiConfig(
        # LR: 96 px / patch 4 -> 24 x 24 = 576 visual tokens, as CLIP-L/14 at 336 px; HR 192 px -> 48 x 48 map
        vision_config={
            "model_type": "clip_vision_model",
            "image_size": 96,
            "patch_size": 4,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
        },
        vision_aux_config={"model_type": "convnext", "hidden_sizes": [16, 32, 48, 64], "depths": [1, 1, 1, 1]},
        text_config=text,
        image_size_aux=192,
        image_token_id=args.vocab - 1,
    )
    torch.manual_seed(0)
    model = MiniGeminiForConditionalGeneration(config).to(torch.bfloat16)
    configure_trainable(model, stage=1)
    upcast_trainable(model)
    return model.train()


def make_batches(args, config, count):
    generator = torch.Generator().manual_seed(0)
    n = config.image_seq_length
    batches = []
    for _ in range(count):
        caption = torch.randint(3, args.vocab - 2, (args.batch, args.caption_tokens), generator=generator)
        ids = torch.cat(
            [
                torch.ones(args.batch, 1, dtype=torch.long),  # BOS
                torch.full((args.batch, n), config.image_token_id),
                caption,
            ],
            dim=1,
        )
        labels = ids.clone()
        labels[:, : 1 + n] = IGNORE_INDEX  # plain template: only the caption is supervised
        batches.append(
            {
                "input_ids": ids,
                "labels": labels,
                "pixel_values": torch.randn(args.batch, 3, 96, 96, generator=generator),
                "high_res_pixel_values": torch.randn(args.batch, 3, 192, 192, generator=generator),
            }
        )
    return batches


def train_step(model, optimizer, batch, full_logits: bool) -> tuple[float, float]:
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(**batch, full_logits=full_logits).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start, loss.item()


def run(model, batches, warmup: int) -> dict[bool, tuple[list[float], list[float]]]:
    """Both paths, interleaved step by step (alternating which goes first) so that load on a shared machine hits
    both alike; each path keeps its own copy of the trainable weights and its own optimizer."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    weights = {full: [p.detach().clone() for p in trainable] for full in (True, False)}
    optimizers = {full: torch.optim.AdamW(trainable, lr=1e-3) for full in (True, False)}
    results = {True: ([], []), False: ([], [])}
    for index, batch in enumerate(batches):
        for full in (True, False) if index % 2 == 0 else (False, True):
            with torch.no_grad():
                for p, w in zip(trainable, weights[full]):
                    p.copy_(w)
            elapsed, loss = train_step(model, optimizers[full], batch, full)
            with torch.no_grad():
                for p, w in zip(trainable, weights[full]):
                    w.copy_(p)
            if index >= warmup:
                results[full][0].append(elapsed)
                results[full][1].append(loss)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, default=49152)
    parser.add_argument("--hidden", type=int, default=576)
    parser.add_argument("--intermediate", type=int, default=1536)
    parser.add_argument("--layers", type=int, default=30)
    parser.add_argument("--heads", type=int, default=9)
    parser.add_argument("--kv-heads", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--caption-tokens", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()

    model = build_model(args)
    batches = make_batches(args, model.config, args.warmup + args.steps)
    tokens = batches[0]["input_ids"].numel()
    supervised = int((batches[0]["labels"][:, 1:] != IGNORE_INDEX).sum())
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; LLM {args.layers} layers x {args.hidden}, "
        f"vocab {args.vocab:,}; batch {args.batch} x {tokens // args.batch} tokens "
        f"({model.config.image_seq_length} visual + {args.caption_tokens} caption), {supervised} supervised"
    )

    measured = run(model, batches, args.warmup)
    results = {}
    for name, full in (("full logits", True), ("supervised head", False)):
        times, losses = measured[full]
        median = statistics.median(times)
        results[name] = (tokens / median, median, losses)
        print(
            f"{name:>16}: {tokens / median:8.1f} tokens/s  ({median:.2f} s/step, median of {len(times)})  "
            f"losses {', '.join(f'{x:.4f}' for x in losses)}"
        )
    full_rate, part_rate = results["full logits"][0], results["supervised head"][0]
    difference = max(abs(a - b) for a, b in zip(results["full logits"][2], results["supervised head"][2]))
    print(f"speed-up x{part_rate / full_rate:.2f}; max loss difference {difference:.2e}")


if __name__ == "__main__":
    main()
