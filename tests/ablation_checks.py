"""The ablation benchmark's plain-English chat checks, for the tests (benchmarks/ is not a package: loaded by path)."""

import importlib.util
from pathlib import Path

ABLATION_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "ablation_synthetic.py"


def chat_checks() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``CHAT_CHECKS`` of benchmarks/ablation_synthetic.py: (question, keywords any of which a right answer holds)."""
    spec = importlib.util.spec_from_file_location("ablation_synthetic", ABLATION_SCRIPT)
    ablation = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ablation)
    return ablation.CHAT_CHECKS
