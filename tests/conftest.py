"""Tiny random Mini-Gemini configs shared by the tests (built locally; nothing is downloaded)."""

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from minigemini import MiniGeminiConfig, MiniGeminiForConditionalGeneration

VOCAB_SIZE = 128
IMAGE_TOKEN_ID = 127

TEXT_CONFIGS = {
    "llama": {"model_type": "llama"},
    "gemma": {"model_type": "gemma", "head_dim": 16},
    "mistral": {"model_type": "mistral", "sliding_window": None},
    "mixtral": {"model_type": "mixtral", "num_local_experts": 4, "num_experts_per_tok": 2},
    "qwen2": {"model_type": "qwen2"},
}


def tiny_config(text_type: str = "llama", hd: bool = False, **overrides) -> MiniGeminiConfig:
    """LR: ViT 32px / patch 8 -> 4x4 tokens; HR: ConvNeXt at 64px (128 in HD) -> 16x16 map, 4x4 windows."""
    text = {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": VOCAB_SIZE,
        "max_position_embeddings": 512,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        **TEXT_CONFIGS[text_type],
    }
    kwargs = {
        "vision_config": {
            "model_type": "clip_vision_model",
            "image_size": 32,
            "patch_size": 8,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 3,
            "num_attention_heads": 4,
        },
        "vision_aux_config": {"model_type": "convnext", "hidden_sizes": [8, 16, 24, 32], "depths": [1, 1, 2, 1]},
        "text_config": text,
        "image_size_aux": 128 if hd else 64,
        "image_grid": 2 if hd else 1,
        "image_global": hd,
        "image_token_id": IMAGE_TOKEN_ID,
    }
    kwargs.update(overrides)
    return MiniGeminiConfig(**kwargs)


def tiny_model(text_type: str = "llama", hd: bool = False, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return MiniGeminiForConditionalGeneration(tiny_config(text_type, hd, **overrides)).eval()


def image_inputs(config: MiniGeminiConfig, num_images: int, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    size = config.vision_config.image_size
    lr_shape = (num_images, 3, size, size) if config.num_views == 1 else (num_images, config.num_views, 3, size, size)
    return {
        "pixel_values": torch.randn(lr_shape, generator=generator),
        "high_res_pixel_values": torch.randn(
            num_images, 3, config.image_size_aux, config.image_size_aux, generator=generator
        ),
    }


def prompt_ids(config: MiniGeminiConfig, before: list[int], after: list[int], images: int = 1) -> list[int]:
    """Token ids with `images` expanded placeholders between two runs of text."""
    return before + [config.image_token_id] * (config.image_seq_length * images) + after


@pytest.fixture
def llama_model():
    return tiny_model("llama")


TOKENIZER_CORPUS = [
    "A chat between a curious user and an artificial intelligence assistant.",
    "USER: What is in this picture? ASSISTANT: A black cat sleeping on a red sofa.",
    "Describe the image in detail. The photo shows a small dog and a blue ball.",
] * 20

CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tokenizer(path, vocab_size: int = 300, chat_template: str | None = None):
    """A small byte-level BPE with <s>/</s>/<unk> (BOS added by its post-processor), trained here and saved."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(TOKENIZER_CORPUS, trainer)
    bpe.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bpe.token_to_id("<s>"))]
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    if chat_template is not None:
        fast.chat_template = chat_template
    fast.save_pretrained(path)
    return path
