"""The memory planner (minigemini/memory.py): estimates from a config alone, checked against loaded models."""

from __future__ import annotations

import pytest
import torch

from minigemini.loading import load_pretrained
from minigemini.memory import count_parts, estimate, kv_cache_bytes, release_config, training_bytes, weight_bytes
from minigemini.profiling import generate_fixed, peak_memory_bytes, random_inputs
from minigemini.synthetic.default_model import default_checkpoint

pytest.importorskip("bitsandbytes")

CPU = torch.device("cpu")
#: text tokens of the measured prompt (+ 64 visual): enough that the KV cache and activations are a visible part
PROMPT_TOKENS = 1024


@pytest.fixture(scope="module")
def default_model():
    """The default model loaded in fp32 on the CPU, its LLM in ``scheme`` ("bf16": not quantised), once per scheme."""
    loaded = {}

    def load(scheme: str):
        if scheme not in loaded:
            quantization = None if scheme == "bf16" else scheme
            loaded[scheme] = load_pretrained(
                default_checkpoint(), device="cpu", dtype="fp32", quantization=quantization
            )[0]
        return loaded[scheme]

    yield load
    loaded.clear()


@pytest.mark.parametrize("scheme", ["bf16", "int8", "nf4"])
def test_the_estimate_matches_the_default_models_measured_footprint(scheme, default_model):
    """Within 10 % (it is within 2 %): the weights as loaded, the LLM quantised, the rest in the load's fp32."""
    model = default_model(scheme)
    estimated = weight_bytes(count_parts(model.config), scheme, dtype_bytes=4)
    assert estimated == pytest.approx(model.get_memory_footprint(), rel=0.10)


@pytest.mark.parametrize("scheme", ["bf16", "nf4"])  # int8 agrees too (-0.2 %), at 30 s more on this CPU
def test_the_estimated_peak_matches_the_default_models_measured_peak(scheme, default_model):
    """One generate() on an image and 1024 text tokens (1088 in all), after loading: the weights plus the high-water
    mark of what torch allocates (``profiling.peak_memory_bytes``), within 10 % of ``estimate(...).total`` (it is
    within 1 %).  Beside the weights (527 / 173 MiB) the KV cache and the prefill's activations are 13 % (full fp32)
    and 31 % (nf4) of the peak, and are checked on their own too, so the check is not the weights' again."""
    model = default_model(scheme)
    inputs = random_inputs(model.config, 1, PROMPT_TOKENS, CPU, torch.float32)
    with torch.inference_mode():
        generate_fixed(model, random_inputs(model.config, 1, 1, CPU, torch.float32), 1)  # warm: nf4 repacks its weights
        transient = peak_memory_bytes(lambda: generate_fixed(model, inputs, 1), CPU)
    measured = model.get_memory_footprint() + transient
    estimated = estimate(model.config, scheme, context=inputs["input_ids"].shape[1], dtype_bytes=4)
    assert estimated.total == pytest.approx(measured, rel=0.10)
    assert estimated.kv_cache + estimated.activations == pytest.approx(transient, rel=0.10)
    assert transient > 0.12 * measured


def test_the_estimated_vision_peak_matches_the_default_models_towers(default_model):
    """The towers' and mining's high-water mark for one image (before the prefill: no KV cache yet)."""
    model = default_model("bf16")
    inputs = random_inputs(model.config, 1, 1, CPU, torch.float32)
    with torch.inference_mode():
        measured = peak_memory_bytes(
            lambda: model.get_image_features(inputs["pixel_values"], inputs["high_res_pixel_values"]), CPU
        )
    assert estimate(model.config, dtype_bytes=4).vision == pytest.approx(measured, rel=0.10)


def test_the_published_sizes_weigh_what_the_release_says():
    """bf16 weights before the KV cache: MGM-13B about 27 GB; HD adds only KV cache (5x the visual tokens)."""
    normal, hd = release_config("13B"), release_config("13B", hd=True)
    assert estimate(normal, context=0).weights / 1e9 == pytest.approx(27.1, abs=0.5)
    assert estimate(hd, context=0).weights == estimate(normal, context=0).weights
    assert kv_cache_bytes(hd, 1000) == kv_cache_bytes(normal, 1000) == 2 * 40 * 40 * 128 * 1000 * 2
    assert hd.image_seq_length == 5 * normal.image_seq_length
    parts = count_parts(normal)
    nf4, int8, bf16 = (weight_bytes(parts, scheme) for scheme in ("nf4", "int8", "bf16"))
    assert nf4 < 0.35 * bf16 and int8 < 0.55 * bf16
    full, lora, qlora = (training_bytes(parts, mode) for mode in ("full", "lora", "qlora"))
    assert qlora < lora < full and training_bytes(parts, "zero3", gpus=8) == pytest.approx(full / 8)
