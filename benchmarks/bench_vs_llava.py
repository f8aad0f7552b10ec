"""Mini-Gemini vs LLaVA in one run: what the HR branch costs at prefill, and whether decoding pays anything for it.

Same LR encoder, projector shape and LLM weights in both models (CLIP-B-size ViT at 336 px -> 576 visual tokens,
a SmolLM2-135M-shaped Llama, random weights), same prompt. Mini-Gemini adds the HR encoder (ConvNeXt-T at 768 px)
and patch info mining. Targets (issue 8): extra prefill over LLaVA <= 1.2x the HR encoder's own time; decode
tokens/s within 5 % of the bare LLM's generate() on the same prompt length.

    python benchmarks/bench_vs_llava.py [--repeats 5] [--new-tokens 32] [--dtype float32|bfloat16] [--device cuda]
"""

import argparse
import copy
import json

import torch
from transformers import LlamaForCausalLM, LlavaConfig, LlavaForConditionalGeneration

from minigemini.cache_compat import CACHE_NAME, cache_of
from minigemini.modeling import MiniGeminiForConditionalGeneration
from minigemini.profiling import generate_fixed, median_time, preset_config, random_inputs


def llava_twin(model: MiniGeminiForConditionalGeneration) -> LlavaForConditionalGeneration:
    """A LLaVA with the Mini-Gemini's LR tower, projector and LLM weights (no HR branch)."""
    config = model.config
    llava = LlavaForConditionalGeneration(
        LlavaConfig(
            vision_config=config.vision_config.to_dict(),
            text_config=config.text_config.to_dict(),
            image_token_index=config.image_token_id,
            image_seq_length=config.image_seq_length,
            vision_feature_layer=config.vision_feature_layer,
            tie_word_embeddings=config.tie_word_embeddings,
        )
    )
    llava.model.vision_tower.load_state_dict(model.model.vision_tower.model.state_dict())
    projector = model.model.mm_projector
    llava.model.multi_modal_projector.linear_1.load_state_dict(projector[0].state_dict())
    llava.model.multi_modal_projector.linear_2.load_state_dict(projector[2].state_dict())
    llava.model.language_model.load_state_dict(model.model.language_model.state_dict())
    llava.lm_head.load_state_dict(model.lm_head.state_dict())
    return llava


def bare_llm(model: MiniGeminiForConditionalGeneration) -> LlamaForCausalLM:
    llm = LlamaForCausalLM(model.config.text_config)
    llm.model.load_state_dict(model.model.language_model.state_dict())
    llm.lm_head.load_state_dict(model.lm_head.state_dict())
    return llm


def decode_tokens_per_s(model, inputs: dict, new_tokens: int, repeats: int, device) -> float:
    """Greedy decode steps timed on their own: one prefill, then ``new_tokens`` cached single-token forwards from a
    copy of its cache (timing generate(N) - generate(1) let the prefill's noise swamp the decode)."""
    prefill = model(**inputs, use_cache=True)
    first_token = prefill.logits[:, -1:].argmax(-1)

    def decode() -> None:
        cache, token, mask = copy.deepcopy(cache_of(prefill)), first_token, inputs["attention_mask"]
        for _ in range(new_tokens):
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
            step = model(input_ids=token, attention_mask=mask, use_cache=True, **{CACHE_NAME: cache})
            token, cache = step.logits[:, -1:].argmax(-1), cache_of(step)

    return new_tokens / median_time(decode, repeats, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.manual_seed(0)
    mgm = MiniGeminiForConditionalGeneration(preset_config("small")).eval()
    llava = llava_twin(mgm).to(device, dtype).eval()
    llm = bare_llm(mgm).to(device, dtype).eval()
    mgm = mgm.to(device, dtype)
    inputs = random_inputs(mgm.config, 1, 32, device, dtype)
    llava_inputs = {k: v for k, v in inputs.items() if k != "high_res_pixel_values"}
    text_inputs = {
        "input_ids": inputs["input_ids"].masked_fill(inputs["input_ids"] == mgm.config.image_token_id, 5),
        "attention_mask": inputs["attention_mask"],
    }
    with torch.inference_mode():
        hr_encoder = median_time(
            lambda: mgm.model.vision_tower_aux(inputs["high_res_pixel_values"]), args.repeats, device
        )
        mgm_prefill = median_time(lambda: generate_fixed(mgm, inputs, 1), args.repeats, device)
        llava_prefill = median_time(lambda: generate_fixed(llava, llava_inputs, 1), args.repeats, device)
        mgm_decode = decode_tokens_per_s(mgm, inputs, args.new_tokens, args.repeats, device)
        llm_decode = decode_tokens_per_s(llm, text_inputs, args.new_tokens, args.repeats, device)
    extra = mgm_prefill - llava_prefill
    print(
        json.dumps(
            {
                "prompt_tokens": inputs["input_ids"].shape[1],
                "dtype": args.dtype,
                "device": str(device),
                "threads": torch.get_num_threads(),
                "llava_prefill_s": round(llava_prefill, 5),
                "minigemini_prefill_s": round(mgm_prefill, 5),
                "hr_encoder_s": round(hr_encoder, 5),
                "extra_prefill_over_hr_encoder": round(extra / hr_encoder, 2),
                "minigemini_decode_tokens_per_s": round(mgm_decode, 1),
                "bare_llm_decode_tokens_per_s": round(llm_decode, 1),
                "decode_ratio": round(mgm_decode / llm_decode, 3),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
