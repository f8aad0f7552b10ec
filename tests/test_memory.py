"""The memory planner (minigemini/memory.py): estimates from a config alone, checked against loaded models."""

from __future__ import annotations

import pytest

from minigemini.loading import load_pretrained
from minigemini.memory import count_parts, estimate, kv_cache_bytes, release_config, training_bytes, weight_bytes
from minigemini.synthetic.default_model import default_checkpoint

pytest.importorskip("bitsandbytes")


@pytest.mark.parametrize("scheme", ["bf16", "int8", "nf4"])
def test_the_estimate_matches_the_default_models_measured_footprint(scheme):
    """Within 10 % (it is within 2 %): the weights as loaded, the LLM quantised, the rest in the load's fp32."""
    model, _ = load_pretrained(default_checkpoint(), device="cpu", dtype="fp32",
                               quantization=None if scheme == "bf16" else scheme)  # fmt: skip
    estimated = weight_bytes(count_parts(model.config), scheme, dtype_bytes=4)
    assert estimated == pytest.approx(model.get_memory_footprint(), rel=0.10)


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
