"""SupervisedDataset + collator: mixed batches, every kind of bad input skipped and counted, unusable data refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from minigemini import MiniGeminiForConditionalGeneration, MiniGeminiProcessor
from minigemini.data import DataError, MiniGeminiCollator, Skip, SupervisedDataset, read_records
from minigemini.modeling import IGNORE_INDEX
from tests.helpers.training import conversation, make_model_dir, write_images, write_jsonl


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("mgm"))


@pytest.fixture(scope="module")
def processor(model_dir):
    return MiniGeminiProcessor.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    names = write_images(folder, 3)
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    return folder, names


def decode_supervised(processor, labels):
    return processor.tokenizer.decode([t for t in labels.tolist() if t != IGNORE_INDEX], skip_special_tokens=False)


@pytest.mark.parametrize("template", ["vicuna_v1", "plain"])
def test_text_only_multi_image_and_caption_samples_in_one_batch(tmp_path, model_dir, processor, images, template):
    folder, names = images
    records = [
        conversation("Is a cat an animal?", "Yes."),  # text-only
        conversation("<image>\n<image>\nWhat differs?", "The colours.", image=names[:2]),  # two images
        conversation("Describe the image.", "A small dog.", image=names[2]),  # caption, placeholder added
    ]
    data = write_jsonl(tmp_path / "mixed.jsonl", records)
    dataset = SupervisedDataset(data, processor, image_folders=str(folder), template=template, max_length=256)
    assert len(dataset) == 3 and dataset.has_images == [False, True, True]
    assert [n > 0 for n in dataset.modality_lengths] == [False, True, True]

    items = [dataset[i] for i in range(3)]
    assert "pixel_values" not in items[0]
    assert items[1]["pixel_values"].shape == (2, 3, 32, 32) and items[1]["high_res_pixel_values"].shape == (
        2,
        3,
        64,
        64,
    )
    assert (items[1]["input_ids"] == processor.image_token_id).sum() == 2 * processor.image_seq_length
    separator = "\n" if template == "plain" else "</s>"
    assert (
        decode_supervised(processor, items[2]["labels"])
        == ("" if template == "plain" else " ") + "A small dog." + separator
    )

    batch = MiniGeminiCollator(pad_token_id=processor.tokenizer.pad_token_id)(items)
    lengths = [len(item["input_ids"]) for item in items]
    assert batch["input_ids"].shape == (3, max(lengths))
    assert batch["pixel_values"].shape[0] == batch["high_res_pixel_values"].shape[0] == 3  # images in sample order
    for row, n in enumerate(lengths):  # right padding, never supervised
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (max(lengths) - n)
        assert (batch["labels"][row, n:] == IGNORE_INDEX).all()
    assert batch["data_stats"]["samples"] == 3 and batch["data_stats"]["skipped"] == []
    assert batch["data_stats"]["sources"] == [item["source"] for item in items]
    assert "truncated" not in batch["data_stats"]

    model = MiniGeminiForConditionalGeneration.from_pretrained(model_dir)
    inputs = {k: v for k, v in batch.items() if k != "data_stats"}
    loss = model.train()(**inputs).loss
    assert torch.isfinite(loss)

    text_batch = MiniGeminiCollator(pad_token_id=processor.tokenizer.pad_token_id)([items[0]])
    assert "pixel_values" not in text_batch and "high_res_pixel_values" not in text_batch


def test_bad_records_are_skipped_with_a_counted_reason(tmp_path, processor, images):
    folder, names = images
    long_answer = " ".join(["a black cat sleeping on a red sofa"] * 12)
    lines = [
        json.dumps(conversation("<image>\nDescribe.", "A cat.", image=names[0])),  # 1 ok
        '{"conversations": [{"from": "human", "value": "hi"',  # 2 bad_json
        json.dumps([1, 2]),  # 3 bad_record
        json.dumps({"conversations": [{"from": "robot", "value": "x"}]}),  # 4 bad_record (role)
        json.dumps({"id": "e", "conversations": []}),  # 5 empty_conversation
        json.dumps(conversation("Hi", "   ")),  # 6 empty_conversation (blank answer)
        json.dumps(conversation("<image>\nDescribe.", "A cat.", image="nowhere.png")),  # 7 missing_image
        json.dumps(conversation("<image> <image> Two?", "One.", image=names[0])),  # 8 image_count_mismatch
        json.dumps(conversation("Tell me.", long_answer, more=[("<image>\nAnd this?", "A dog.")], image=names[1])),
        json.dumps(conversation("<image>\nDescribe.", long_answer, image=names[1])),  # 10 truncated, kept
        json.dumps(conversation("<image>\nDescribe.", "Noise.", image="corrupt.png")),  # 11 fails when loaded
        "",  # blank lines are ignored
        json.dumps(
            {"conversations": [{"from": "gpt", "value": "Hello!"}, *conversation("Hi", "Hey.")["conversations"]]}
        ),
    ]
    data = write_jsonl(tmp_path / "bad.jsonl", lines)
    dataset = SupervisedDataset(
        data, processor, image_folders=[str(tmp_path / "nope"), str(folder)], template="vicuna_v1", max_length=200
    )
    assert dataset.skips.as_dict() == {
        "bad_json": 1,
        "bad_record": 2,
        "empty_conversation": 2,
        "image_count_mismatch": 1,
        "missing_image": 1,
        "too_long": 1,
    }
    assert dataset.skips.examples["bad_json"][0].startswith("bad.jsonl:2")
    assert dataset.skips.examples["too_long"][0].startswith("bad.jsonl:9")
    assert [r.source for r in dataset.records] == ["bad.jsonl:1", "bad.jsonl:10", "bad.jsonl:11", "bad.jsonl:13"]
    assert max(dataset.lengths) == 200

    truncated = dataset[1]
    assert len(truncated["input_ids"]) == 200 and (truncated["input_ids"] == processor.image_token_id).sum() == 16
    assert truncated["truncated"] and "truncated" not in dataset[0]  # counted by the collator, as a stream's are
    broken = dataset[2]
    assert isinstance(broken, Skip) and (broken.reason, broken.source) == ("unreadable_image", "bad.jsonl:11")
    leading_assistant_dropped = dataset[3]
    assert decode_supervised(processor, leading_assistant_dropped["labels"]) == " Hey.</s>"

    collate = MiniGeminiCollator(pad_token_id=processor.tokenizer.pad_token_id)
    batch = collate([dataset[0], broken, truncated])
    assert batch["input_ids"].shape[0] == 2
    sources = ["bad.jsonl:1", "bad.jsonl:10"]
    assert batch["data_stats"] == {"samples": 2, "skipped": [broken], "truncated": 1, "sources": sources}
    only_bad = collate([broken])  # nothing left: a single unsupervised padding token keeps the step going
    assert only_bad["input_ids"].shape == (1, 1) and (only_bad["labels"] == IGNORE_INDEX).all()
    assert only_bad["data_stats"]["samples"] == 0


def test_json_array_files_and_image_lists(tmp_path, images):
    folder, names = images
    records = [conversation("<image>\n<image>\nCompare.", "Same.", image=names[:2]), "not a record"]
    (tmp_path / "data.json").write_text(json.dumps(records))
    found, skips = read_records(str(tmp_path / "data.json"), str(folder))
    assert len(found) == 1 and found[0].images == [str(folder / names[0]), str(folder / names[1])]
    assert skips.as_dict() == {"bad_record": 1} and skips.examples["bad_record"][0].startswith("data.json#1")


def test_image_paths_stay_inside_the_image_folder(tmp_path):
    folder = tmp_path / "pics"
    inside = write_images(folder, 1)[0]
    write_images(tmp_path, 1)  # tmp_path/img0.png: "../img0.png" from the folder exists, but outside it
    absolute = str(folder / inside)
    records = [
        conversation("<image>\nA?", "A.", image=inside),
        conversation("<image>\nB?", "B.", image="../img0.png"),
        conversation("<image>\nC?", "C.", image=absolute),
    ]
    data = write_jsonl(folder / "data.jsonl", records)
    found, skips = read_records(data, str(folder))  # a folder given: absolute paths are refused too
    assert [r.source for r in found] == ["data.jsonl:1"] and skips.as_dict() == {"bad_image_path": 2}
    assert skips.examples["bad_image_path"] == [
        "data.jsonl:2: image path ../img0.png leaves the image folder (../)",
        f"data.jsonl:3: absolute image path {absolute}: give it relative to the image folder",
    ]
    found, skips = read_records(data)  # no folder given: relative to the data file, absolute paths as they are
    assert [r.source for r in found] == ["data.jsonl:1", "data.jsonl:3"] and skips.as_dict() == {"bad_image_path": 1}


def test_unusable_data_is_an_error_before_training(tmp_path, processor, images):
    folder, _ = images
    bad = write_jsonl(
        tmp_path / "bad.jsonl", ["{oops", json.dumps(conversation("<image>\nHi", "Hey", image="gone.png"))]
    )
    with pytest.raises(DataError, match=r"no usable training sample.*bad_json: 1.*missing_image: 1"):
        SupervisedDataset(bad, processor, image_folders=str(folder), template="vicuna_v1")
    (tmp_path / "broken.json").write_text('[{"conversations": []},\n {"a": }]')
    with pytest.raises(DataError, match="line 2"):
        SupervisedDataset(str(tmp_path / "broken.json"), processor, template="vicuna_v1")
    with pytest.raises(DataError, match="not found"):
        SupervisedDataset(str(tmp_path / "missing.jsonl"), processor, template="vicuna_v1")


def test_stage_one_image_processing_can_skip_padding(tmp_path, processor, images):
    folder, names = images
    data = write_jsonl(tmp_path / "one.jsonl", [conversation("<image>\nDescribe.", "A cat.", image=names[0])])
    padded = SupervisedDataset(data, processor, image_folders=str(folder), template="plain")[0]
    cropped_processor = processor.image_processor.__class__(
        **{**processor.image_processor.to_dict(), "pad_to_square": False}
    )
    cropped = SupervisedDataset(
        data, processor, image_folders=str(folder), template="plain", image_processor=cropped_processor
    )[0]
    assert padded["pixel_values"].shape == cropped["pixel_values"].shape
    assert not torch.allclose(padded["pixel_values"], cropped["pixel_values"])
    np.testing.assert_array_equal(padded["input_ids"].numpy(), cropped["input_ids"].numpy())


def test_verify_images_finds_corrupt_images_before_training(tmp_path, processor, images):
    folder, names = images
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    data = write_jsonl(
        tmp_path / "data.jsonl",
        [conversation("<image>\nWhat?", "A.", image=str(folder / names[0]))]
        + [conversation("<image>\nWhat?", "B.", image=str(tmp_path / "corrupt.png"))],
    )
    lazy = SupervisedDataset(data, processor)
    assert len(lazy) == 2 and not lazy.skips.counts  # found only when a step draws it
    checked = SupervisedDataset(data, processor, verify_images=True)
    assert len(checked) == 1 and checked.skips.counts == {"unreadable_image": 1}
    assert checked.skips.examples["unreadable_image"][0].startswith("data.jsonl:2")
