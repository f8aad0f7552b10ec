"""Which vLLM class runs a checkpoint's LLM (no vLLM needed: the names vLLM implements are given)."""

import pytest
from transformers import AutoConfig

from minigemini.vllm_plugin.language_model import UnsupportedLanguageModelError, language_model_architectures

VLLM_NAMES = frozenset({"LlamaForCausalLM", "Qwen2ForCausalLM", "GemmaForCausalLM"})


def text_config(model_type: str, architectures=None):
    config = AutoConfig.for_model(model_type)
    config.architectures = architectures
    return config


def test_a_config_without_architectures_gets_its_familys_causal_lm():
    assert language_model_architectures(text_config("qwen2"), VLLM_NAMES) == ["Qwen2ForCausalLM"]


def test_the_configs_own_architecture_comes_first_and_a_base_model_name_falls_back():
    assert language_model_architectures(text_config("llama", ["LlamaForCausalLM"]), VLLM_NAMES) == ["LlamaForCausalLM"]
    assert language_model_architectures(text_config("llama", ["LlamaModel"]), VLLM_NAMES) == ["LlamaForCausalLM"]


def test_a_family_vllm_lacks_is_named():
    with pytest.raises(UnsupportedLanguageModelError, match=r"family 'biogpt' \(BioGptForCausalLM\)"):
        language_model_architectures(text_config("biogpt"), VLLM_NAMES)


def test_the_plugin_package_imports_without_vllm():
    import sys

    import minigemini.vllm_plugin as plugin  # vLLM is not installed in the project's environment

    assert callable(plugin.register) and plugin.MODEL_CLASS.startswith("minigemini.vllm_plugin.model:")
    assert "vllm" not in sys.modules  # register() imports it, when vLLM calls it
