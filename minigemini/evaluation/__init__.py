"""Benchmarks of the paper, read from the files their authors distribute and scored the way they score them.

``mgm eval`` (``command.py``) drives ``runner.run_benchmark`` (resumable JSONL, shards) and
``runner.score_run`` (merge + score); each benchmark is a loader + scorer pair in ``benchmarks.BENCHMARKS``;
``generation.generate_answers`` is the single generation call, shared with the lmms-eval adapter
(``lmms_adapter``, imported only by lmms-eval).
"""

from .base import Benchmark, LoadOptions
from .benchmarks import BENCHMARKS, get_benchmark
from .generation import generate_answers, load_model_and_processor
from .judge import Judge, JudgeConfig, JudgeError
from .normalize import normalize_vqa_answer, vqa_accuracy
from .records import InvalidRow, Sample
from .runner import EvalError, RunConfig, load_samples, run_benchmark, score_run
from .synthetic import write_synthetic_benchmark

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
    "write_synthetic_benchmark",
]
