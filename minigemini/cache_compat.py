"""The KV cache's argument and output name: `past_key_values` up to transformers 5.23, `cache` from 5.24.

5.24 renamed it in every model's forward, in the output classes and in `generate()`; the model passes and returns it
under the installed version's name so that it works on both sides of the rename.
"""

from transformers.modeling_outputs import CausalLMOutputWithPast

CACHE_NAME = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


def take_cache(past_key_values, kwargs: dict):
    """The cache given to a forward under either name (`generate()` of 5.24 passes `cache`), removed from kwargs."""
    cache = kwargs.pop("cache", None)
    if past_key_values is not None and cache is not None:
        raise ValueError("Pass the KV cache once, as `cache` or as `past_key_values`, not both")
    return past_key_values if past_key_values is not None else cache


def cache_of(output):
    """The cache in a transformers model output, whatever the installed version calls it."""
    return getattr(output, CACHE_NAME)
