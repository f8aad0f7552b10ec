"""TRL's SFTTrainer fine-tunes a tiny converted Mini-Gemini on image conversations in the dataset format TRL documents
for vision-language models ("images" + "messages"): its collator calls the processor through apply_chat_template, and
both image tensors (pixel_values, high_res_pixel_values) reach the model."""

from __future__ import annotations

import math

import pytest
import torch
from datasets import Dataset
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor, AutoTokenizer
from trl import SFTConfig, SFTTrainer  # the `trl` extra

from minigemini.convert.release import convert_release_checkpoint
from tests.helpers.tiny_release import make_release

COLOURS = {"red": (255, 0, 0), "green": (0, 200, 0), "blue": (0, 0, 255), "black": (0, 0, 0)}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("trl")
    release = make_release(root / "release", "llama", tokenizer="vicuna")
    convert_release_checkpoint(release.path, root / "mgm")
    return root / "mgm"


def dataset() -> Dataset:
    rows = [
        {
            "images": [Image.new("RGB", (20, 16), rgb)],
            "messages": [
                {"role": "user", "content": "What colour is this picture?"},
                {"role": "assistant", "content": f"It is {name}."},
            ],
        }
        for name, rgb in COLOURS.items()
    ]
    return Dataset.from_list(rows)


def test_sft_trainer_fine_tunes_a_converted_model(converted, tmp_path):
    model = AutoModelForImageTextToText.from_pretrained(converted, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(converted)
    args = SFTConfig(
        output_dir=str(tmp_path / "out"),
        max_steps=3,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        seed=0,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset(), processing_class=processor)

    # TRL's own collator, through the processor's chat template: both image tensors, one image per conversation
    batch = trainer.data_collator([dataset()[0], dataset()[1]])
    assert set(batch) == {"input_ids", "attention_mask", "pixel_values", "high_res_pixel_values", "labels"}
    assert batch["pixel_values"].shape[0] == batch["high_res_pixel_values"].shape[0] == 2
    image_tokens = batch["input_ids"] == processor.image_token_id
    assert image_tokens.sum(1).tolist() == [processor.image_seq_length] * 2
    # TRL labels every non-padding token, image tokens included; the model's loss ignores those
    assert (batch["labels"][image_tokens] == processor.image_token_id).all()
    model.eval()
    with torch.no_grad():
        counted = model(**batch).loss
        masked = model(**{**batch, "labels": batch["labels"].masked_fill(image_tokens, -100)}).loss
    assert torch.equal(counted, masked)

    projector = {k: v.clone() for k, v in model.named_parameters() if "mm_projector" in k}
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 3 and all(math.isfinite(loss) for loss in losses)
    assert any(not torch.equal(projector[k], v) for k, v in model.named_parameters() if k in projector)


def test_trl_batches_lack_the_bos_the_tokenizer_adds(tmp_path):
    """TRL's collator tokenizes with add_special_tokens=False (its templates write the BOS themselves). The release
    templates leave the BOS to the tokenizer, as the release trained, so where the tokenizer adds one (Llama, Gemma,
    Mistral), TRL trains on sequences without it while mgm.chat and `mgm train` have it (docs/transformers.md)."""
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    from minigemini.processing import build_processor
    from tests.conftest import build_tokenizer, tiny_config

    processor = build_processor(tiny_config(), AutoTokenizer.from_pretrained(build_tokenizer(tmp_path)), "vicuna_v1")
    row = dataset()[0]
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": row["images"][0]},
                {"type": "text", "text": row["messages"][0]["content"]},
            ],
        },
        row["messages"][1],
    ]
    ours = processor.apply_chat_template(messages, tokenize=True, return_dict=True)
    trl_batch = DataCollatorForVisionLanguageModeling(processor)([row])
    bos = processor.tokenizer.bos_token_id
    assert ours["input_ids"][0, 0] == bos and trl_batch["input_ids"][0, 0] != bos
    assert torch.equal(trl_batch["input_ids"][0], ours["input_ids"][0, 1:])
    assert torch.equal(trl_batch["pixel_values"], ours["pixel_values"])
