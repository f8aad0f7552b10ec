"""Benchmarks of the paper, read from the files their authors distribute and scored the way they score them.

``benchmarks/`` holds one module per benchmark family (a row reader and a scorer) and the registry
(``benchmarks.BENCHMARKS``); beside it the infrastructure: ``loader`` (what a benchmark is, the one loader
skeleton), ``readers`` (files -> rows), ``samples``, ``choices`` / ``normalize`` / ``scoring`` / ``prompts`` (shared
by several benchmarks), ``runner`` (``run_benchmark``: resumable JSONL, shards; ``score_run``: merge + score),
``rescore``, ``report``, ``judge``, ``leaderboard`` (``mgm eval report``), ``answering.generate_answers``, the single
generation call, and ``engines/`` (what answers: transformers, vllm, endpoint; one registry), shared with the
lmms-eval adapter (``lmms_adapter``, imported only by lmms-eval).  ``mgm eval`` is ``minigemini.cli.eval``.
"""

from minigemini.evaluation.answering import generate_answers, load_model_and_processor
from minigemini.evaluation.benchmarks import BENCHMARKS, get_benchmark
from minigemini.evaluation.judge import Judge, JudgeConfig, JudgeError
from minigemini.evaluation.loader import Benchmark, LoadOptions
from minigemini.evaluation.normalize import normalize_vqa_answer, vqa_accuracy
from minigemini.evaluation.runner import EvalError, RunConfig, load_samples, run_benchmark, score_run
from minigemini.evaluation.samples import InvalidRow, Sample

__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "EvalError",
    "InvalidRow",
    "Judge",
    "JudgeConfig",
    "JudgeError",
    "LoadOptions",
    "RunConfig",
    "Sample",
    "generate_answers",
    "get_benchmark",
    "load_model_and_processor",
    "load_samples",
    "normalize_vqa_answer",
    "run_benchmark",
    "score_run",
    "vqa_accuracy",
]
