"""What a scored run says about the questions it did not score: counts that add up to the questions in the file,
a status, the loud partial warning and exit status of `mgm eval`, and re-scoring a run from its data."""

import argparse
import json

import pytest

from minigemini.cli import eval as eval_command
from minigemini.evaluation.report import PARTIAL_EXIT, status, tally
from minigemini.evaluation.runner import score_run
from minigemini.evaluation.samples import EvalError
from minigemini.synthetic.benchmark import write_synthetic_benchmark
from tests.evaluation.eval_helpers import scripted_run, write_json, write_png


def mgm_eval(*argv):
    parser = argparse.ArgumentParser(prog="mgm")
    eval_command.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["eval", *map(str, argv)])
    return args.func(args)


def counts(**given):
    base = {"in_file": 10, "scored": 10, "unparsed": 0, "unreadable": 0, "left_out_by_limit": 0}
    base.update(generation_errors=0, missing_predictions=0, without_reference=0, needs_judge=0)
    return tally(**{**base, **given})


def test_the_buckets_must_add_up_to_the_questions_in_the_file():
    with pytest.raises(ValueError, match="9 accounted for, 10 in the file"):
        counts(scored=9)
    assert counts(scored=8, unreadable=1, missing_predictions=1)["scored"] == 8


def test_status_complete_partial_unscored():
    assert status(counts(unparsed=4)) == ("complete", [])  # unparsed answers are scored: not partial
    state, reasons = status(counts(scored=7, unreadable=2, generation_errors=1))
    assert state == "partial" and reasons == [
        "2 unreadable rows (see scores.json problems.unreadable_rows)",
        "1 generation errors (rerun with --retry-errors)",
    ]
    assert status(counts(scored=0, without_reference=10))[0] == "unscored"  # a split without answers
    assert status(counts(scored=0, needs_judge=10))[0] == "unscored"
    assert status(counts(scored=0, needs_judge=9, missing_predictions=1))[0] == "partial"
    assert status(counts(scored=9, without_reference=1))[0] == "partial"


def synthetic_run(tmp_path, limit=None):
    data = write_synthetic_benchmark(tmp_path / "synthetic", n=5, seed=4)
    answers = {json.loads(line)["text"]: json.loads(line)["answer"] for line in data.read_text().splitlines()}
    out = tmp_path / "run"
    scripted_run("synthetic", data, out, lambda prompt: answers[prompt], limit=limit)
    return data, out


def test_mgm_eval_says_a_partial_score_loudly_and_exits_non_zero(tmp_path, capsys):
    _, out = synthetic_run(tmp_path, limit=3)
    assert mgm_eval("merge", "--out", out) == PARTIAL_EXIT
    captured = capsys.readouterr()
    assert "synthetic (PARTIAL): accuracy=1" in captured.out
    assert "questions in the file: 5, scored: 3, unreadable: 0, unparsed: 0" in captured.out
    assert (
        "mgm eval: PARTIAL SCORE: 2 of 5 questions of synthetic were not scored (2 left out by --limit)" in captured.err
    )
    scores = json.loads((out / "scores.json").read_text())
    assert scores["status"] == "partial" and scores["not_scored_because"] == ["2 left out by --limit"]
    assert mgm_eval("merge", "--out", out, "--allow-partial") == 0


def test_a_complete_score_exits_zero_quietly(tmp_path, capsys):
    _, out = synthetic_run(tmp_path)
    assert mgm_eval("merge", "--out", out) == 0
    captured = capsys.readouterr()
    assert "synthetic: accuracy=1" in captured.out and captured.err == ""


def test_no_references_is_no_score_not_a_failure(tmp_path, capsys):
    write_png(tmp_path / "images" / "v1_0.png")
    mmvet = write_json(
        tmp_path / "mm-vet.json",
        {"v1_0": {"imagename": "v1_0.png", "capability": ["rec"], "question": "What is it?", "answer": "a dog"}},
    )
    out = tmp_path / "run"
    scripted_run("mmvet", mmvet, out, lambda prompt: "a dog")
    assert mgm_eval("merge", "--out", out) == 0
    assert "no score: 1 waiting for an LLM judge" in capsys.readouterr().err
    assert json.loads((out / "scores.json").read_text())["status"] == "unscored"


def test_rescore_reads_the_data_again_and_needs_it(tmp_path):
    data, out = synthetic_run(tmp_path)
    rows = data.read_text().splitlines()
    data.write_text("\n".join(rows[:4]) + "\n")  # a question removed from the file after the run
    trusted = score_run(out)
    assert trusted["counts"]["questions_in_file"] == 5 and trusted["status"] == "complete"
    rescored = score_run(out, rescore=True)
    assert rescored["counts"]["questions_in_file"] == 4 and rescored["counts"]["scored"] == 4
    assert rescored["problems"]["answers_to_questions_not_in_the_run"] == ["synthetic-00004"]
    data.unlink()
    with pytest.raises(EvalError, match="cannot re-score: the benchmark data of this run is not there"):
        mgm_eval("merge", "--out", out, "--rescore")
