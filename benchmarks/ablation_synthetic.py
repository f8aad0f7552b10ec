"""The paper's ablation (Tables 4-5) in miniature, on the synthetic world's held-out test set.

Variants, trained by the same recipe (minigemini/synthetic/recipe/recipe.yaml) from the same world and pre-trained encoders:
  (a) LR only      LLaVA-style: 64 LR tokens straight to the projector   mgm train --recipe synthetic --variant lr_only
  (b) + mining     the default model: the same 64 tokens, each mining its HR window
  (c) + HD         (b)'s weights with HD token extension (5 views x 64 tokens, 384 px HR), not retrained

For each: accuracy per question type (VQA exact match), visual tokens, latency per answer (batch 1); the share of
held-out picture requests whose <h> prompt draws the requested scene (read back by the world's scene parser); and
whether the model still answers plain-English questions (keyword check, SmolLM2 alone as the reference).

    python benchmarks/ablation_synthetic.py --lr-only runs/synthetic/export-lr_only --mining minigemini/assets/default_model \
        --test data/world-test --json benchmarks/ablation.json

The test set is written first when the folder is empty (`mgm data synth --scenes 0 --test-per-type 100
--test-generation 100 --seed 777`: a seed the training world did not use).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minigemini.evaluation.normalize import vqa_accuracy
from minigemini.generation import extract_image_prompt, request_image
from minigemini.inference import batch_chat, chat
from minigemini.loading import parse_dtype
from minigemini.precision import cpu_inference_dtype
from minigemini.synthetic.benchmark import write_test_set
from minigemini.synthetic.chat_checks import CHAT_CHECKS, passes
from minigemini.synthetic.default_model import load_default_model
from minigemini.synthetic.render import parse_description
from minigemini.synthetic.world import QUESTION_TYPES, READING_TYPES, spec_matches

LR_ONLY = "(a) LR only (LLaVA-style)"


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def evaluate(model, processor, questions: list[dict], folder: Path, requests: list[dict], latency_n: int) -> dict:
    pairs = [(str(folder / q["image"]), q["text"]) for q in questions]
    started = time.perf_counter()
    answers = batch_chat(model, pairs, processor, batch_size=16, max_new_tokens=8, progress=False)
    batched_s = time.perf_counter() - started
    per_type: dict[str, list[float]] = {t: [] for t in QUESTION_TYPES}
    for question, answer in zip(questions, answers):
        per_type[question["category"]].append(vqa_accuracy(answer or "", [question["answer"]]))
    latencies = []
    for image, text in pairs[:: max(1, len(pairs) // latency_n)][:latency_n]:
        started = time.perf_counter()
        chat(model, image, text, processor, max_new_tokens=8)
        latencies.append(time.perf_counter() - started)
    prompts = batch_chat(
        model, [(None, request_image(r["text"])) for r in requests], processor, batch_size=16, max_new_tokens=80,
        progress=False,
    )  # fmt: skip
    drawn = [
        bool(p) and spec_matches(parse_description(r["description"]), extract_image_prompt(p) or "")
        for r, p in zip(requests, prompts)
    ]
    chats = batch_chat(model, [(None, q) for q, _ in CHAT_CHECKS], processor, batch_size=8, max_new_tokens=48,
                       progress=False)  # fmt: skip
    accuracy = {t: 100 * statistics.fmean(s) for t, s in per_type.items() if s}
    reading = [s for t in READING_TYPES for s in per_type[t]]
    seeing = [s for t in QUESTION_TYPES if t not in READING_TYPES for s in per_type[t]]
    return {
        "accuracy": accuracy,
        "reading": 100 * statistics.fmean(reading),
        "seeing": 100 * statistics.fmean(seeing),
        "visual_tokens": model.config.image_seq_length,
        "latency_ms": 1000 * statistics.median(latencies),
        "batched_ms_per_answer": 1000 * batched_s / len(pairs),
        "generation_match": 100 * statistics.fmean(drawn),
        "chat_ok": sum(passes(a, keys) for (_, keys), a in zip(CHAT_CHECKS, chats)),
        "chat_examples": [{"q": q, "a": a} for (q, _), a in zip(CHAT_CHECKS[:3], chats)],
        "generation_examples": [{"request": r["text"], "answer": p} for r, p in zip(requests[:3], prompts)],
    }


def smollm2_chat_ok() -> int:
    """How many CHAT_CHECKS SmolLM2-135M-Instruct alone passes (the reference for 'chat still works')."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from minigemini.synthetic.smollm2 import smollm2_dir

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir())
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir(), dtype=torch.float32).eval()
    passed = 0
    for question, keys in CHAT_CHECKS:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)  # fmt: skip
        with torch.inference_mode():
            out = model.generate(**ids, max_new_tokens=48, do_sample=False)
        answer = tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
        passed += passes(answer, keys)
    return passed


def table(results: dict[str, dict], reference_chat: int) -> str:
    head = (
        "| variant | "
        + " | ".join(QUESTION_TYPES)
        + " | reading | colour/shape/count/position | tokens | latency/answer | <GEN> drawn right | chat |"
    )
    lines = [head, "|" + "---|" * (len(QUESTION_TYPES) + 7)]
    for name, r in results.items():
        cells = [f"{r['accuracy'][t]:.0f}" for t in QUESTION_TYPES]
        lines.append(
            f"| {name}{' (earlier run)' if r.get('kept_from_earlier_run') else ''} | "
            + " | ".join(cells)
            + f" | **{r['reading']:.0f}** | {r['seeing']:.0f} | {r['visual_tokens']} | "
            f"{r['latency_ms']:.0f} ms | {r['generation_match']:.0f} % | {r['chat_ok']}/{len(CHAT_CHECKS)} |"
        )
    lines.append(f"\nSmolLM2-135M-Instruct alone passes {reference_chat}/{len(CHAT_CHECKS)} of the chat checks.")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lr-only", type=Path, help="export of the lr_only variant (without it: (a)'s row of --json)")
    parser.add_argument("--mining", type=Path, required=True, help="export of the default model (also run in HD)")
    parser.add_argument("--test", type=Path, required=True, help="held-out test folder (written when empty)")
    parser.add_argument("--per-type", type=int, default=100)
    parser.add_argument("--generation", type=int, default=100)
    parser.add_argument("--seed", type=int, default=777)
    parser.add_argument("--latency-n", type=int, default=16)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument(
        "--dtype", choices=("auto", "bf16", "fp32"), default="auto",
        help="auto (default): bf16 where the CPU has bf16 kernels, else fp32 (bf16 without them is many times slower)",
    )  # fmt: skip
    args = parser.parse_args()
    dtype = parse_dtype(args.dtype) or cpu_inference_dtype()
    dtype_name = str(dtype).removeprefix("torch.")
    torch.manual_seed(0)
    write_test_set(args.test, args.per_type, args.generation, args.seed, reuse=True)
    questions = _read_jsonl(args.test / "questions.jsonl")
    requests = _read_jsonl(args.test / "generation.jsonl")
    runs = [("(b) + patch info mining", args.mining, False), ("(c) + HD token extension", args.mining, True)]
    if args.lr_only:
        runs.insert(0, (LR_ONLY, args.lr_only, False))
    results = {}
    earlier = json.loads(args.json.read_text())["results"] if args.json and args.json.is_file() else {}
    if not args.lr_only and LR_ONLY in earlier:  # (a) not retrained with the recipe this time: its row stays, marked
        results[LR_ONLY] = {**earlier[LR_ONLY], "kept_from_earlier_run": True}
        print(f"{LR_ONLY}: kept from {args.json} (no --lr-only)", flush=True)
    for name, folder, hd in runs:
        print(f"{name}: {folder}{' in HD' if hd else ''}", flush=True)
        model, processor = load_default_model(folder, dtype=dtype, hd=hd)
        results[name] = evaluate(model, processor, questions, args.test, requests, args.latency_n)
        print(json.dumps(results[name], indent=1), flush=True)
        del model
    reference = smollm2_chat_ok()
    print(f"\n{torch.get_num_threads()} threads, {dtype_name}, {len(questions)} questions, {len(requests)} requests\n")
    print(table(results, reference))
    if args.json:
        args.json.write_text(
            json.dumps({"results": results, "smollm2_chat_ok": reference, "dtype": dtype_name}, indent=1) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
