import copy

import pytest
import torch
from transformers import AutoConfig, AutoModelForImageTextToText

from minigemini import MiniGeminiConfig, MiniGeminiForConditionalGeneration
from minigemini.modeling import IGNORE_INDEX
from tests.conftest import TEXT_CONFIGS, image_inputs, prompt_ids, tiny_config, tiny_model


@pytest.mark.parametrize("text_type", sorted(TEXT_CONFIGS))
@pytest.mark.parametrize("hd", [False, True])
def test_forward_shapes_and_visual_token_count(text_type, hd):
    model = tiny_model(text_type, hd)
    config = model.config
    assert config.image_seq_length == (80 if hd else 16)  # 5N in HD, N otherwise; N = 4x4
    images = image_inputs(config, num_images=2)
    features = model.get_image_features(**images)
    assert features.shape == (2, config.image_seq_length, config.text_config.hidden_size)
    ids = torch.tensor([prompt_ids(config, [1, 5], [6, 7], images=2)])
    out = model(input_ids=ids, labels=ids, **images)
    assert out.logits.shape == (1, ids.shape[1], config.text_config.vocab_size)
    assert out.image_hidden_states.shape == features.shape
    assert torch.isfinite(out.loss)
    assert model.model.language_model.config._attn_implementation == "sdpa"


def test_token_count_is_independent_of_hr_size():
    small = tiny_config(image_size_aux=32)
    large = tiny_config(image_size_aux=128)
    assert small.image_seq_length == large.image_seq_length == 16
    model = MiniGeminiForConditionalGeneration(large).eval()
    assert model.get_image_features(**image_inputs(large, 1)).shape[1] == 16


def test_image_features_are_spliced_in_order():
    model = tiny_model()
    config = model.config
    images = image_inputs(config, num_images=3)
    features = model.get_image_features(**images)
    ids = torch.tensor([prompt_ids(config, [1, 5], [6], images=1) + prompt_ids(config, [], [7], images=2)])
    captured = {}
    hook = model.model.language_model.register_forward_pre_hook(
        lambda module, args, kwargs: captured.update(embeds=kwargs["inputs_embeds"]), with_kwargs=True
    )
    model(input_ids=ids, **images)
    hook.remove()
    positions = (ids[0] == config.image_token_id).nonzero().squeeze(1)
    torch.testing.assert_close(captured["embeds"][0, positions], features.reshape(-1, features.shape[-1]))
    text_positions = (ids[0] != config.image_token_id).nonzero().squeeze(1)
    torch.testing.assert_close(
        captured["embeds"][0, text_positions], model.get_input_embeddings()(ids[0, text_positions])
    )


def test_loss_ignores_image_positions():
    model = tiny_model()
    config = model.config
    images = image_inputs(config, 1)
    ids = torch.tensor([prompt_ids(config, [1, 5, 9], [6, 7, 8])])
    out = model(input_ids=ids, labels=ids.clone(), **images)
    masked = ids.masked_fill(ids == config.image_token_id, IGNORE_INDEX)
    logits = out.logits[0, :-1]
    expected = torch.nn.functional.cross_entropy(logits, masked[0, 1:], ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(out.loss, expected)


def test_text_only_batch_never_runs_the_encoders():
    model = tiny_model()
    calls = []
    for tower in (model.model.vision_tower, model.model.vision_tower_aux):
        tower.register_forward_hook(lambda *args: calls.append(1))
    ids = torch.tensor([[1, 5, 6, 7]])
    out = model(input_ids=ids, labels=ids)
    assert torch.isfinite(out.loss) and out.image_hidden_states is None
    model.generate(input_ids=ids, max_new_tokens=3, do_sample=False)
    assert calls == []


def test_placeholder_and_image_mismatch_raise_clear_errors():
    model = tiny_model()
    config = model.config
    ids = torch.tensor([prompt_ids(config, [1], [2], images=1)])
    with pytest.raises(ValueError, match=r"16 image placeholder tokens but 2 image\(s\)"):
        model(input_ids=ids, **image_inputs(config, 2))
    with pytest.raises(ValueError, match="no images were given"):
        model(input_ids=ids)
    with pytest.raises(ValueError, match="pass both or neither"):
        model(input_ids=ids, pixel_values=image_inputs(config, 1)["pixel_values"])
    with pytest.raises(ValueError, match="LR view"):
        model(input_ids=ids, **image_inputs(tiny_config(hd=True), 1))


def test_prompt_longer_than_context_is_refused():
    model = tiny_model(text_config={**tiny_config().text_config.to_dict(), "max_position_embeddings": 24})
    config = model.config
    ids = torch.tensor([prompt_ids(config, [1] * 5, [2] * 5)])  # 26 tokens with the 16 visual ones
    with pytest.raises(ValueError, match="longer than the language model's context of 24 tokens"):
        model(input_ids=ids, **image_inputs(config, 1))


def test_cache_is_accepted_under_either_name_and_returned_under_the_installed_one():
    from minigemini.cache_compat import CACHE_NAME, cache_of

    model = tiny_model()
    config = model.config
    ids = torch.tensor([prompt_ids(config, [1, 5], [6])])
    with torch.no_grad():
        prefill = model(input_ids=ids, **image_inputs(config, 1), use_cache=True)
    cache = cache_of(prefill)
    assert cache.get_seq_length() == ids.shape[1] and CACHE_NAME in prefill
    step_ids = torch.tensor([[7]])
    with torch.no_grad():
        by_old_name = model(input_ids=step_ids, past_key_values=copy.deepcopy(cache)).logits
        by_new_name = model(input_ids=step_ids, cache=copy.deepcopy(cache)).logits
    assert torch.equal(by_old_name, by_new_name)
    with pytest.raises(ValueError, match="not both"):
        model(input_ids=step_ids, past_key_values=cache, cache=cache)


@pytest.mark.parametrize("text_type", ["llama", "mixtral"])
@pytest.mark.parametrize("hd", [False, True])
def test_greedy_generation_with_and_without_cache_is_identical(text_type, hd):
    model = tiny_model(text_type, hd)
    config = model.config
    images = image_inputs(config, 1)
    ids = torch.tensor([prompt_ids(config, [1, 5, 9], [6, 7])])
    calls = []
    model.model.vision_tower_aux.register_forward_hook(lambda *args: calls.append(1))
    cached = model.generate(input_ids=ids, **images, max_new_tokens=8, do_sample=False, use_cache=True)
    assert len(calls) == 1, "images must be encoded once, at prefill"
    uncached = model.generate(input_ids=ids, **images, max_new_tokens=8, do_sample=False, use_cache=False)
    assert cached.shape == (1, ids.shape[1] + 8)
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("text_type", ["llama", "gemma", "qwen2"])
def test_left_padded_batch_generation_equals_one_by_one(text_type):
    model = tiny_model(text_type)
    config = model.config
    images = image_inputs(config, 3)
    prompts = [
        prompt_ids(config, [1, 5], [6, 7, 8, 9, 10]),
        prompt_ids(config, [1], [11]),
        [1, 12, 13, 14],  # text-only sample in the same batch
    ]
    per_sample_images = [slice(0, 1), slice(1, 2), slice(2, 2)]
    singles = []
    for prompt, which in zip(prompts, per_sample_images):
        kwargs = {k: v[which] for k, v in images.items()} if which.stop > which.start else {}
        out = model.generate(input_ids=torch.tensor([prompt]), **kwargs, max_new_tokens=6, do_sample=False)
        singles.append(out[0, len(prompt) :])
    width = max(map(len, prompts))
    pad = config.text_config.pad_token_id
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    batched = model.generate(
        input_ids=ids, attention_mask=mask, **{k: v[:2] for k, v in images.items()}, max_new_tokens=6, do_sample=False
    )
    for row, single in zip(batched[:, width:], singles):
        assert torch.equal(row, single)


def test_save_and_load_round_trip_by_model_type(tmp_path):
    model = tiny_model("gemma", hd=True)
    config = model.config
    images = image_inputs(config, 1)
    ids = torch.tensor([prompt_ids(config, [1, 5], [6, 7])])
    model.save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).model_type == "minigemini"
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, MiniGeminiForConditionalGeneration)
    assert isinstance(loaded.config, MiniGeminiConfig) and loaded.config.image_global
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(input_ids=ids, **images).logits, model(input_ids=ids, **images).logits, rtol=0, atol=0
        )


def test_freeze_vision_towers_leaves_mining_and_projector_trainable():
    model = tiny_model()
    model.freeze_vision_towers()
    assert not any(p.requires_grad for p in model.model.vision_tower.parameters())
    assert not any(p.requires_grad for p in model.model.vision_tower_aux.parameters())
    assert all(p.requires_grad for p in model.model.mining.parameters())
    assert all(p.requires_grad for p in model.model.mm_projector.parameters())


def test_resize_token_embeddings_for_a_new_image_token():
    model = tiny_model()
    model.resize_token_embeddings(200)
    assert model.get_input_embeddings().weight.shape[0] == 200
    assert model.lm_head.weight.shape[0] == 200
    assert model.config.text_config.vocab_size == 200
    ids = torch.tensor([[1, 199, 5]])
    assert model(input_ids=ids).logits.shape == (1, 3, 200)
