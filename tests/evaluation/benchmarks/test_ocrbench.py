"""OCRBench (benchmarks/ocrbench.py): the authors' JSON; an answer is a substring of the prediction (HME100k
without spaces and with case kept); the score is the number right."""

from minigemini.evaluation.benchmarks.ocrbench import ocrbench_correct
from minigemini.evaluation.runner import score_run
from tests.evaluation.eval_helpers import by_question, scripted_run, write_json, write_png


def test_ocrbench_rule_worked_by_hand():
    assert ocrbench_correct("The word is HELLO\nworld", ["hello world"], "IIIT5K")  # lower-cased, newline a space
    assert not ocrbench_correct("helo", ["hello"], "IIIT5K")
    assert ocrbench_correct("x ^ { 2 } + 1", ["x^{2}+1"], "HME100k")  # spaces removed
    assert not ocrbench_correct("X^{2}+1", ["x^{2}+1"], "HME100k")  # case kept
    assert ocrbench_correct("it says 42", ["41", "42"], "docVQA")  # any of the answers


def test_ocrbench_run_counts_right_answers_by_group(tmp_path):
    write_png(tmp_path / "OCRBench_Images" / "a.png")
    items = [  # dataset, type, question, answers, prediction
        ("IIIT5K", "Regular Text Recognition", "Word one?", ["hello"], "HELLO"),
        ("IAM", "Handwriting Recognition", "Word two?", "world", "the world"),
        ("HME100k", "Handwritten Mathematical Expression Recognition", "Formula one?", ["x^{2}"], "x ^ {2}"),
        ("HME100k", "Handwritten Mathematical Expression Recognition", "Formula two?", ["y"], "z"),
        ("docVQA", "Doc-oriented VQA", "Total?", ["42"], "41"),
    ]
    rows = [
        {"dataset_name": d, "id": i, "image_path": "a.png", "question": q, "answers": a, "type": t}
        for i, (d, t, q, a, _) in enumerate(items)
    ]
    data = write_json(tmp_path / "OCRBench.json", rows)
    answers = by_question({q: p for _, _, q, _, p in items})
    scripted_run("ocrbench", data, tmp_path / "run", answers, image_dir=str(tmp_path / "OCRBench_Images"))
    scores = score_run(tmp_path / "run")
    assert scores["metrics"] == {"final_score": 3, "accuracy": 3 / 5}
    assert scores["by_group"] == {
        "Doc-oriented VQA": 0,
        "Handwritten Mathematical Expression Recognition": 1,
        "Text Recognition": 2,
    }


def test_ocrbench_vlmevalkit_tsv(tmp_path):
    """VLMEvalKit's OCRBench.tsv: answers as a list literal, base64 images, the type in `category` (HME100k known
    by its type)."""
    import base64
    import csv

    from tests.evaluation.eval_helpers import png_bytes

    image = base64.b64encode(png_bytes()).decode()
    data = tmp_path / "OCRBench.tsv"
    with open(data, "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["index", "image", "question", "answer", "category"], delimiter="\t")
        writer.writeheader()
        writer.writerow({"index": 0, "image": image, "question": "Formula?", "answer": "['x^{2}']",
                         "category": "Handwritten Mathematical Expression Recognition"})  # fmt: skip
        writer.writerow({"index": 1, "image": image, "question": "Word?", "answer": "['Hello', 'hi']",
                         "category": "Regular Text Recognition"})  # fmt: skip
    scripted_run("ocrbench", data, tmp_path / "run", by_question({"Formula": "x ^ {2}", "Word": "HI there"}))
    scores = score_run(tmp_path / "run")
    assert scores["metrics"] == {"final_score": 2, "accuracy": 1.0}
