"""The benchmarks ``mgm eval --bench NAME`` knows: how each is read and how it is scored."""

from __future__ import annotations

from minigemini.evaluation.base import Benchmark
from minigemini.evaluation.mathvista import load_mathvista, score_mathvista
from minigemini.evaluation.mme import load_mme, score_mme
from minigemini.evaluation.mmmu import load_mmmu, score_mmmu
from minigemini.evaluation.mmvet import load_mmvet, score_mmvet
from minigemini.evaluation.multiple_choice import load_mmbench, score_mmbench
from minigemini.evaluation.pope import load_pope, score_pope
from minigemini.evaluation.scienceqa import load_scienceqa, score_scienceqa
from minigemini.evaluation.seed import load_seed, score_seed
from minigemini.evaluation.textvqa import load_textvqa
from minigemini.evaluation.vqa import load_vqa, score_exact_match, score_vqa

__all__ = ["BENCHMARKS", "get_benchmark"]


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark(
            "textvqa",
            "TextVQA val: LLaVA question JSONL (+ TextVQA_0.5.1_val.json); VQA accuracy",
            load_textvqa,
            score_vqa,
        ),
        Benchmark("vqav2", "VQAv2: question JSONL (+ annotations); VQA accuracy", load_vqa, score_vqa),
        Benchmark(
            "gqa", "GQA testdev-balanced: question JSONL (+ questions JSON); exact match", load_vqa, score_exact_match
        ),
        Benchmark(
            "pope",
            "POPE: question JSONL (+ coco_pope_*.json) or parquet; acc / precision / recall / F1",
            load_pope,
            score_pope,
        ),
        Benchmark(
            "mme",
            "MME: release folder, llava_mme.jsonl (+ the folder) or parquet; perception and cognition scores",
            load_mme,
            score_mme,
        ),
        Benchmark("mmbench", "MMBench TSV (base64 images); circular accuracy", load_mmbench, score_mmbench),
        Benchmark(
            "scienceqa",
            "ScienceQA: LLaVA JSON/JSONL (+ problems.json); eval_science_qa.py's letter rule (IMG subset too)",
            load_scienceqa,
            score_scienceqa,
        ),
        Benchmark(
            "seed",
            "SEED-Bench: LLaVA JSONL (+ SEED-Bench.json); exact-match accuracy (image / video / all)",
            load_seed,
            score_seed,
        ),
        Benchmark("mmmu", "MMMU val/dev: parquet or save_to_disk; rule-parsed accuracy", load_mmmu, score_mmmu),
        Benchmark(
            "mathvista",
            "MathVista testmini: parquet, save_to_disk or JSON; rule (+ judge) extraction",
            load_mathvista,
            score_mathvista,
            max_new_tokens=1024,
        ),
        Benchmark(
            "mmvet",
            "MM-Vet: mm-vet.json + images; LLM-judge score",
            load_mmvet,
            score_mmvet,
            needs_judge=True,
            max_new_tokens=1024,
        ),
        Benchmark(
            "synthetic", "the project's PIL-drawn set (write_synthetic_benchmark); VQA accuracy", load_vqa, score_vqa
        ),
    )
}


def get_benchmark(name: str) -> Benchmark:
    try:
        return BENCHMARKS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}") from None
