"""The LLaVA-style baseline of the ablation: patch_info_mining=False keeps LR tokens only."""

import torch

from minigemini.modeling import MiniGeminiForConditionalGeneration
from minigemini.train.stages import configure_trainable
from tests.conftest import image_inputs, prompt_ids, tiny_config


def test_baseline_has_no_hr_tower_and_projects_the_lr_tokens(tmp_path):
    torch.manual_seed(0)
    config = tiny_config(patch_info_mining=False)
    model = MiniGeminiForConditionalGeneration(config).eval()
    names = [name for name, _ in model.named_parameters()]
    assert not any("vision_tower_aux" in n or ".mining." in n for n in names)
    inputs = image_inputs(config, 2)
    features = model.get_image_features(**inputs)
    lr = model.model.vision_tower(inputs["pixel_values"])
    assert features.shape == (2, config.image_seq_length, config.text_config.hidden_size)
    torch.testing.assert_close(features, model.model.mm_projector(lr))

    ids = torch.tensor([prompt_ids(config, [5, 6], [7, 8])])
    logits = model(input_ids=ids, pixel_values=inputs["pixel_values"][:1],
                   high_res_pixel_values=inputs["high_res_pixel_values"][:1]).logits  # fmt: skip
    model.save_pretrained(tmp_path)
    loaded = MiniGeminiForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert loaded.config.patch_info_mining is False
    again = loaded(input_ids=ids, pixel_values=inputs["pixel_values"][:1],
                   high_res_pixel_values=inputs["high_res_pixel_values"][:1]).logits  # fmt: skip
    torch.testing.assert_close(logits, again)


def test_baseline_trains_its_projector_and_optionally_its_lr_tower():
    model = MiniGeminiForConditionalGeneration(tiny_config(patch_info_mining=False))
    configure_trainable(model, stage=2, tune_vision=True, tune_vision_aux=True, train_llm=False)
    trainable = {name.split(".")[1] for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"mm_projector", "vision_tower"}


def test_baseline_ignores_the_hr_geometry():
    """An HR size that no LR grid divides is fine when nothing mines it."""
    config = tiny_config(patch_info_mining=False, image_size_aux=72)
    assert config.image_seq_length == 16
