"""vLLM's multimodal processor for Mini-Gemini: images -> `pixel_values` + `high_res_pixel_values`, `<image>` expanded.

vLLM tokenises the prompt itself (a chat request through the checkpoint's chat template, which puts `<image>` first in
its message, as `MiniGeminiProcessor.apply_chat_template` does); this processor only
  * runs the checkpoint's own `MiniGeminiImageProcessor` (from its `preprocessor_config.json`) on each image: the LR
    tensor (one view, or the HD views [global, crops]) and the HR tensor, the same numbers `MiniGeminiProcessor` gives;
  * tells vLLM to replace each `<image>` token by `image_seq_length` of them (N, or 5N in HD), the positions the
    model's visual tokens fill;
  * builds the dummy images vLLM profiles memory with (every image gives the same token count, so any size will do).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property

from transformers import BatchFeature
from vllm.config.multimodal import MultiModalDummyOptions
from vllm.inputs import MultiModalDataDict
from vllm.multimodal.inputs import MultiModalFieldConfig, MultiModalKwargsItems
from vllm.multimodal.parse import MultiModalDataItems
from vllm.multimodal.processing import (
    BaseDummyInputsBuilder,
    BaseMultiModalProcessor,
    BaseProcessingInfo,
    PromptReplacement,
    PromptUpdate,
)

from minigemini.configuration import MiniGeminiConfig
from minigemini.image_processing import MiniGeminiImageProcessor
from minigemini.processing import image_processor_for_config
from minigemini.templates import IMAGE_PLACEHOLDER

__all__ = ["MiniGeminiDummyInputsBuilder", "MiniGeminiMultiModalProcessor", "MiniGeminiProcessingInfo"]


class MiniGeminiProcessingInfo(BaseProcessingInfo):
    """What vLLM asks about the model's inputs: its config, image processor and visual tokens per image."""

    def get_hf_config(self) -> MiniGeminiConfig:
        return self.ctx.get_hf_config(MiniGeminiConfig)

    @cached_property
    def image_processor(self) -> MiniGeminiImageProcessor:
        """The checkpoint's saved image processor; one matching the config when the directory has none."""
        saved = dict(self.ctx.get_hf_image_processor_config() or {})
        if saved:
            return MiniGeminiImageProcessor.from_dict(saved)
        return image_processor_for_config(self.get_hf_config())

    def get_hf_processor(self, **kwargs: object) -> MiniGeminiImageProcessor:
        # vLLM's tokenizer does the text; the image processor is the only "HF processor" this model needs.
        return self.image_processor

    def get_supported_mm_processor_kwargs(self) -> dict[str, set[str]]:
        return {}  # no per-request processor options: every image is processed the same way

    def get_supported_mm_limits(self) -> Mapping[str, int | None]:
        return {"image": None}

    def get_num_image_tokens(self) -> int:
        return self.get_hf_config().image_seq_length

    def get_mm_max_tokens_per_item(self, seq_len: int, mm_counts: Mapping[str, int]) -> Mapping[str, int]:
        return {"image": self.get_num_image_tokens()}

    def image_token_id(self) -> int:
        token_id = self.get_hf_config().image_token_id
        if token_id is None:
            raise ValueError(
                "the checkpoint's config has no image_token_id: save it with MiniGeminiProcessor's tokenizer "
                "(`mgm convert` / `mgm init` / save_pretrained of this package do)"
            )
        return token_id


class MiniGeminiDummyInputsBuilder(BaseDummyInputsBuilder[MiniGeminiProcessingInfo]):
    """Prompts of `<image>` placeholders and white images, for vLLM's memory profiling."""

    def get_dummy_text(self, mm_counts: Mapping[str, int]) -> str:
        return IMAGE_PLACEHOLDER * mm_counts.get("image", 0)

    def get_dummy_mm_data(
        self, seq_len: int, mm_counts: Mapping[str, int], mm_options: MultiModalDummyOptions
    ) -> MultiModalDataDict:
        size = self.info.image_processor.image_size_aux
        return {
            "image": self._get_dummy_images(
                width=size, height=size, num_images=mm_counts.get("image", 0), overrides=mm_options.get("image")
            )
        }


class MiniGeminiMultiModalProcessor(BaseMultiModalProcessor[MiniGeminiProcessingInfo]):
    """Images through the checkpoint's image processor; each `<image>` token becomes `image_seq_length` of them."""

    def _call_hf_processor(self, hf_data: Mapping[str, object], hf_kwargs: Mapping[str, object]) -> BatchFeature:
        # through vLLM's caller, which passes its options and casts floating tensors to the model's dtype
        return self.info.ctx.call_hf_processor(self.info.image_processor, {"images": hf_data["images"]}, hf_kwargs)

    def _get_mm_fields_config(
        self, hf_inputs: BatchFeature, hf_processor_mm_kwargs: Mapping[str, object]
    ) -> Mapping[str, MultiModalFieldConfig]:
        return {
            "pixel_values": MultiModalFieldConfig.batched("image"),
            "high_res_pixel_values": MultiModalFieldConfig.batched("image"),
        }

    def _get_prompt_updates(
        self,
        mm_items: MultiModalDataItems,
        hf_processor_mm_kwargs: Mapping[str, object],
        out_mm_kwargs: MultiModalKwargsItems,
    ) -> Sequence[PromptUpdate]:
        token_id = self.info.image_token_id()
        return [
            PromptReplacement(
                modality="image", target=[token_id], replacement=[token_id] * self.info.get_num_image_tokens()
            )
        ]
