"""The engines side by side: one process, DDP, FSDP, ZeRO-2 and ZeRO-3 (2 processes over gloo on CPU), same model.

    python benchmarks/bench_distributed.py                     # from the repository root; about 5 minutes on 2 cores
    python benchmarks/bench_distributed.py --precision fp32    # the recipes train in bf16 (mixed precision)
    python benchmarks/bench_distributed.py --layers 4          # a smaller LLM

Each engine trains the same stage-2 run (LLM trained in full, towers frozen; global batch 4) with `mgm train`'s own
code path (`minigemini.train.train` under torchrun).  Per rank, at the last optimizer step (DeepSpeed steps inside its
backward, so there its gradients are the buffers it keeps between steps):

- model states: every tensor the model and the optimizer hold there -- parameters (FSDP: the local shard; ZeRO-3: the
  partition), gradients, the optimizer's state and, under DeepSpeed, the ZeRO optimizer's own tensors (fp32 partitions,
  gradient partitions, buckets) -- each storage counted once;
- peak RSS: the process's high-water mark (includes Python, torch and the data: the same few hundred MiB for all).

Nothing is downloaded: the model is built from a config with random weights.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
ENGINES = {
    "single process": None,
    "DDP": {},
    "FSDP": {"fsdp": "full_shard auto_wrap"},
    "ZeRO-2": {"deepspeed": str(ROOT / "recipes" / "distributed" / "zero2.json")},
    "ZeRO-3": {"deepspeed": str(ROOT / "recipes" / "distributed" / "zero3.json")},
}


# ---------------------------------------------------------------------------------------------------- measuring


def _local(tensor):
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor  # a DTensor (FSDP2) -> this rank's shard


def _tensors(value, depth=0):
    if torch.is_tensor(value):
        yield value
    elif depth < 2 and isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item, depth + 1)
    elif depth < 2 and isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item, depth + 1)


def model_state_bytes(model, optimizer) -> int:
    storages = {}

    def add(tensor):
        if tensor is None:
            return
        storage = _local(tensor).untyped_storage()
        if storage.nbytes():
            storages[storage.data_ptr()] = storage.nbytes()

    for parameter in model.parameters():
        add(getattr(parameter, "ds_tensor", parameter))  # ZeRO-3 keeps this rank's partition in ds_tensor
        add(parameter.grad)
    inner = optimizer
    while hasattr(inner, "optimizer"):  # accelerate's wrapper -> DeepSpeed's ZeRO optimizer -> torch's AdamW
        if inner.__class__.__module__.startswith("deepspeed"):
            for value in vars(inner).values():  # fp32 partitions, gradient partitions, buckets
                for tensor in _tensors(value):
                    add(tensor)
        inner = inner.optimizer
    for group in inner.param_groups:
        for parameter in group["params"]:
            add(parameter)
            add(parameter.grad)
    for state in inner.state.values():
        for tensor in _tensors(state):
            add(tensor)
    return sum(storages.values())


def worker(plan_path: str) -> None:
    """One rank of one engine's run (under torchrun, or alone for the single process)."""
    from transformers import TrainerCallback

    from minigemini.train import TrainConfig, train

    with open(plan_path, encoding="utf-8") as f:
        settings = json.load(f)
    measured = {}

    class Measure(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model=None, optimizer=None, **kwargs):
            measured["model_states"] = model_state_bytes(model, optimizer)

    result = train(TrainConfig.from_sources(None, settings), callbacks=[Measure()])
    rank = int(os.environ.get("RANK", "0"))
    record = {
        "rank": rank,
        "model_states": measured["model_states"],
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "samples": result.summary["samples_seen"],
        "time_s": result.summary["time_s"],
        "parameters": result.summary["total_parameters"],
    }
    with open(f"{settings['output']}.rank{rank}.json", "w", encoding="utf-8") as f:
        json.dump(record, f)
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------------- the run


def build_workspace(root: Path, args) -> dict:
    sys.path.insert(0, str(ROOT))
    from minigemini import MiniGeminiConfig, MiniGeminiForConditionalGeneration
    from tests.helpers.training import caption_records, make_processor, make_tokenizer, write_images, write_jsonl

    model_dir = root / "model"
    tokenizer = make_tokenizer(model_dir)
    processor = make_processor(tokenizer)  # 32 px LR (16 visual tokens), 64 px HR
    config = MiniGeminiConfig(
        vision_config={
            "model_type": "clip_vision_model", "image_size": 32, "patch_size": 8, "hidden_size": 64,
            "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        },
        vision_aux_config={"model_type": "convnext", "hidden_sizes": [16, 32, 48, 64], "depths": [1, 1, 1, 1]},
        text_config={
            "model_type": "llama", "hidden_size": args.hidden, "intermediate_size": args.hidden * 8 // 3,
            "num_hidden_layers": args.layers, "num_attention_heads": 8, "num_key_value_heads": 8,
            "vocab_size": len(tokenizer), "max_position_embeddings": 512, "tie_word_embeddings": False,
            "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        image_size_aux=64,
        image_token_id=processor.image_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    MiniGeminiForConditionalGeneration(config).save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    names = write_images(root / "images", 4)
    data = write_jsonl(root / "data.jsonl", caption_records(names) * (args.steps * 2))
    return {"model": str(model_dir), "images": str(root / "images"), "data": data}


def run_engine(name: str, engine: dict | None, workspace: dict, root: Path, args) -> list[dict]:
    output = root / name.replace(" ", "-")
    settings = {
        "stage": 2, "model": workspace["model"], "data": [workspace["data"]], "image_folder": [workspace["images"]],
        "output": str(output), "global_batch_size": 4, "per_device_batch_size": 4 if engine is None else 2,
        "learning_rate": 1e-4, "max_steps": args.steps, "precision": args.precision, "gradient_checkpointing": False,
        "warmup_ratio": 0.0, "dataloader_workers": 0, "save_steps": 10_000, "progress": False, **(engine or {}),
    }  # fmt: skip
    plan = root / f"{output.name}.json"
    plan.write_text(json.dumps(settings))
    me = [str(Path(__file__).resolve()), "--worker", str(plan)]
    if engine is None:
        command = [sys.executable, *me]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *me]
    env = {**os.environ, "OMP_NUM_THREADS": "1" if engine is not None else "2", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    log = root / f"{output.name}.log"
    with open(log, "wb") as out:
        done = subprocess.run(command, cwd=ROOT, env=env, stdout=out, stderr=out, check=False)
    if done.returncode:
        raise SystemExit(f"{name} failed:\n{log.read_text(errors='replace')[-3000:]}")
    return [json.loads(p.read_text()) for p in sorted(root.glob(f"{output.name}.rank*.json"))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--hidden", type=int, default=512, help="LLM hidden size")
    parser.add_argument("--layers", type=int, default=8, help="LLM layers")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=list(ENGINES))
    args = parser.parse_args()
    if args.worker:
        worker(args.worker)
        return
    mib = 2**20
    with tempfile.TemporaryDirectory(prefix="bench-distributed-") as tmp:
        root = Path(tmp)
        workspace = build_workspace(root, args)
        rows = {name: run_engine(name, ENGINES[name], workspace, root, args) for name in args.engines}
    params = rows[args.engines[0]][0]["parameters"]
    print(
        f"\nstage 2, {args.precision}, {params / 1e6:.1f} M parameters, global batch 4, {args.steps} steps, 2-core CPU\n"
    )
    print("| engine | processes | samples/s | model states per rank (MiB) | vs DDP | peak RSS per rank (MiB) |")
    print("| --- | --- | --- | --- | --- | --- |")
    ddp = max(r["model_states"] for r in rows["DDP"]) if "DDP" in rows else None
    for name, ranks in rows.items():
        states = max(r["model_states"] for r in ranks)
        ratio = f"{states / ddp:.2f}" if ddp else ""
        rate = ranks[0]["samples"] / ranks[0]["time_s"]
        rss = " / ".join(f"{r['peak_rss'] / mib:.0f}" for r in ranks)
        print(f"| {name} | {len(ranks)} | {rate:.1f} | {states / mib:.0f} | {ratio} | {rss} |")


if __name__ == "__main__":
    main()
