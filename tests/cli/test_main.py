"""The one front door: every command registered, one error handler, one dtype vocabulary, missing extras named."""

import sys

import pytest

from minigemini import cli
from minigemini.errors import EXTRAS, MissingExtraError, missing_extra, require


def test_every_command_is_registered():
    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert set(commands) == set(cli.SUBCOMMANDS)
    data_commands = {"convert", "mix", "ocr", "gen", "stats", "shard", "synth"}
    assert set(commands["data"]._subparsers._group_actions[0].choices) == data_commands


@pytest.mark.parametrize(
    "argv, module, extra",
    [
        (["serve", "--model", "m"], "uvicorn", "serve"),
        (["serve", "--model", "m"], "fastapi", "serve"),
        (["web", "--model", "m"], "gradio", "web"),
        (["demo"], "peft", "demo"),
        (["demo"], "gguf", "demo"),
    ],
)
def test_a_missing_extra_is_one_line_naming_its_install_command(monkeypatch, capsys, argv, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ModuleNotFoundError
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        f"mgm {argv[0]}: error: {module} is not installed; it comes with the {extra} extra: "
        f'pip install "minigemini[{extra}]"'
    )


def test_a_missing_extra_deep_in_a_command_is_still_one_line(monkeypatch, capsys, tmp_path):
    """`mgm data ocr` reaches the OCR engine only after reading the data: the handler still names the extra."""
    import json

    from PIL import Image

    monkeypatch.setitem(sys.modules, "rapidocr_onnxruntime", None)
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    data = [{"id": "a", "image": "a.png", "conversations": [{"from": "human", "value": "<image>\\nRead it."},
                                                            {"from": "gpt", "value": "x"}]}]  # fmt: skip
    (tmp_path / "d.json").write_text(json.dumps(data))
    code = cli.main(["data", "ocr", str(tmp_path / "d.json"), "--image-folder", str(tmp_path), "-o",
                     str(tmp_path / "o.json"), "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and 'pip install "minigemini[ocr]"' in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "o.json").exists()


def test_every_extra_named_is_an_extra_of_the_package():
    import tomllib
    from pathlib import Path

    extras = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert set(EXTRAS.values()) <= set(extras)
    assert missing_extra(ModuleNotFoundError("x", name="some_unrelated_module")) is None
    with pytest.raises(MissingExtraError, match=r"minigemini\[lmms\]"):
        require("lmms_eval_that_is_not_there", extra="lmms")


@pytest.mark.parametrize("spelling, name", [("bf16", "bf16"), ("bfloat16", "bf16"), ("BF16", "bf16"),
                                            ("fp16", "fp16"), ("float16", "fp16"), ("half", "fp16"),
                                            ("fp32", "fp32"), ("float32", "fp32"), ("auto", "auto")])  # fmt: skip
@pytest.mark.parametrize("command", [["convert", "src", "dst"], ["init", "--vision", "v", "--vision-aux", "a",
                                     "--llm", "l", "--out", "o"], ["chat"], ["serve"], ["web"],
                                     ["eval", "--model", "m", "--bench", "mme", "--data", "d"]])  # fmt: skip
def test_one_dtype_vocabulary_for_every_command(command, spelling, name):
    args = cli.build_parser().parse_args([*command, "--dtype", spelling])
    assert args.dtype == name


def test_dtype_without_auto_and_precision_accept_both_spellings(capsys):
    parser = cli.build_parser()
    assert parser.parse_args(["bench", "--dtype", "bfloat16"]).dtype == "bf16"
    assert parser.parse_args(["merge-lora", "--adapter", "a", "--output", "o", "--dtype", "float16"]).dtype == "fp16"
    assert parser.parse_args(["train", "--precision", "bfloat16"]).precision == "bf16"
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "--dtype", "auto"])
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--dtype", "int3"])
    assert "unknown dtype 'int3'" in capsys.readouterr().err


def test_library_errors_are_one_line_and_interrupts_exit_130(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    parser = cli.build_parser()
    args = parser.parse_args(["train", "--recipe", "r.yaml"])
    args.func = interrupted
    assert cli.run(args) == 130
    assert capsys.readouterr().err.strip() == "mgm train: interrupted (continue with --resume)"
    assert cli.main(["convert", "/no/such/release", "/tmp/never-written"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mgm convert: error: ") and len(err.strip().splitlines()) == 1


def test_deepspeeds_cpu_fallback_line_is_not_printed_by_every_command():
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(
        [sys.executable, "-m", "minigemini.cli", "train", "--show-path", "zero3"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,
    )
    assert done.stdout.strip().endswith("zero3.json")
    assert "Setting accelerator to CPU" not in done.stdout + done.stderr
