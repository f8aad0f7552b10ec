"""Stage 1 and stage 2 on the Trainer with a tiny model: what is frozen, that loss goes down, skips, checkpoints, resume."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoProcessor, TrainerCallback

from minigemini import MiniGeminiForConditionalGeneration, MiniGeminiProcessor
from minigemini.data import ModalityLengthGroupedSampler
from minigemini.train import TrainConfig, configure_trainable, train
from minigemini.train.run import build_dataset
from tests.conftest import tiny_model
from tests.helpers.training import caption_records, conversation, make_model_dir, write_images, write_jsonl


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    model_dir = make_model_dir(root / "model")
    names = write_images(root / "images", 4)
    (root / "images" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    captions = caption_records(names) * 2
    stage1 = write_jsonl(
        root / "stage1.jsonl",
        captions[:4]
        + ["{broken json"]
        + [conversation("<image>\nDescribe.", "Gone.", image="missing.png")]
        + [conversation("<image>\nDescribe.", "Noise.", image="corrupt.png")]
        + captions[4:],
    )
    mixed = captions[:4] + [
        conversation("Is a cat an animal?", "Yes, a small one."),
        conversation("What colour is the sofa?", "Red.", more=[("And the ball?", "Blue.")]),
        conversation("<image>\n<image>\nCompare the images.", "They differ.", image=names[:2]),
        conversation("Say hi.", "Hi!"),
    ]
    stage2 = write_jsonl(root / "stage2.jsonl", mixed)
    return {"root": root, "model": model_dir, "images": str(root / "images"), "stage1": stage1, "stage2": stage2}


def config(workspace, name, **overrides):
    values = {
        "model": workspace["model"],
        "image_folder": [workspace["images"]],
        "output": str(workspace["root"] / name),
        "global_batch_size": 4,
        "per_device_batch_size": 2,
        "precision": "fp32",
        "gradient_checkpointing": False,
        "dataloader_workers": 0,
        "save_steps": 100,
        "warmup_ratio": 0.0,
        "progress": False,
        "seed": 0,
    }
    values.update(overrides)
    return TrainConfig.from_sources(None, values)


def weights(path):
    return load_file(os.path.join(path, "model.safetensors"))


def changed(before, after, prefix):
    names = [n for n in before if n.startswith(prefix)]
    assert names, prefix
    # frozen weights may come back in the half precision they were trained in
    return any(not torch.equal(before[n].to(after[n].dtype), after[n]) for n in names)


def logged_losses(output):
    with open(os.path.join(output, "train_log.jsonl")) as f:
        return [r["loss"] for r in map(json.loads, f) if "loss" in r]


def test_stages_train_exactly_the_right_parameters():
    model = tiny_model()
    configure_trainable(model, stage=1)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("model.mining.", "model.mm_projector.")) for n in trainable)
    assert trainable == {
        n for n in dict(model.named_parameters()) if n.startswith(("model.mining.", "model.mm_projector."))
    }

    configure_trainable(model, stage=2)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {n.split(".")[1] for n in trainable if n.startswith("model.")} == {
        "mining",
        "mm_projector",
        "language_model",
    }
    assert "lm_head.weight" in trainable

    configure_trainable(model, stage=2, tune_vision=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("model.vision_tower.") for n in trainable)
    assert not any(n.startswith("model.vision_tower_aux.") for n in trainable)


def test_stage_one_reduces_the_loss_skips_bad_records_and_saves_a_loadable_model(workspace):
    cfg = config(
        workspace, "stage1", stage=1, data=[workspace["stage1"]], learning_rate=1e-2, max_steps=8, save_steps=4
    )
    assert cfg.template == "plain" and cfg.pad_to_square is False
    result = train(cfg)
    summary = result.summary

    losses = logged_losses(cfg.output)
    assert len(losses) == 8 and sum(losses[-2:]) < sum(losses[:2])
    assert summary["skipped"] == {"bad_json": 1, "missing_image": 1, "unreadable_image": 1}
    assert summary["dataset_samples"] == 9  # the corrupt image is only found when loaded
    assert 16 <= summary["samples_seen"] < 8 * 4  # samples trained on; the corrupt one never
    assert summary["tokens"] > 0 and summary["time_s"] > 0
    with open(os.path.join(cfg.output, "train_summary.json")) as f:
        assert json.load(f)["skipped_total"] == 3

    before, after = weights(workspace["model"]), weights(cfg.output)
    assert changed(before, after, "model.mining.") and changed(before, after, "model.mm_projector.")
    for frozen in ("model.language_model.", "lm_head.", "model.vision_tower.", "model.vision_tower_aux."):
        assert not changed(before, after, frozen), frozen

    assert sorted(p for p in os.listdir(cfg.output) if p.startswith("checkpoint-")) == ["checkpoint-8"]  # limit 1
    for folder in (cfg.output, os.path.join(cfg.output, "checkpoint-8")):
        model = MiniGeminiForConditionalGeneration.from_pretrained(folder)
        processor = AutoProcessor.from_pretrained(folder)  # a trained checkpoint, through transformers' door
        assert type(processor) is MiniGeminiProcessor
        assert processor.template_name == "vicuna_v1"  # the model's template, not stage 1's plain
        assert model.config.image_token_id == processor.image_token_id


@pytest.mark.parametrize(
    ("stage", "template", "expected"),
    [(1, None, "plain"), (1, "model", "vicuna_v1"), (2, None, "vicuna_v1"), (2, "plain", "plain")],
)
def test_each_stage_renders_its_template_or_the_models_own_when_asked(workspace, stage, template, expected):
    cfg = config(workspace, "templates", stage=stage, data=[workspace["stage1"]], template=template)
    cfg.validate()
    processor = MiniGeminiProcessor.from_pretrained(workspace["model"])
    assert processor.template_name == "vicuna_v1"
    assert build_dataset(cfg, processor).encoder.template == expected


def test_stage_two_trains_the_llm_with_mixed_batches_in_bf16(workspace):
    cfg = config(
        workspace,
        "stage2",
        stage=2,
        data=[workspace["stage2"]],
        learning_rate=1e-3,
        projector_lr=5e-3,
        max_steps=2,
        precision="bf16",
        gradient_checkpointing=True,
        length_group_steps=3,
    )
    assert cfg.template == "model" and cfg.sampler == "modality_length"
    result = train(cfg)
    trainer = result.trainer
    sampler = trainer._get_train_sampler()
    assert isinstance(sampler, ModalityLengthGroupedSampler) and sampler.length_group_steps == 3
    lrs = sorted({group["initial_lr"] for group in trainer.optimizer.param_groups})
    assert lrs == [1e-3, 5e-3]
    multimodal = {
        id(p) for n, p in trainer.model.named_parameters() if n.startswith(("model.mining.", "model.mm_projector."))
    }
    for group in trainer.optimizer.param_groups:
        assert all((id(p) in multimodal) == (group["initial_lr"] == 5e-3) for p in group["params"])

    before, after = weights(workspace["model"]), weights(cfg.output)
    assert changed(before, after, "model.language_model.") and changed(before, after, "model.mining.")
    assert not changed(before, after, "model.vision_tower.") and not changed(before, after, "model.vision_tower_aux.")
    assert result.summary["samples_seen"] == 8 and result.summary["skipped_total"] == 0
    assert all(torch.isfinite(torch.tensor(loss)) for loss in logged_losses(cfg.output))


class Crash(TrainerCallback):
    """Fails the run right after the checkpoint of `step` is written, like a killed job."""

    def __init__(self, step):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt("simulated interruption")


def test_interrupted_training_resumes_from_the_last_checkpoint(workspace):
    common = {"stage": 2, "data": [workspace["stage2"]], "learning_rate": 1e-3, "max_steps": 4, "save_steps": 2}
    reference = train(config(workspace, "uninterrupted", **common))

    interrupted = config(workspace, "interrupted", **common)
    with pytest.raises(KeyboardInterrupt):
        train(interrupted, callbacks=[Crash(step=2)])
    assert os.path.isdir(os.path.join(interrupted.output, "checkpoint-2"))
    with pytest.raises(FileExistsError, match="--resume"):
        train(interrupted)
    resumed = train(config(workspace, "interrupted", resume=True, **common))
    assert resumed.trainer.state.global_step == 4
    # the summary counts the whole run, the part before the interruption included
    assert resumed.summary["samples_seen"] == reference.summary["samples_seen"] == 4 * 4

    expected, got = weights(reference.output), weights(resumed.output)
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, rtol=0, atol=1e-6, msg=name)
