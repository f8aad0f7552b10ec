"""``mgm eval report DIR...``: one table of every scored run under the folders given, as markdown and JSON.

A row per metric of each run's ``scores.json``: benchmark, metric, score, engine, model, date, and whether the run
was complete or partial (``report.py``'s status).  Where the model is a published MGM (its folder or hub name:
``MGM-7B``, ``YanweiLi/MGM-13B-HD``, ``Mini-Gemini-2B``, ...), the paper's number stands beside it, in the same
scale as the score (accuracies as fractions, MME and MM-Vet as the paper prints them).

The paper's numbers: Mini-Gemini (Li et al., 2024), Table 1 "Comparison with leading methods on zero-shot
benchmarks", the Mini-Gemini and Mini-Gemini-HD rows (VQA^T = TextVQA val, MMB = MMBench test, MME perception /
cognition, MM-Vet, MMMU val, MathVista testmini), typed in from the table as the talk slides reproduce it
(the paper's text extraction in /work/shared/paper lost the table's body; the slides' copy is legible).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

__all__ = ["PAPER_TABLE_1", "collect", "paper_number", "published_model", "to_markdown", "write_report"]

_COLUMNS = ("textvqa", "mmbench", "mme_perception", "mme_cognition", "mmvet", "mmmu_val", "mmmu_test", "mathvista")
_ROWS = {  # model: TextVQA, MMB, MME P, MME C, MM-Vet, MMMU val, MMMU test, MathVista (Table 1, as printed)
    "mgm-2b": (56.2, 59.8, 1341, 312, 31.1, 31.7, 29.1, 29.4),
    "mgm-7b": (65.2, 69.3, 1523, 316, 40.8, 36.1, 32.8, 31.4),
    "mgm-13b": (65.9, 68.5, 1565, 322, 46.0, 38.1, 33.5, 37.0),
    "mgm-8x7b": (69.2, 75.6, 1639, 379, 45.8, 41.8, 37.1, 41.8),
    "mgm-34b": (70.1, 79.6, 1666, 439, 53.0, 48.7, 43.6, 38.9),
    "mgm-7b-hd": (68.4, 65.8, 1546, 319, 41.3, 36.8, 32.9, 32.2),
    "mgm-13b-hd": (70.2, 68.6, 1597, 320, 50.5, 37.3, 35.1, 37.0),
    "mgm-8x7b-hd": (71.9, 74.7, 1633, 356, 53.5, 40.0, 37.0, 43.1),
    "mgm-34b-hd": (74.1, 80.6, 1659, 482, 59.3, 48.0, 44.9, 43.3),
}
#: model -> column -> the paper's number
PAPER_TABLE_1: dict[str, dict[str, float]] = {m: dict(zip(_COLUMNS, values)) for m, values in _ROWS.items()}
#: (benchmark, metric) -> (column, factor to this package's scale)
_PAPER_COLUMN = {
    ("textvqa", "accuracy"): ("textvqa", 0.01),
    ("mmbench", "circular_accuracy"): ("mmbench", 0.01),
    ("mme", "perception"): ("mme_perception", 1.0),
    ("mme", "cognition"): ("mme_cognition", 1.0),
    ("mmvet", "score"): ("mmvet", 1.0),
    ("mmmu", "accuracy"): ("mmmu_val", 0.01),
    ("mathvista", "accuracy"): ("mathvista", 0.01),
}
CITATION = "Mini-Gemini (Li et al., 2024), Table 1"
_NAME = re.compile(r"^(?:mgm|mini-gemini)-(2b|7b|13b|8x7b|34b)(-hd)?$")


def published_model(model: str | None) -> str | None:
    """The Table 1 row of a model path or hub name (``.../MGM-7B-HD`` -> ``mgm-7b-hd``), None for others."""
    if not model:
        return None
    match = _NAME.match(Path(str(model).rstrip("/")).name.lower())
    return None if match is None else f"mgm-{match.group(1)}{match.group(2) or ''}"


def paper_number(model: str | None, benchmark: str, metric: str) -> float | None:
    """The paper's number for this model, benchmark and metric, in the package's scale; None where it has none."""
    row, column = published_model(model), _PAPER_COLUMN.get((benchmark, metric))
    if row is None or column is None:
        return None
    return round(PAPER_TABLE_1[row][column[0]] * column[1], 6)


def _scores_files(folders: list[Path]) -> list[Path]:
    files: list[Path] = []
    for folder in folders:
        if not folder.exists():
            raise FileNotFoundError(f"no such folder: {folder}")
        files += [folder] if folder.is_file() else sorted(folder.rglob("scores.json"))
    return files


def collect(folders: list[str | Path]) -> list[dict[str, Any]]:
    """A row per metric of every ``scores.json`` under ``folders`` (a run folder or a folder of runs)."""
    rows = []
    for path in _scores_files([Path(f) for f in folders]):
        scores = json.loads(path.read_text(encoding="utf-8"))
        for metric, value in (scores.get("metrics") or {}).items():
            rows.append(
                {
                    "benchmark": scores.get("benchmark"),
                    "metric": metric,
                    "score": value,
                    "paper": paper_number(scores.get("model"), scores.get("benchmark", ""), metric),
                    "engine": scores.get("engine") or "transformers",
                    "model": scores.get("model"),
                    "date": (scores.get("scored_at") or "")[:10] or None,
                    "status": scores.get("status"),
                    "run": str(path.parent),
                }
            )
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}".rstrip("0").rstrip(".") if abs(value) < 10 else f"{value:.1f}"
    return str(value).replace("|", "\\|")


def to_markdown(rows: list[dict[str, Any]]) -> str:
    """The rows as one markdown table (paper numbers cited under it)."""
    header = ("benchmark", "metric", "score", "paper", "engine", "model", "date", "status")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(row[key]) for key in header) + " |" for row in rows]
    if any(row["paper"] is not None for row in rows):
        lines += ["", f"paper: {CITATION}, in this package's scale (accuracies as fractions)."]
    return "\n".join(lines) + "\n"


def write_report(folders: list[str | Path], output: str | Path) -> tuple[Path, Path, str]:
    """Write ``output``.md and ``output``.json; returns their paths and the markdown."""
    rows = collect(folders)
    markdown = to_markdown(rows)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    md, js = output.with_suffix(".md"), output.with_suffix(".json")
    md.write_text(markdown, encoding="utf-8")
    js.write_text(json.dumps({"rows": rows, "paper_source": CITATION}, indent=2) + "\n", encoding="utf-8")
    return md, js, markdown
