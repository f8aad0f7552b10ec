"""The package's layers, stated as import-linter contracts in pyproject.toml, hold; and they would catch a breach."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", str(root / "pyproject.toml")],
        check=False, cwd=root, capture_output=True, text=True, env={"PYTHONPATH": str(root), "PATH": ""},
    )  # fmt: skip


def test_the_layer_contracts_hold():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    "module, line, contract",
    [
        ("modeling.py", "import minigemini.loading", "The core"),  # the core reaching up
        ("loading.py", "import minigemini.serve.app", "The library never imports"),
        ("serve/app.py", "import minigemini.train.run", "independent of each other"),
        ("train/run.py", "import minigemini.cli", "imports the command line"),
        ("synthetic/world.py", "import minigemini.evaluation.prompts", "The library never imports"),
        ("synthetic/render.py", "import minigemini.text_to_image", "No import circles"),  # which draws with render
        ("configuration.py", "import minigemini.modeling", "No import circles"),  # a circle inside the core
        ("vllm_plugin/model.py", "import minigemini.serve.app", "The library never imports"),  # vLLM's adapter
        ("encoders.py", "import minigemini.vllm_plugin", "The core"),
        ("processing.py", "import minigemini.saving", "Hub custom code"),  # a module a checkpoint cannot carry
        ("loading.py", "import minigemini.synthetic.default_model", "The loader knows no synthetic world"),
        ("inference.py", "import minigemini.synthetic.world", "The loader knows no synthetic world"),
    ],
)
def test_a_breach_breaks_a_contract(tmp_path, module, line, contract):
    shutil.copytree(
        ROOT / "minigemini", tmp_path / "minigemini", ignore=shutil.ignore_patterns("assets", "__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    path = tmp_path / "minigemini" / module
    path.write_text(path.read_text() + f"\n{line}  # breach\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    broken = [row for row in result.stdout.splitlines() if row.endswith("BROKEN") or "BROKEN (" in row]
    assert any(contract in row for row in broken), result.stdout
