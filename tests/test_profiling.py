import json

import torch
from torch.utils.flop_counter import FlopCounterMode

from minigemini.cli import main


def test_bench_reports_every_component_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = ["bench", "--preset", "tiny", "--new-tokens", "2", "--flop-tokens", "3", "--repeats", "1"]
    args += ["--text-tokens", "4", "--json", str(out)]
    assert main(args) == 0
    result = json.loads(out.read_text())
    for key in ("lr_encoder_s", "hr_encoder_s", "mining_s", "projector_s", "llm_prefill_s", "end_to_end_first_token_s"):
        assert result[key] > 0, key
    assert result["visual_tokens_per_image"] == 576 and result["prompt_tokens"] == 580
    # prefill + 3 tokens of a 2-layer, 128-wide LLM on 580 tokens: at least the LLM's 2 * params * tokens
    assert result["tflops_prefill_plus_3_tokens"] > 2 * 0.5e6 * 580 / 1e12
    assert result["peak_memory_mib"] > 0
    shown = capsys.readouterr().out
    assert "mining (ms)" in shown and "decode_tokens_per_sec" in shown


def test_flops_count_the_attention_on_any_device():
    """Counted with eager attention: CPU SDPA is not in torch's FLOP registry (its attention counted nothing), and
    torch 2.11 failed on the grouped-query SDPA that transformers runs on CUDA (`mgm bench` on an H200)."""
    from minigemini import profiling as bench

    model = bench.MiniGeminiForConditionalGeneration(bench.preset_config("tiny")).eval()
    inputs = bench.random_inputs(model.config, 1, 4, torch.device("cpu"), torch.float32)
    without_attention = FlopCounterMode(display=False)
    with without_attention:
        bench.generate_fixed(model, inputs, 1)  # one forward: the prefill, SDPA uncounted on the CPU
    text = model.config.text_config
    tokens, head_dim = inputs["input_ids"].shape[1], text.hidden_size // text.num_attention_heads
    attention = text.num_hidden_layers * 2 * (2 * text.num_attention_heads * tokens * tokens * head_dim)  # QK^T, AV
    assert bench.generation_flops(model, inputs, 1) == without_attention.get_total_flops() + attention
    assert model.model.language_model.config._attn_implementation == "sdpa"  # counted eager, put back
