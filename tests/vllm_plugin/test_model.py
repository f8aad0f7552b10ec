"""A real vLLM engine (vLLM's CPU build, in its own environment) serves Mini-Gemini through the plugin: its greedy
tokens equal the project's `generate()` in fp32, for two LLM families, normal and HD, and for a published-format
checkpoint converted by `mgm convert`, in a batch mixing a request with one image, one with two and one with none; an
LLM family vLLM lacks is refused by name; importing minigemini does not import vLLM. One engine script runs every model (a vLLM engine takes about 20 s to start on this CPU)."""

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from minigemini import (
    MiniGeminiForConditionalGeneration,
    MiniGeminiImageProcessor,
    MiniGeminiProcessor,
)
from minigemini.cli import main
from tests.conftest import CHATML_TEMPLATE, build_tokenizer, tiny_config
from tests.helpers.tiny_release import make_release
from tests.helpers.vllm_env import noise_image, reference_request, run_vllm_script, save_tiny_vllm_mgm

SCRIPT = Path(__file__).with_name("engine_script.py")
MODELS = [("llama", False), ("llama", True), ("qwen2", False), ("qwen2", True)]
MAX_TOKENS = 12


def converted_release(root: Path):
    """A tiny published-format (MGM-*) Llama checkpoint converted by `mgm convert`, heads of 32 for vLLM's kernels."""
    release = make_release(root / "release", "llama", llm_overrides={"num_attention_heads": 1, "num_key_value_heads": 1,
                                                                     "head_dim": 32})  # fmt: skip
    assert main(["convert", str(release.path), str(root / "converted")]) == 0
    model = MiniGeminiForConditionalGeneration.from_pretrained(root / "converted").eval()
    return model, MiniGeminiProcessor.from_pretrained(root / "converted")


def save_biogpt_mgm(path: Path) -> Path:
    """A Mini-Gemini whose LLM is BioGPT: a causal LM transformers has and vLLM 0.32 does not."""
    build_tokenizer(path, chat_template=CHATML_TEMPLATE)
    tokenizer = AutoTokenizer.from_pretrained(path)
    processor = MiniGeminiProcessor(MiniGeminiImageProcessor(image_size=32, image_size_aux=64), tokenizer, 16)
    text = {"model_type": "biogpt", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
            "num_attention_heads": 2, "vocab_size": len(tokenizer), "max_position_embeddings": 512}  # fmt: skip
    config = tiny_config(image_token_id=processor.image_token_id, text_config=text)
    MiniGeminiForConditionalGeneration(config).save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def engine_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("vllm-engine")
    images = [noise_image(root / f"image{i}.png", size, seed=i) for i, size in enumerate([(40, 30), (24, 52)])]
    job, references = {"runs": [], "refused": []}, {}
    for family, hd in MODELS:
        name = f"{family}-{'hd' if hd else 'normal'}"
        model, processor = save_tiny_vllm_mgm(root / name, family, hd, seed=len(references))
        requests = [
            reference_request(model, processor, "What is in this picture?", images[:1], MAX_TOKENS),
            reference_request(model, processor, "Which of the two is brighter?", images, MAX_TOKENS),
            reference_request(model, processor, "Tell me a story about a cat.", [], MAX_TOKENS),
            reference_request(model, processor, "What is in this picture?", images[1:], MAX_TOKENS),
        ]
        references[name] = requests
        job["runs"].append({"name": name, "model": str(root / name), "requests": requests})
    model, processor = converted_release(root)
    questions = [
        "what is in this image ?",
        "describe the picture .",
        "the cat sat on the mat .",
        "what is in this image ?",
    ]
    requests = [reference_request(model, processor, q, pictures, MAX_TOKENS)
                for q, pictures in zip(questions, [images[:1], images, [], images[1:]])]  # fmt: skip
    references["converted-release"] = requests
    job["runs"].append({"name": "converted-release", "model": str(root / "converted"), "requests": requests})
    job["refused"].append({"name": "biogpt", "model": str(save_biogpt_mgm(root / "biogpt"))})
    return run_vllm_script(SCRIPT, job, root, timeout=900), references


NAMES = [f"{family}-{'hd' if hd else 'normal'}" for family, hd in MODELS] + ["converted-release"]


@pytest.mark.parametrize("name", NAMES)
def test_vllm_greedy_tokens_equal_generate_in_a_mixed_batch(engine_run, name):
    result, references = engine_run
    answered = result["runs"][name]
    expected = [request["reference"] for request in references[name]]
    assert [len(r["images"]) for r in references[name]] == [1, 2, 0, 1]
    assert expected[0] != expected[3]  # the same question about another image: the answers depend on the pixels
    assert answered == expected  # one image, two images, none: batched together by vLLM


def test_an_llm_family_vllm_lacks_is_refused_by_name(engine_run):
    result, _ = engine_run
    error = result["refused"]["biogpt"]
    assert error is not None
    assert "family 'biogpt'" in error and "BioGptForCausalLM" in error and "does not implement" in error


def test_importing_minigemini_does_not_import_vllm(engine_run):
    result, _ = engine_run
    assert result["minigemini_imports_vllm"] is False
