"""`mgm eval report`: one table of the scored runs (markdown + JSON), the paper's Table 1 beside a published MGM."""

import argparse
import json

import pytest

from minigemini.cli import eval as eval_command
from minigemini.evaluation.leaderboard import PAPER_TABLE_1, paper_number, published_model
from minigemini.evaluation.runner import score_run
from minigemini.synthetic.benchmark import write_synthetic_benchmark
from tests.evaluation.eval_helpers import scripted_run, write_json


def mgm_eval(*argv):
    parser = argparse.ArgumentParser(prog="mgm")
    eval_command.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["eval", *map(str, argv)])
    return args.func(args)


def test_published_models_and_their_paper_numbers():
    assert published_model("/ckpt/YanweiLi/MGM-7B-HD/") == "mgm-7b-hd"
    assert published_model("Mini-Gemini-8x7B") == "mgm-8x7b"
    assert published_model("my-finetune") is None and published_model(None) is None
    assert paper_number("MGM-7B-HD", "textvqa", "accuracy") == pytest.approx(0.684)  # Table 1: 68.4
    assert paper_number("MGM-34B", "mme", "cognition") == 439
    assert paper_number("MGM-2B", "mmvet", "score") == pytest.approx(31.1)
    assert paper_number("MGM-2B", "docvqa", "anls") is None
    assert len(PAPER_TABLE_1) == 9


def test_report_of_complete_and_partial_runs(tmp_path, capsys):
    data = write_synthetic_benchmark(tmp_path / "bench", n=4, seed=0)
    runs = tmp_path / "runs"
    scripted_run("synthetic", data, runs / "full", lambda prompt: "red", model="MGM-7B")
    score_run(runs / "full")
    scripted_run("synthetic", data, runs / "half", lambda prompt: "red", limit=2, engine="vllm")
    score_run(runs / "half")
    write_json(
        tmp_path / "elsewhere" / "tvqa" / "scores.json",
        {"benchmark": "textvqa", "status": "complete", "model": "/m/MGM-13B", "engine": "endpoint",
         "scored_at": "2026-12-01T10:00:00Z", "metrics": {"accuracy": 0.65}},
    )  # fmt: skip
    assert mgm_eval("report", runs, tmp_path / "elsewhere", "--output", tmp_path / "table") == 0
    rows = json.loads((tmp_path / "table.json").read_text())["rows"]
    by_run = {row["run"].rsplit("/", 1)[-1]: row for row in rows}
    assert by_run["full"]["status"] == "complete" and by_run["full"]["engine"] == "transformers"
    assert by_run["half"]["status"] == "partial" and by_run["half"]["engine"] == "vllm"
    assert by_run["tvqa"]["paper"] == pytest.approx(0.659) and by_run["tvqa"]["date"] == "2026-12-01"
    assert by_run["full"]["paper"] is None  # Table 1 has no synthetic column
    markdown = (tmp_path / "table.md").read_text()
    assert markdown.startswith("| benchmark | metric | score | paper | engine | model | date | status |")
    assert "| textvqa | accuracy | 0.65 | 0.659 | endpoint | /m/MGM-13B | 2026-12-01 | complete |" in markdown
    assert "Table 1" in markdown and markdown in capsys.readouterr().out
