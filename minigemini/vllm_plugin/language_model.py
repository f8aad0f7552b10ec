"""Which vLLM class runs a Mini-Gemini's language model, or a clear error naming the LLM family vLLM lacks.

Checked twice: by `LanguageModelCheck`, which `register()` installs as vLLM's per-architecture config hook so that it
runs while vLLM reads the checkpoint's config (in the front-end process, before any engine starts: the error reaches
the user as raised), and by the model itself, which builds the classes it returns.
"""

from __future__ import annotations

from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

__all__ = ["LanguageModelCheck", "UnsupportedLanguageModelError", "language_model_architectures"]


class UnsupportedLanguageModelError(ValueError):
    """The checkpoint's LLM family has no implementation in the installed vLLM."""


def language_model_architectures(text_config, supported: set[str] | frozenset[str]) -> list[str]:
    """The causal-LM architecture names of `text_config` that vLLM should build (`supported`: vLLM's own names).

    The config's own `architectures` first, then the family's causal-LM class from transformers' table (`llama` ->
    `LlamaForCausalLM`): a text config saved by this package may name none (a model built from a dict), or only its
    base model. Returns the first that vLLM implements; raises UnsupportedLanguageModelError naming the family when vLLM
    implements none of them.
    """
    family = getattr(text_config, "model_type", None) or "unknown"
    names = [name for name in (getattr(text_config, "architectures", None) or []) if name]
    if family in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[family] not in names:
        names.append(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[family])  # e.g. a text config that names its base `LlamaModel`
    known = [name for name in names if name in supported][:1]
    if not known:
        tried = ", ".join(names) or "no causal-LM class in transformers"
        raise UnsupportedLanguageModelError(
            f"this Mini-Gemini's language model is of the family {family!r} ({tried}), which the installed vLLM does "
            f"not implement; serve it with `mgm serve`, or pick an LLM that vLLM supports (Llama, Gemma, Mistral, "
            f"Mixtral, Qwen2, ...: vLLM's list of supported models)"
        )
    return known


class LanguageModelCheck:
    """vLLM's per-architecture config hook (`vllm.model_executor.models.config.VerifyAndUpdateConfig`'s methods)."""

    @staticmethod
    def verify_and_update_model_config(model_config) -> None:
        from vllm.model_executor.models import ModelRegistry

        language_model_architectures(model_config.hf_config.text_config, ModelRegistry.get_supported_archs())

    @staticmethod
    def verify_and_update_config(vllm_config) -> None:
        return None
