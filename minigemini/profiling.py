"""`mgm bench`: where the time goes — LR encoder, HR encoder, mining, projector, LLM prefill, decode — plus FLOPs of
the first generated tokens and peak memory, for a saved model or a built-in preset (random weights)."""

import statistics
import sys
import tempfile
import time
from collections.abc import Callable

import torch
from torch._C._profiler import _EventType
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from minigemini.configuration import MiniGeminiConfig
from minigemini.mining import mine_views
from minigemini.modeling import MiniGeminiForConditionalGeneration
from minigemini.precision import parse_dtype

# Presets use the release's geometry (336 px / patch 14 -> 576 tokens, HR 768 -> 8x8 windows) at sizes this CPU runs.
PRESETS = {
    "tiny": {"clip": (128, 2, 2), "convnext": ([16, 32, 64, 128], [1, 1, 1, 1]), "llm": (128, 2, 4)},
    "small": {"clip": (768, 12, 12), "convnext": ([96, 192, 384, 768], [3, 3, 9, 3]), "llm": (576, 30, 9)},
}


def preset_config(name: str, hd: bool = False) -> MiniGeminiConfig:
    """ "small" = CLIP-B-size LR, ConvNeXt-T HR, a SmolLM2-135M-shaped Llama; "tiny" for quick checks."""
    preset = PRESETS[name]
    width, layers, heads = preset["clip"]
    hidden_sizes, depths = preset["convnext"]
    llm_width, llm_layers, llm_heads = preset["llm"]
    return MiniGeminiConfig(
        vision_config={
            "model_type": "clip_vision_model",
            "image_size": 336,
            "patch_size": 14,
            "hidden_size": width,
            "intermediate_size": 4 * width,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
        },
        vision_aux_config={"model_type": "convnext", "hidden_sizes": hidden_sizes, "depths": depths},
        text_config={
            "model_type": "llama",
            "hidden_size": llm_width,
            "intermediate_size": int(8 / 3 * llm_width),
            "num_hidden_layers": llm_layers,
            "num_attention_heads": llm_heads,
            "num_key_value_heads": max(1, llm_heads // 3),
            "vocab_size": 49153,
            "max_position_embeddings": 8192,
            "tie_word_embeddings": True,
        },
        image_size_aux=1536 if hd else 768,
        image_grid=2 if hd else 1,
        image_global=hd,
        image_token_id=49152,
    )


def median_time(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median wall time of `fn` in seconds after one warm-up call (synchronising CUDA around each call)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def random_inputs(config: MiniGeminiConfig, batch_size: int, text_tokens: int, device, dtype) -> dict:
    size = config.vision_config.image_size
    views = () if config.num_views == 1 else (config.num_views,)
    ids = torch.randint(3, config.image_token_id, (batch_size, text_tokens + config.image_seq_length))
    ids[:, 1 : 1 + config.image_seq_length] = config.image_token_id
    return {
        "input_ids": ids.to(device),
        "attention_mask": torch.ones_like(ids).to(device),
        "pixel_values": torch.randn(batch_size, *views, 3, size, size, dtype=dtype, device=device),
        "high_res_pixel_values": torch.randn(
            batch_size, 3, config.image_size_aux, config.image_size_aux, dtype=dtype, device=device
        ),
    }


def generate_fixed(model, inputs: dict, new_tokens: int):
    """Greedy generation of exactly `new_tokens` tokens (EOS ignored) so timings compare like with like."""
    return model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)


def component_times(
    model: MiniGeminiForConditionalGeneration,
    inputs: dict,
    new_tokens: int,
    repeats: int,
    progress: Callable[[str], None] = lambda step: None,
) -> dict:
    """Seconds per component for one batch; decode speed from two generate() lengths (prefill cancels out)."""
    inner, config, device = model.model, model.config, model.device
    pixel_values = inputs["pixel_values"]
    lr_pixels = pixel_values.flatten(0, 1) if pixel_values.dim() == 5 else pixel_values
    timings = {}
    progress("LR encoder")
    lr = inner.vision_tower(lr_pixels)
    timings["lr_encoder_s"] = median_time(lambda: inner.vision_tower(lr_pixels), repeats, device)
    progress("HR encoder")
    hr = inner.vision_tower_aux(inputs["high_res_pixel_values"])
    timings["hr_encoder_s"] = median_time(
        lambda: inner.vision_tower_aux(inputs["high_res_pixel_values"]), repeats, device
    )
    progress("patch info mining")
    mined = mine_views(inner.mining, lr, hr, config.image_grid, config.image_global)
    timings["mining_s"] = median_time(
        lambda: mine_views(inner.mining, lr, hr, config.image_grid, config.image_global), repeats, device
    )
    progress("projector")
    mined = mined.reshape(inputs["input_ids"].shape[0], -1, lr.shape[-1])
    timings["projector_s"] = median_time(lambda: inner.mm_projector(mined), repeats, device)
    progress("LLM prefill")
    embeds = inner.get_input_embeddings()(inputs["input_ids"])
    timings["llm_prefill_s"] = median_time(
        lambda: inner.language_model(inputs_embeds=embeds, attention_mask=inputs["attention_mask"]), repeats, device
    )
    progress("generate (prefill + first token)")
    first = median_time(lambda: generate_fixed(model, inputs, 1), repeats, device)
    progress(f"generate ({new_tokens} tokens)")
    full = median_time(lambda: generate_fixed(model, inputs, new_tokens + 1), repeats, device)
    timings["end_to_end_first_token_s"] = first
    # None when noise swamps the difference (too few tokens, or a busy machine): raise --new-tokens / --repeats.
    batch = inputs["input_ids"].shape[0]
    timings["decode_tokens_per_sec"] = batch * new_tokens / (full - first) if full > first else None
    return timings


def generation_flops(model, inputs: dict, new_tokens: int) -> float:
    """FLOPs (multiply-add = 2) of prefill + `new_tokens` generated tokens, counted by torch's FlopCounterMode.

    The LLM counts with eager attention: the same matrix products as SDPA, while torch 2.11 and earlier cannot count
    the grouped-query SDPA that transformers runs on CUDA (fewer key/value heads than query heads: the count fails;
    fixed upstream by pytorch#177169), and on a CPU SDPA's FLOPs are not counted at all.
    """
    llm = model.model.language_model
    attention = llm.config._attn_implementation
    llm.set_attn_implementation("eager")
    try:
        counter = FlopCounterMode(display=False)
        with counter:
            generate_fixed(model, inputs, new_tokens)
    finally:
        llm.set_attn_implementation(attention)
    return float(counter.get_total_flops())


def peak_memory_bytes(run: Callable[[], object], device: torch.device) -> int:
    """The high-water mark of the memory torch allocates on ``device`` while ``run()`` runs, above what it held when
    the run began: what a loaded model needs beside its weights (KV cache, activations, logits).

    CUDA: the caching allocator's statistics.  CPU: the same quantity from torch's profiler, which reports every
    allocation and free of torch's CPU allocator.  Not the resident set: that also counts the interpreter, the
    libraries' code, the page cache of a memory-mapped checkpoint and what malloc keeps after a free (the default
    model's resident peak at nf4 was six times its weights).  Memory allocated before the run and freed during it is
    not seen (the profiler does not know its size): warm up first what replaces weights on a first call (bitsandbytes
    repacks nf4 weights on a CPU's first forward).
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        run()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        run()
    return _allocation_high_water(profiler)


def _allocation_high_water(profiler: profile) -> int:
    """The running total of a profile's allocations (positive) and frees (negative), at its highest."""

    def walk(nodes):
        for node in nodes:
            yield node
            yield from walk(node.children)

    events = profiler.profiler.kineto_results.experimental_event_tree()  # what torch's own memory profiler reads
    allocations = sorted((n for n in walk(events) if n.tag == _EventType.Allocation), key=lambda n: n.start_time_ns)
    total = high = 0
    for node in allocations:
        total += node.extra_fields.alloc_size
        high = max(high, total)
    return high


def bench_model(args, device: torch.device, dtype: torch.dtype):
    """(model in eval mode on ``device``, its description): ``args.model``'s checkpoint or a random-weight preset, its
    LLM quantised with ``args.quantize`` where given (a preset is saved to a temporary directory to load quantised)."""
    quantize = getattr(args, "quantize", None)
    source = str(args.model) if args.model else f"preset {args.preset} (random weights)"
    source += f", {quantize}" if quantize else ""
    if args.model:
        return _load_for_bench(args.model, device, dtype, quantize), source
    torch.manual_seed(0)
    model = MiniGeminiForConditionalGeneration(preset_config(args.preset, args.hd)).to(dtype)
    if quantize is None:
        return model.to(device).eval(), source
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        return _load_for_bench(folder, device, dtype, quantize), source


def _load_for_bench(path, device: torch.device, dtype: torch.dtype, quantize: str | None):
    if quantize is None:
        return MiniGeminiForConditionalGeneration.from_pretrained(path, dtype=dtype).to(device).eval()
    from minigemini.quantization import quantization_config

    config = quantization_config(quantize, device, dtype)
    load = MiniGeminiForConditionalGeneration.from_pretrained
    return load(path, dtype=dtype, quantization_config=config, device_map={"": device}).eval()


def run_bench(args) -> dict:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = parse_dtype(args.dtype)
    model, source = bench_model(args, device, dtype)
    config = model.config
    inputs = random_inputs(config, args.batch_size, args.text_tokens, device, dtype)
    progress = lambda step: print(f"  timing {step}...", file=sys.stderr, flush=True)
    with torch.inference_mode():
        timings = component_times(model, inputs, args.new_tokens, args.repeats, progress)
        progress(f"FLOPs of prefill + {args.flop_tokens} tokens")
        flops = generation_flops(model, inputs, args.flop_tokens)
        progress("peak memory of one generate()")  # after the timings: warm, and the profiler slows nothing timed
        transient = peak_memory_bytes(lambda: generate_fixed(model, inputs, args.new_tokens), device)
    result = {
        "model": source,
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "batch_size": args.batch_size,
        "hd": config.image_grid > 1,
        "visual_tokens_per_image": config.image_seq_length,
        "prompt_tokens": inputs["input_ids"].shape[1],
        **{key: None if value is None else round(value, 5) for key, value in timings.items()},
        f"tflops_prefill_plus_{args.flop_tokens}_tokens": round(flops / 1e12, 4),
        # the weights plus the high-water mark of one generate(): what the model needs on the device
        "peak_memory_mib": round((model.get_memory_footprint() + transient) / 2**20, 1),
    }
    return result
