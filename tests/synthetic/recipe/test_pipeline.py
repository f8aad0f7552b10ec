"""The default model's recipe end to end on a tiny LLM: world -> encoders -> read -> init -> align -> stage 1 -> chat
-> stage 2 -> export -> load."""

import json

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from minigemini.configuration import MiniGeminiConfig
from minigemini.synthetic.default_model import build_model, default_model_available, load_default_model
from minigemini.synthetic.recipe import encoders as pretraining
from minigemini.synthetic.recipe import reading
from minigemini.synthetic.recipe.encoders import ENCODERS_FILE, EncoderPretrainConfig, pretrain_encoders
from minigemini.synthetic.recipe.export import export_default_model, unpack_default_model
from minigemini.synthetic.recipe.pipeline import run_synthetic_recipe
from minigemini.synthetic.recipe.reading import ReadingPretrainConfig, pretrain_reading
from minigemini.synthetic.writer import write_world
from minigemini.train.lora import load_lora
from tests.conftest import CHATML_TEMPLATE, build_tokenizer
from tests.helpers.serving import script_answers
from tests.helpers.training import assert_same_adapter

pytest.importorskip("peft")


def tiny_llm(path) -> str:
    build_tokenizer(path, chat_template=CHATML_TEMPLATE)
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=300,
        max_position_embeddings=1024,
        bos_token_id=0,
        eos_token_id=1,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    return str(path)


def tower_config(llm_dir) -> MiniGeminiConfig:
    model, _ = build_model(llm_dir, "mining")
    return model.config


RECIPE = {
    "pipeline": "synthetic",
    "world": {"scenes": 8, "generation": 4, "seed": 0},
    "encoders": {"epochs": 1, "batch_size": 4, "warmup_steps": 1},
    "read": {"steps": 2, "batch_size": 4, "warmup_steps": 1},
    "align": {"batch_size": 4, "warmup_steps": 1, "region_weight": 1.0},
    "stage1": {
        "global_batch_size": 4,
        "per_device_batch_size": 4,
        "max_steps": 2,
        "gradient_checkpointing": False,
        "dataloader_workers": 0,
        "progress": False,
    },
    "stage2": {
        "lora": True,
        "lora_r": 4,
        "lora_alpha": 32,
        "tune_vision": False,
        "tune_vision_aux": False,
        "learning_rate": 1e-3,
        "global_batch_size": 4,
        "per_device_batch_size": 4,
        "max_steps": 2,
        "gradient_checkpointing": False,
        "dataloader_workers": 0,
        "progress": False,
    },
}


def test_encoder_pretraining_resumes_to_the_same_weights(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    llm = tiny_llm(tmp_path / "llm")
    write_world(tmp_path / "world", scenes=8, generation=0, seed=0)
    data = [str(tmp_path / "world" / "captions.json")]
    settings = EncoderPretrainConfig(epochs=2, batch_size=4, warmup_steps=1)
    config = tower_config(llm)
    straight = pretrain_encoders(config, data, [], tmp_path / "straight", settings, progress=False)

    calls = {"n": 0}
    forward = pretraining.ContrastiveTowers.forward

    def dies_in_epoch_two(self, *args):
        calls["n"] += 1
        if calls["n"] == 3:  # 2 steps per epoch: the first step of epoch 2
            raise KeyboardInterrupt
        return forward(self, *args)

    monkeypatch.setattr(pretraining.ContrastiveTowers, "forward", dies_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        pretrain_encoders(config, data, [], tmp_path / "resumed", settings, progress=False)
    assert (tmp_path / "resumed" / "checkpoint.pt").is_file() and not (tmp_path / "resumed" / ENCODERS_FILE).exists()
    monkeypatch.setattr(pretraining.ContrastiveTowers, "forward", forward)
    resumed = pretrain_encoders(config, data, [], tmp_path / "resumed", settings, progress=False)
    first, second = load_file(str(straight)), load_file(str(resumed))
    assert sorted(first) == sorted(second) and any(k.startswith("vision_tower_aux.") for k in first)
    for key in first:
        torch.testing.assert_close(first[key], second[key], rtol=0, atol=1e-6)
    fresh = build_model(llm, "mining")[0].state_dict()
    assert any(not torch.equal(first[k], fresh[f"model.{k}"]) for k in first)  # training moved the towers


def test_reading_pretraining_teaches_the_hr_tower_to_name_drawn_strings(tmp_path, monkeypatch, capsys):
    from safetensors.torch import load_file

    llm = tiny_llm(tmp_path / "llm")
    write_world(tmp_path / "world", scenes=8, generation=0, seed=0)
    data = [str(tmp_path / "world" / "captions.json")]
    config = tower_config(llm)
    encoders = pretrain_encoders(
        config,
        data,
        [],
        tmp_path / "encoders",
        EncoderPretrainConfig(epochs=1, batch_size=4, warmup_steps=1),
        progress=False,
    )
    settings = ReadingPretrainConfig(steps=60, batch_size=8, warmup_steps=1, checkpoint_steps=25)
    straight = pretrain_reading(config, encoders, data, tmp_path / "straight", settings)
    logged = [line.split() for line in capsys.readouterr().out.splitlines() if line.strip().startswith("step")]
    named = [float(words[words.index("named") + 1]) for words in logged]
    losses = [float(words[words.index("loss") + 1]) for words in logged]
    assert losses[-1] < 0.5 * losses[0] and named[-1] > named[0] + 0.3, logged  # measured: 1.6 -> 0.2, 0.0 -> 0.9

    before, after = load_file(str(encoders)), load_file(str(straight))
    assert sorted(before) == sorted(after)
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("vision_tower."))  # LR tower kept
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("vision_tower_aux."))

    calls = {"n": 0}
    forward = reading.StringReader.forward

    def dies_after_a_checkpoint(self, pixels):
        calls["n"] += 1
        if calls["n"] == 30:
            raise KeyboardInterrupt
        return forward(self, pixels)

    monkeypatch.setattr(reading.StringReader, "forward", dies_after_a_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        pretrain_reading(config, encoders, data, tmp_path / "resumed", settings, progress=False)
    assert (tmp_path / "resumed" / "checkpoint.pt").is_file() and not (tmp_path / "resumed" / ENCODERS_FILE).exists()
    monkeypatch.setattr(reading.StringReader, "forward", forward)
    resumed = load_file(str(pretrain_reading(config, encoders, data, tmp_path / "resumed", settings, progress=False)))
    for key in after:
        torch.testing.assert_close(after[key], resumed[key], rtol=0, atol=1e-6)
    assert not (tmp_path / "resumed" / "checkpoint.pt").exists()


class _Oracle(torch.nn.Module):
    """A reader whose logits are the targets it was built with (one image's string swapped for another with
    ``mistake``)."""

    def __init__(self, targets, classes, mistake=False):
        super().__init__()
        self.targets, self.classes, self.mistake = targets.clone(), classes, mistake
        if mistake:
            self.targets[0][self.targets[0] == 2] = 1

    def forward(self, high):
        return torch.nn.functional.one_hot(self.targets[: len(high)], self.classes).permute(0, 3, 1, 2).float()


@pytest.mark.parametrize("mistake", [False, True])
def test_named_strings_scores_each_drawn_string_on_its_cells(mistake):
    strings = ["7", "47", "cat"]
    targets = torch.zeros(2, 6, 6, dtype=torch.long)
    targets[0, 1, 1:3], targets[0, 4, 4] = 2, 3  # "47" and "cat" in image 0
    targets[1, 0:2, 0] = 1  # "7" in image 1
    metrics = reading.named_strings(
        _Oracle(targets, len(strings) + 1, mistake), torch.zeros(2, 3, 24, 24), targets, strings
    )
    assert metrics == {"words": 1.0, "numbers": 0.5 if mistake else 1.0}  # "47" read as "7"


def test_reading_pretraining_reports_held_out_reading(tmp_path, capsys):
    llm = tiny_llm(tmp_path / "llm")
    write_world(tmp_path / "world", scenes=16, generation=0, seed=0)
    data = [str(tmp_path / "world" / "captions.json")]
    config = tower_config(llm)
    warm_up = EncoderPretrainConfig(epochs=1, batch_size=4, warmup_steps=1)
    encoders = pretrain_encoders(config, data, [], tmp_path / "encoders", warm_up, progress=False)
    settings = ReadingPretrainConfig(steps=2, batch_size=4, warmup_steps=1, holdout=0.3)
    pretrain_reading(config, encoders, data, tmp_path / "read", settings)
    assert "Held-out strings named: " in capsys.readouterr().out
    metrics = json.loads((tmp_path / "read" / "reading_metrics.json").read_text())
    assert metrics["held_out_images"] >= 2 and set(metrics) - {"held_out_images"} <= {"words", "numbers"}
    assert len(metrics) >= 2 and all(0 <= v <= 1 for k, v in metrics.items() if k != "held_out_images")


def test_reading_pretraining_refuses_bad_settings_and_worlds_without_text(tmp_path):
    llm = tiny_llm(tmp_path / "llm")
    config = tower_config(llm)
    write_world(tmp_path / "world", scenes=8, generation=0, seed=0)
    captions = json.loads((tmp_path / "world" / "captions.json").read_text())
    for caption in captions:
        caption["regions"] = [{k: v for k, v in r.items() if k != "text"} for r in caption["regions"]]
    (tmp_path / "world" / "captions.json").write_text(json.dumps(captions))
    data = [str(tmp_path / "world" / "captions.json")]
    with pytest.raises(ValueError, match='no caption record .* has a region with drawn "text"'):
        pretrain_reading(config, tmp_path / "unused.safetensors", data, tmp_path / "none", progress=False)
    assert not (tmp_path / "none").exists()
    with pytest.raises(ValueError, match=r"crop must be a multiple of the HR tower's stride \(32 px\)"):
        pretrain_reading(
            config, tmp_path / "unused.safetensors", data, tmp_path / "none", ReadingPretrainConfig(crop=80)
        )
    with pytest.raises(ValueError, match="none_weight in"):
        ReadingPretrainConfig(none_weight=0).validate()
    with pytest.raises(ValueError, match=r"holdout must be in \[0, 1\)"):
        ReadingPretrainConfig(holdout=1.0).validate()


def test_recipe_trains_exports_and_loads_the_default_model(tmp_path, monkeypatch):
    llm = tiny_llm(tmp_path / "llm")
    (tmp_path / "prompts.txt").write_text("Say hello.\nName a fruit.\n")
    chat = {"prompts": str(tmp_path / "prompts.txt"), "max_new_tokens": 32, "repeats": 3}
    drill = {"max_steps": 1, "learning_rate": 1e-12}  # a step that moves nothing: the drill adapter is stage 2's
    recipe = {**RECIPE, "llm": llm, "chat": chat, "world": {**RECIPE["world"], "drills": ["count"]}, "drill": drill}
    with monkeypatch.context() as patch:  # the chat step's generation runs on the tiny LLM, its answer forced
        script_answers(patch, AutoTokenizer.from_pretrained(llm), "Hello there.")
        last = run_synthetic_recipe(recipe, tmp_path / "run", export=tmp_path / "export")
    stage2 = tmp_path / "run" / "mining" / "stage2"
    assert last == tmp_path / "run" / "mining" / "drill"
    summary = json.loads((stage2 / "train_summary.json").read_text())
    assert summary["lora"] and summary["steps"] == 2
    replay = tmp_path / "run" / "chat" / "replay.json"
    world = tmp_path / "run" / "world"
    # stage 2 trains on the dialogues and the LLM's own answers; the drill step goes on in stage 2's adapter with
    # stage 2's settings (but its own steps), the drills added
    assert summary["config"]["data"] == [str(world / "instructions.json"), str(replay)]
    assert summary["dataset_samples"] == len(json.loads((world / "instructions.json").read_text())) + 2 * 3
    drilled = json.loads((last / "train_summary.json").read_text())
    assert drilled["config"]["data"] == [str(world / "instructions.json"), str(world / "drills.json"), str(replay)]
    assert drilled["steps"] == 1 and drilled["config"]["lora_r"] == RECIPE["stage2"]["lora_r"]
    assert json.loads((last / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
        tmp_path / "run" / "mining" / "stage1"
    )
    assert_same_adapter(stage2, last)
    from safetensors.torch import load_file

    assert {r["conversations"][1]["value"] for r in json.loads(replay.read_text())} == {"Hello there."}
    assert default_model_available(tmp_path / "export")
    from minigemini.modeling import MiniGeminiForConditionalGeneration

    taught = load_file(str(tmp_path / "run" / "reading" / ENCODERS_FILE))  # the read step's tower is the one placed
    init = MiniGeminiForConditionalGeneration.from_pretrained(str(tmp_path / "run" / "mining" / "init")).state_dict()
    assert all(torch.equal(init[f"model.{k}"], v.to(init[f"model.{k}"].dtype)) for k, v in taught.items())

    # a second run finds every step done and trains nothing
    before = (last / "train_summary.json").stat().st_mtime_ns
    run_synthetic_recipe(recipe, tmp_path / "run")
    assert (last / "train_summary.json").stat().st_mtime_ns == before

    model, processor = load_default_model(tmp_path / "export", llm_dir=llm)
    reference = load_lora(str(last)).merge_and_unload().float().eval()
    exported = dict(model.named_parameters())
    for name, value in reference.named_parameters():
        if not name.startswith(("model.language_model.", "lm_head.")):  # towers, mining, projector: fp16 copies
            torch.testing.assert_close(exported[name], value.half().float(), rtol=0, atol=0)
    from PIL import Image

    image = Image.open(tmp_path / "run" / "world" / "images" / "000000.png")
    prompt = processor.apply_chat_template([{"role": "user", "content": "<image>\nDescribe the image."}])
    inputs = processor(text=prompt, images=[image])
    with torch.no_grad():
        got, want = model(**inputs).logits, reference(**inputs).logits
    # the training base held the frozen LLM in bf16; the export restores it from the fp32 LLM: bf16-level agreement
    assert (got - want).abs().max() < 0.05 * want.abs().max()

    # unpacked, the export is a LoRA stage's output again: the same model, and a stage trains on in its adapter
    adapter = unpack_default_model(tmp_path / "export", tmp_path / "unpacked", llm_dir=llm)
    with torch.no_grad():
        unpacked = load_lora(str(adapter)).merge_and_unload().eval()(**inputs).logits
    torch.testing.assert_close(unpacked, got, rtol=0, atol=1e-4 * got.abs().max().item())
    with pytest.raises(FileExistsError, match="not empty"):
        unpack_default_model(tmp_path / "export", tmp_path / "unpacked", llm_dir=llm)

    hd_model, hd_processor = load_default_model(tmp_path / "export", llm_dir=llm, hd=True)
    assert hd_model.config.image_seq_length == 5 * model.config.image_seq_length
    hd_inputs = hd_processor(text=prompt, images=[image])
    assert hd_inputs["pixel_values"].shape[1] == 5


def test_lr_only_variant_and_bad_recipes(tmp_path, monkeypatch):
    import safetensors.torch

    llm = tiny_llm(tmp_path / "llm")
    stage2 = run_synthetic_recipe({**RECIPE, "llm": llm}, tmp_path / "run", variant="lr_only")
    export_default_model(stage2, tmp_path / "export")
    assert MiniGeminiConfig.from_pretrained(tmp_path / "export").patch_info_mining is False
    weights = (tmp_path / "export" / "vision.safetensors").read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    with monkeypatch.context() as patch:  # an export that fails half-way keeps the previous one whole
        patch.setattr(safetensors.torch, "save_file", disk_full)
        with pytest.raises(OSError, match="No space"):
            export_default_model(stage2, tmp_path / "export")
    assert (tmp_path / "export" / "vision.safetensors").read_bytes() == weights
    assert default_model_available(tmp_path / "export")
    with pytest.raises(ValueError, match="LR-only"):
        load_default_model(tmp_path / "export", llm_dir=llm, hd=True)
    with pytest.raises(ValueError, match="unknown key"):
        run_synthetic_recipe({**RECIPE, "stage3": {}}, tmp_path / "run")
    with pytest.raises(ValueError, match="variant"):
        run_synthetic_recipe(RECIPE, tmp_path / "run", variant="huge")
    drilled = {**RECIPE, "llm": llm, "world": {**RECIPE["world"], "drills": ["count"]}, "drill": {"max_steps": 1}}
    with pytest.raises(FileNotFoundError, match="written without them"):  # a world from before the drills
        run_synthetic_recipe(drilled, tmp_path / "run")
    with pytest.raises(ValueError, match="no step uses them"):
        run_synthetic_recipe({key: value for key, value in drilled.items() if key != "drill"}, tmp_path / "run")
    assert not (tmp_path / "run" / "mining").exists()  # refused before any training
    with pytest.raises(FileNotFoundError, match="mgm train --recipe synthetic"):
        load_default_model(tmp_path / "nothing", llm_dir=llm)
