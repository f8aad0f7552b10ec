"""The project's own synthetic set (``minigemini.synthetic.benchmark``): short-answer questions on PIL-drawn scenes.

LLaVA's question-JSONL layout, ``question_id`` ``synthetic-<n>`` (unique), the answer inline; read and scored as
VQAv2 (``vqa.py``), which with its single reference is the EvalAI-normalised exact match.  ``mgm eval --bench
synthetic`` without ``--data`` writes the set itself (``--synthetic-n`` questions, seed 0) under the output folder.
"""

from __future__ import annotations

from pathlib import Path

from minigemini.evaluation.benchmarks.vqa import load_vqa, score_vqa
from minigemini.evaluation.loader import Benchmark

__all__ = ["BENCHMARKS", "default_data"]


def default_data(folder: Path, n: int) -> Path:
    """``folder/synthetic-data/questions.jsonl``, written with ``n`` questions (seed 0) when it is not there."""
    from minigemini.synthetic.benchmark import write_synthetic_benchmark

    data = Path(folder) / "synthetic-data" / "questions.jsonl"
    if not data.is_file():
        write_synthetic_benchmark(data.parent, n=n, seed=0)
    return data


BENCHMARKS = (
    Benchmark(
        "synthetic",
        "the project's PIL-drawn set (write_synthetic_benchmark); VQA accuracy",
        load_vqa,
        score_vqa,
        default_data=default_data,
    ),
)
