"""Benchmark files in the formats their authors distribute -> samples (no model involved)."""

import json

import pytest

from minigemini.evaluation.benchmarks import get_benchmark
from minigemini.evaluation.loader import LoadOptions
from minigemini.evaluation.runner import load_samples
from minigemini.evaluation.samples import InvalidRow
from tests.evaluation.eval_helpers import mathvista_table, mmmu_table, pope_rows, write_llava_jsonl, write_png


def load(bench, data, **kwargs):
    return load_samples(get_benchmark(bench), LoadOptions.create(data, **kwargs))


def test_llava_jsonl_rows_and_bad_rows(tmp_path):
    samples, invalid = load("textvqa", write_llava_jsonl(tmp_path))
    assert [s.qid for s in samples] == ["q1", "q2", "q3"]
    first = samples[0]
    assert (
        first.prompt
        == "What colour is it?\nReference OCR token: STOP\nAnswer the question using a single word or phrase."
    )
    assert first.images == [str(tmp_path / "images" / "a.png")]  # found under images/
    assert first.gold[:4] == ["red"] * 4
    assert first.meta == {"category": "colour", "image_id": "q1", "question": "What colour is it?"}
    assert samples[2].images == [str(tmp_path / "gone.png")]  # missing: reported when the run loads it
    assert [(r.where, r.reason.split(" (")[0]) for r in invalid] == [
        ("questions.jsonl:4", "not valid JSON"),
        ("questions.jsonl:5", "unknown answer format dict: \"{'weird': 1}\""),
    ]


def test_gqa_seed_scienceqa_annotations(tmp_path):
    write_png(tmp_path / "x.jpg")
    (tmp_path / "gqa.jsonl").write_text(
        json.dumps({"question_id": "201", "image": "x.jpg", "text": "Which side?"}) + "\n"
    )
    (tmp_path / "testdev_balanced_questions.json").write_text(json.dumps({"201": {"answer": "left", "question": "?"}}))
    samples, _ = load("gqa", tmp_path / "gqa.jsonl", annotations=tmp_path / "testdev_balanced_questions.json")
    assert samples[0].gold == ["left"]

    (tmp_path / "seed.jsonl").write_text(
        json.dumps(
            {
                "question_id": 5,
                "image": "x.jpg",
                "text": "How many?\nA. 1\nB. 2\nC. 3\nD. 4\n"
                "Answer with the option's letter from the given choices directly.",
            }
        )
        + "\n"
    )
    (tmp_path / "SEED-Bench.json").write_text(
        json.dumps(
            {
                "question_type": {"Instances Counting": 3},
                "questions": [{"question_id": "5", "answer": "C", "question_type_id": 3}],
            }
        )
    )
    samples, _ = load("seed", tmp_path / "seed.jsonl", annotations=tmp_path / "SEED-Bench.json")
    assert samples[0].gold == "C" and samples[0].meta["category"] == "Instances Counting"
    assert samples[0].meta["num_options"] == 4

    (tmp_path / "llava_test_CQM-A.json").write_text(
        json.dumps(
            [
                {
                    "id": "11",
                    "image": "x.jpg",
                    "conversations": [
                        {
                            "from": "human",
                            "value": "<image>\nContext: none\nQuestion: Which is a mammal?\nOptions: (A) cat (B) trout (C) frog",
                        },
                        {"from": "gpt", "value": "The answer is A."},
                    ],
                },
                {"id": "12", "conversations": [{"from": "human", "value": "Question: 2+2?\nOptions: (A) 3 (B) 4"}]},
            ]
        )
    )
    problems = {"11": {"answer": 0, "choices": ["cat", "trout", "frog"]}, "12": {"answer": 1, "choices": ["3", "4"]}}
    (tmp_path / "problems.json").write_text(json.dumps(problems))
    samples, _ = load("scienceqa", tmp_path / "llava_test_CQM-A.json", annotations=tmp_path / "problems.json")
    assert [s.gold for s in samples] == ["A", "B"]
    assert samples[0].prompt.endswith("(C) frog\nAnswer with the option's letter from the given choices directly.")
    assert samples[0].meta["num_options"] == 3 and samples[0].meta["has_image"]
    assert samples[1].images == [] and not samples[1].meta["has_image"]


def test_parquet_mmmu_and_mathvista(tmp_path):
    import pyarrow.parquet as pq

    (tmp_path / "mmmu" / "Art").mkdir(parents=True)
    pq.write_table(mmmu_table(), tmp_path / "mmmu" / "Art" / "validation-00000-of-00001.parquet")
    samples, invalid = load("mmmu", tmp_path / "mmmu", split="validation")
    assert [s.qid for s in samples] == ["validation_Art_1", "validation_Math_2"]
    assert samples[0].prompt == (
        "<image 1> Which style?\n(A) Baroque\n(B) Cubism\n\n"
        "Answer with the option's letter from the given choices directly."
    )
    assert samples[1].prompt == "<image 1> What is x?\nAnswer the question using a single word or phrase."
    assert isinstance(samples[0].images[0], bytes) and samples[0].meta["subject"] == "Art"
    assert [r.reason.split(":")[0] for r in invalid] == [
        "options are not a list of at least two",
        "unknown question_type 'essay'",
    ]
    with pytest.raises(FileNotFoundError, match="split 'test'"):
        load("mmmu", tmp_path / "mmmu", split="test")
    pq.write_table(mmmu_table(), tmp_path / "mmmu" / "Art" / "dev-00000-of-00001.parquet")
    with pytest.raises(ValueError, match=r"several splits \(dev, validation\): choose one with --split"):
        load("mmmu", tmp_path / "mmmu")
    assert len(load("mmmu", tmp_path / "mmmu", split="dev")[0]) == 2

    pq.write_table(mathvista_table(), tmp_path / "testmini.parquet")
    samples, invalid = load("mathvista", tmp_path / "testmini.parquet")
    assert samples[0].prompt == "Hint: integer\nQuestion: How many birds?"  # the data's own query
    assert samples[1].prompt == (
        "Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, D, "
        "at the end.\nQuestion: Which fraction?\nChoices:\n(A) 3/11\n(B) 8/11"
    )
    assert samples[1].meta["metadata"]["skills"] == ["algebra"]
    assert "not one of the choices" in invalid[0].reason


def test_save_to_disk_folder(tmp_path):
    import io

    import datasets
    from PIL import Image

    rows = pope_rows()
    for row in rows:
        row["image"] = Image.open(io.BytesIO(row["image"]["bytes"]))
    features = datasets.Features(
        {
            "question_id": datasets.Value("string"),
            "question": datasets.Value("string"),
            "answer": datasets.Value("string"),
            "category": datasets.Value("string"),
            "image": datasets.Image(),
        }
    )
    dataset = datasets.Dataset.from_list(rows, features=features)
    datasets.DatasetDict({"test": dataset}).save_to_disk(str(tmp_path / "pope"))
    samples, invalid = load("pope", tmp_path / "pope")
    assert len(samples) == 4 and len(invalid) == 1 and "perhaps" in invalid[0].reason
    assert samples[0].images[0].size == (12, 9)  # a decoded PIL image
    assert [s.meta["category"] for s in samples] == ["adversarial", "adversarial", "random", "random"]


def test_unknown_file_type_and_missing_data(tmp_path):
    (tmp_path / "data.xml").write_text("<x/>")
    with pytest.raises(ValueError, match="unknown benchmark file type"):
        load("textvqa", tmp_path / "data.xml")
    with pytest.raises(FileNotFoundError):
        load("textvqa", tmp_path / "nope.jsonl")
    assert isinstance(InvalidRow("a", "b").to_json(), dict)


def test_answer_list_reads_the_layouts_benchmarks_keep_answers_in():
    from minigemini.evaluation.readers import answer_list
    from minigemini.evaluation.samples import Unreadable

    assert answer_list(["a", "b"]) == ["a", "b"]
    assert answer_list("['a', \"b's\"]") == ["a", "b's"]  # VLMEvalKit's TSV cell
    assert answer_list("one answer") == ["one answer"] and answer_list("[broken") == ["[broken"]
    assert answer_list([3, 4.5]) == ["3", "4.5"] and answer_list(None) is None
    with pytest.raises(Unreadable):
        answer_list([{"answer": "a"}])
