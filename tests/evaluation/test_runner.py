"""The whole `mgm eval` path with a tiny random model: every format, bad input reported, resume, shards."""

import argparse
import json

import pytest

from minigemini.cli import eval as eval_command
from minigemini.evaluation import answering as generation
from minigemini.evaluation.answering import generate_answers, load_model_and_processor
from minigemini.evaluation.runner import EvalError, RunConfig, read_predictions, run_benchmark, score_run
from minigemini.synthetic.benchmark import write_synthetic_benchmark
from tests.evaluation.eval_helpers import (
    JudgeServer,
    build_checkpoint,
    mathvista_table,
    mmmu_table,
    one_torch_thread,
    pope_rows,
    write_llava_jsonl,
    write_mmbench_tsv,
    write_mme,
    write_png,
)


def mgm_eval(*argv):
    """`mgm eval ...` through the subcommand's own parser (what minigemini.cli does with it)."""
    parser = argparse.ArgumentParser(prog="mgm")
    eval_command.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["eval", *map(str, argv)])
    return args.func(args)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    return build_checkpoint(tmp_path_factory.mktemp("mgm-tiny"))


@pytest.fixture(autouse=True)
def load_once(monkeypatch):
    """`mgm eval` loads the checkpoint with from_pretrained; the tests load it once per module, not per call."""
    real = generation.load_model_and_processor

    def cached(path, device="auto", dtype="auto", chat_template=None, quantize=None):
        key = (str(path), device, dtype, chat_template, quantize)
        if key not in _LOADED:
            _LOADED[key] = real(path, device=device, dtype=dtype, chat_template=chat_template, quantize=quantize)
        return _LOADED[key]

    monkeypatch.setattr(generation, "load_model_and_processor", cached)


_LOADED: dict = {}


def scores_of(out):
    return json.loads((out / "scores.json").read_text())


@pytest.fixture(scope="module")
def model_and_processor(tiny_checkpoint):
    return load_model_and_processor(str(tiny_checkpoint), device="cpu")


def test_generate_answers_batched_equals_one_by_one(model_and_processor, tmp_path):
    model, processor = model_and_processor
    images = [write_png(tmp_path / f"{i}.png", (60 * i, 90, 30)) for i in range(3)]
    batch = [
        (str(images[0]), "What colour is it?"),
        (None, "Is there a cat?"),
        ([str(images[1]), str(images[2])], "Compare."),
    ]
    together = generate_answers(model, processor, batch, max_new_tokens=5)
    alone = [generate_answers(model, processor, [item], max_new_tokens=5)[0] for item in batch]
    assert together == alone and all(isinstance(t, str) for t in together)
    # a stop string cuts the answer
    first_word = alone[0].split(" ")[1] if " " in alone[0] else None
    if first_word:
        cut = generate_answers(model, processor, batch[:1], max_new_tokens=5, stop=[" " + first_word])
        assert cut == [alone[0].split(" " + first_word)[0].strip()]


def test_llava_jsonl_run_reports_bad_input(tiny_checkpoint, tmp_path):
    data = write_llava_jsonl(tmp_path / "textvqa")
    out = tmp_path / "run"
    assert (
        mgm_eval(
            "--model",
            tiny_checkpoint,
            "--bench",
            "textvqa",
            "--data",
            data,
            "--out",
            out,
            "--max-new-tokens",
            3,
            "--batch-size",
            2,
        )
        == 3  # a partial score
    )
    scores = scores_of(out)
    assert scores["counts"] == {
        "questions_in_file": 5,
        "scored": 2,
        "unreadable": 2,
        "unparsed": 0,
        "left_out_by_limit": 0,
        "generation_errors": 1,
        "missing_predictions": 0,
        "without_reference": 0,
        "needs_judge": 0,
    }
    assert scores["status"] == "partial"
    assert 0.0 <= scores["metrics"]["accuracy"] <= 1.0
    assert scores["problems"]["generation_errors"][0]["qid"] == "q3"
    assert "image file not found" in scores["problems"]["generation_errors"][0]["error"]
    assert {p["where"] for p in scores["problems"]["unreadable_rows"]} == {"questions.jsonl:4", "questions.jsonl:5"}
    lines = (out / "predictions.jsonl").read_text().splitlines()
    assert [json.loads(line)["qid"] for line in lines] == ["q1", "q2", "q3"]

    # the image turns up: a plain rerun keeps the error, --retry-errors asks again
    write_png(data.parent / "gone.png")
    mgm_eval("--model", tiny_checkpoint, "--bench", "textvqa", "--data", data, "--out", out, "--max-new-tokens", 3)
    assert scores_of(out)["counts"]["generation_errors"] == 1
    mgm_eval(
        "--model",
        tiny_checkpoint,
        "--bench",
        "textvqa",
        "--data",
        data,
        "--out",
        out,
        "--max-new-tokens",
        3,
        "--retry-errors",
    )
    assert scores_of(out)["counts"]["generation_errors"] == 0 and scores_of(out)["counts"]["scored"] == 3


class CountingAnswers:
    """Wraps generate_answers, records every prompt asked, and can stop the run after k questions."""

    def __init__(self, stop_after=None):
        self.prompts, self.stop_after = [], stop_after

    def __call__(self, model, processor, batch, max_new_tokens):
        if self.stop_after is not None and len(self.prompts) + len(batch) > self.stop_after:
            raise KeyboardInterrupt
        self.prompts += [question for _, question in batch]
        return generate_answers(model, processor, batch, max_new_tokens=max_new_tokens)


def test_interrupted_run_resumes_with_the_remaining_questions(model_and_processor, tmp_path):
    model, processor = model_and_processor
    data = write_synthetic_benchmark(tmp_path / "synthetic", n=7, seed=1)
    config = RunConfig(bench="synthetic", data=str(data), out=tmp_path / "run", batch_size=1, max_new_tokens=2)
    first = CountingAnswers(stop_after=3)
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(model, processor, config, answer_fn=first, log=lambda m: None)
    predictions = config.out / "predictions.jsonl"
    assert len(read_predictions(predictions)) == 3
    with open(predictions, "a") as handle:  # a line cut in the middle of writing
        handle.write('{"qid": "synthetic-00003", "predic')

    second = CountingAnswers()
    summary = run_benchmark(model, processor, config, answer_fn=second, log=lambda m: None)
    questions = [json.loads(line)["text"] for line in data.read_text().splitlines()]
    assert second.prompts == questions[3:]  # only the four that were not answered
    assert summary["answered_before"] == 3 and summary["answered"] == 4
    lines = predictions.read_text().splitlines()
    assert [json.loads(line)["qid"] for line in lines] == [f"synthetic-{i:05d}" for i in range(7)]

    third = CountingAnswers()
    run_benchmark(model, processor, config, answer_fn=third, log=lambda m: None)
    assert third.prompts == []  # nothing left
    assert score_run(config.out)["counts"]["scored"] == 7


def test_shards_then_merge(tiny_checkpoint, tmp_path, capsys):
    data = write_synthetic_benchmark(tmp_path / "synthetic", n=5, seed=2)
    out = tmp_path / "run"
    common = ["--model", tiny_checkpoint, "--bench", "synthetic", "--data", data, "--out", out, "--max-new-tokens", 2]
    assert mgm_eval(*common, "--shard", "1/2") == 0
    assert "when all shards are done: mgm eval merge" in capsys.readouterr().out
    assert not (out / "scores.json").exists()
    with pytest.raises(EvalError, match="shard.s. 0/2 have not run"):
        mgm_eval("merge", "--out", out)
    assert mgm_eval(*common, "--shard", "0/2") == 0  # the last shard merges by itself
    merged = [json.loads(line)["qid"] for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert merged == [f"synthetic-{i:05d}" for i in range(5)]
    shard1 = [json.loads(line)["qid"] for line in (out / "predictions.shard-1-of-2.jsonl").read_text().splitlines()]
    assert shard1 == ["synthetic-00001", "synthetic-00003"]
    first = scores_of(out)
    assert first["counts"]["scored"] == 5
    assert mgm_eval("merge", "--out", out) == 0
    assert scores_of(out)["metrics"] == first["metrics"]


def test_torchrun_environment_picks_the_shard(monkeypatch):
    from minigemini.evaluation.runner import parse_shard, shard_from_env

    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert shard_from_env() == (2, 3)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert shard_from_env() == (0, 1)
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "x", "1/0"):
        with pytest.raises(EvalError):
            parse_shard(bad)


def test_an_output_folder_is_not_mixed_with_another_run(tiny_checkpoint, tmp_path):
    data = write_synthetic_benchmark(tmp_path / "s", n=2)
    out = tmp_path / "run"
    mgm_eval("--model", tiny_checkpoint, "--bench", "synthetic", "--data", data, "--out", out, "--max-new-tokens", 1)
    other = write_llava_jsonl(tmp_path / "t")
    with pytest.raises(EvalError, match="benchmark='synthetic'"):
        mgm_eval("--model", tiny_checkpoint, "--bench", "textvqa", "--data", other, "--out", out)


def test_synthetic_without_data_writes_its_own(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        mgm_eval(
            "--model", tiny_checkpoint, "--bench", "synthetic", "--out", out, "--synthetic-n", 4, "--max-new-tokens", 2
        )
        == 0
    )
    assert (out / "synthetic-data" / "questions.jsonl").is_file()
    assert scores_of(out)["counts"]["scored"] == 4
    assert "synthetic: accuracy=" in capsys.readouterr().out


def test_mme_folders(tiny_checkpoint, tmp_path):
    out = tmp_path / "run"
    mgm_eval(
        "--model",
        tiny_checkpoint,
        "--bench",
        "mme",
        "--data",
        write_mme(tmp_path / "MME"),
        "--out",
        out,
        "--max-new-tokens",
        2,
    )
    scores = scores_of(out)
    assert scores["counts"]["scored"] == 3 and scores["counts"]["unreadable"] == 2
    assert set(scores["subtasks"]) == {"artwork", "code_reasoning"}
    assert scores["metrics"]["perception"] is not None and scores["metrics"]["cognition"] is not None


def test_mmbench_tsv(tiny_checkpoint, tmp_path):
    out = tmp_path / "run"
    mgm_eval(
        "--model",
        tiny_checkpoint,
        "--bench",
        "mmbench",
        "--data",
        write_mmbench_tsv(tmp_path / "MMBench_DEV_EN.tsv", circular=True),
        "--out",
        out,
        "--max-new-tokens",
        2,
        "--batch-size",
        4,
    )
    scores = scores_of(out)
    assert scores["counts"]["scored"] == 8 and scores["questions"] == 2 and scores["counts"]["unreadable"] == 2
    assert scores["counts"]["unparsed"] <= 8


def test_parquet_benchmarks(tiny_checkpoint, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(mmmu_table(), tmp_path / "mmmu.parquet")
    pq.write_table(mathvista_table(), tmp_path / "mathvista.parquet")
    pq.write_table(pa.Table.from_pylist(pope_rows()), tmp_path / "pope.parquet")
    for bench, expected_scored, expected_invalid in (("mmmu", 2, 2), ("mathvista", 2, 1), ("pope", 4, 1)):
        out = tmp_path / bench
        mgm_eval(
            "--model",
            tiny_checkpoint,
            "--bench",
            bench,
            "--data",
            tmp_path / f"{bench}.parquet",
            "--out",
            out,
            "--max-new-tokens",
            2,
        )
        scores = scores_of(out)
        assert scores["counts"]["scored"] == expected_scored, bench
        assert scores["counts"]["unreadable"] == expected_invalid, bench
        assert scores["counts"]["generation_errors"] == 0


def test_save_to_disk_dataset(tiny_checkpoint, tmp_path):
    import datasets

    dataset = datasets.Dataset.from_list(pope_rows()[:4]).cast_column("image", datasets.Image())
    dataset.save_to_disk(str(tmp_path / "pope"))
    out = tmp_path / "run"
    mgm_eval(
        "--model",
        tiny_checkpoint,
        "--bench",
        "pope",
        "--data",
        tmp_path / "pope",
        "--out",
        out,
        "--max-new-tokens",
        2,
        "--limit",
        3,
    )
    scores = scores_of(out)
    assert scores["counts"]["questions_in_file"] == 4 and scores["counts"]["scored"] == 3
    assert scores["counts"]["left_out_by_limit"] == 1 and scores["status"] == "partial"
    assert set(scores["by_category"]) == {"adversarial", "random"}


def test_mmvet_with_a_judge(tiny_checkpoint, tmp_path, monkeypatch):
    root = tmp_path / "mm-vet"
    write_png(root / "images" / "v1_0.png")
    write_png(root / "images" / "v1_1.png", (0, 0, 255))
    (root / "mm-vet.json").write_text(
        json.dumps(
            {
                "v1_0": {"imagename": "v1_0.png", "capability": ["rec"], "question": "What colour?", "answer": "red"},
                "v1_1": {
                    "imagename": "v1_1.png",
                    "capability": ["rec", "ocr"],
                    "question": "What colour?",
                    "answer": "blue",
                },
            }
        )
    )
    out = tmp_path / "run"
    mgm_eval("--model", tiny_checkpoint, "--bench", "mmvet", "--data", root, "--out", out, "--max-new-tokens", 2)
    assert scores_of(out)["metrics"]["score"] is None and scores_of(out)["judge_required"]
    monkeypatch.setenv("JUDGE_KEY", "k")
    with JudgeServer(lambda prompt, body: "0.5") as server:
        mgm_eval(
            "merge", "--out", out, "--judge-url", server.url, "--judge-model", "grader", "--judge-key-env", "JUDGE_KEY"
        )
    scores = scores_of(out)
    assert scores["metrics"]["score"] == pytest.approx(50.0) and scores["judge"]["model"] == "grader"
    assert len(server.requests) == 2 and server.requests[0]["authorization"] == "Bearer k"
    assert (out / "judge-cache.jsonl").is_file()


def test_command_errors(tiny_checkpoint, tmp_path):
    with pytest.raises(EvalError, match="needs --model and --bench"):
        mgm_eval("--bench", "textvqa")
    with pytest.raises(ValueError, match="unknown benchmark 'nope'"):
        mgm_eval("--model", tiny_checkpoint, "--bench", "nope", "--data", tmp_path)
    with pytest.raises(FileNotFoundError):
        mgm_eval("--model", tiny_checkpoint, "--bench", "textvqa", "--data", tmp_path / "missing.jsonl")
    with pytest.raises(EvalError, match="both --judge-url and --judge-model"):
        mgm_eval("merge", "--out", tmp_path, "--judge-url", "http://127.0.0.1:9/v1")
    with pytest.raises(EvalError, match="not an `mgm eval` output folder"):
        mgm_eval("merge", "--out", tmp_path)


def test_list_and_synthetic_subcommands(tmp_path, capsys):
    assert mgm_eval("list") == 0
    assert "mmbench" in capsys.readouterr().out
    assert mgm_eval("synthetic", tmp_path / "s", "--n", 3, "--seed", 5) == 0
    lines = (tmp_path / "s" / "questions.jsonl").read_text().splitlines()
    assert len(lines) == 3 and (tmp_path / "s" / "images" / "00002.png").is_file()
    again = tmp_path / "t"
    write_synthetic_benchmark(again, n=3, seed=5)
    assert (again / "questions.jsonl").read_text() == (tmp_path / "s" / "questions.jsonl").read_text()


def test_through_the_mgm_command(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    from minigemini import cli

    assert cli.main(["eval", "list"]) == 0
    capsys.readouterr()
    # bad input: one clear line on stderr and exit status 2, no traceback
    assert cli.main(["eval", "--model", str(tiny_checkpoint), "--bench", "mme", "--data", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mgm eval: error: benchmark data not found") and len(err.strip().splitlines()) == 1
    assert cli.main(["eval", "merge", "--out", str(tmp_path)]) == 2
    assert "not an `mgm eval` output folder" in capsys.readouterr().err
