import json

from minigemini.cli import main


def test_bench_reports_every_component_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = ["bench", "--preset", "tiny", "--new-tokens", "2", "--flop-tokens", "3", "--repeats", "1",
            "--text-tokens", "4", "--json", str(out)]
    assert main(args) == 0
    result = json.loads(out.read_text())
    for key in ("lr_encoder_s", "hr_encoder_s", "mining_s", "projector_s", "llm_prefill_s",
                "end_to_end_first_token_s"):
        assert result[key] > 0, key
    assert result["visual_tokens_per_image"] == 576 and result["prompt_tokens"] == 580
    # prefill + 3 tokens of a 2-layer, 128-wide LLM on 580 tokens: at least the LLM's 2 * params * tokens
    assert result["tflops_prefill_plus_3_tokens"] > 2 * 0.5e6 * 580 / 1e12
    assert result["peak_memory_mib"] > 0
    shown = capsys.readouterr().out
    assert "mining (ms)" in shown and "decode_tokens_per_sec" in shown
