"""Mini-Gemini as a native vLLM model: this package's vision side, vLLM's own language model.

The image side is the project's: `encoders.LowResEncoder` / `HighResEncoder`, `mining.PatchInfoMining` and
`modeling.build_projector`, run by `MiniGeminiModel.get_image_features` itself, so vLLM and `generate()` compute the
same visual tokens. They are small, plain PyTorch modules, replicated on every tensor-parallel rank. The language model
is built by vLLM from `text_config` (`init_vllm_registered_model`), so its paged attention, batching, quantisation and
tensor / pipeline parallelism are vLLM's. Weights load under this package's checkpoint names (`model.vision_tower.*`,
`model.vision_tower_aux.*`, `model.mining.*`, `model.mm_projector.*`, `model.language_model.*`, `lm_head.*`).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from vllm.config import VllmConfig
from vllm.model_executor.models import ModelRegistry
from vllm.model_executor.models.interfaces import MultiModalEmbeddings, SupportsMultiModal, SupportsPP
from vllm.model_executor.models.utils import (
    AutoWeightsLoader,
    WeightsMapper,
    init_vllm_registered_model,
    maybe_prefix,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.sequence import IntermediateTensors

from minigemini.encoders import HighResEncoder, LowResEncoder
from minigemini.mining import PatchInfoMining
from minigemini.modeling import MiniGeminiModel, build_projector
from minigemini.templates import IMAGE_PLACEHOLDER
from minigemini.vllm_plugin.language_model import language_model_architectures
from minigemini.vllm_plugin.processing import (
    MiniGeminiDummyInputsBuilder,
    MiniGeminiMultiModalProcessor,
    MiniGeminiProcessingInfo,
)

__all__ = ["MiniGeminiForVLLM"]


def _stacked(value: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    """vLLM batches a field of equal-shaped items as one tensor, else as a list: every image here has one shape."""
    return value if isinstance(value, torch.Tensor) else torch.stack(list(value))


@MULTIMODAL_REGISTRY.register_processor(
    MiniGeminiMultiModalProcessor, info=MiniGeminiProcessingInfo, dummy_inputs=MiniGeminiDummyInputsBuilder
)
class MiniGeminiForVLLM(nn.Module, SupportsMultiModal, SupportsPP):
    """`MiniGeminiForConditionalGeneration` for vLLM (the architecture name a saved checkpoint carries)."""

    hf_to_vllm_mapper = WeightsMapper(
        orig_to_new_prefix={
            "model.language_model.": "language_model.model.",
            "lm_head.": "language_model.lm_head.",
            "model.": "",  # vision_tower, vision_tower_aux, mining, mm_projector: the same modules as in modeling.py
        }
    )

    @classmethod
    def get_placeholder_str(cls, modality: str, i: int) -> str | None:
        if modality.startswith("image"):
            return IMAGE_PLACEHOLDER
        raise ValueError(f"Mini-Gemini takes images only, not {modality}")

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__()
        config = vllm_config.model_config.hf_config
        self.config = config
        architectures = language_model_architectures(config.text_config, ModelRegistry.get_supported_archs())
        self.configure_mm_token_handling(vocab_size=config.text_config.vocab_size, mm_token_ids=[config.image_token_id])
        with self._mark_tower_model(vllm_config, "image"):
            self.vision_tower = LowResEncoder(config)
            self.vision_tower_aux = HighResEncoder(config) if config.patch_info_mining else None
            self.mining = (
                PatchInfoMining(
                    config.vision_config.hidden_size, config.vision_aux_hidden_size, config.mining_hidden_size
                )
                if config.patch_info_mining
                else None
            )
            self.mm_projector = build_projector(config)
            # the towers come from transformers' `from_config`, in the dtype their saved configs name (bf16 for a
            # checkpoint saved in bf16): the whole image side runs in the engine's dtype (`--dtype`) instead
            self.to(vllm_config.model_config.dtype)
        with self._mark_language_model(vllm_config):
            self.language_model = init_vllm_registered_model(
                vllm_config=vllm_config,
                hf_config=config.text_config,
                prefix=maybe_prefix(prefix, "language_model"),
                architectures=architectures,
            )
        self.make_empty_intermediate_tensors = self.language_model.make_empty_intermediate_tensors

    # the image side: MiniGeminiModel's own code, on this module's towers, mining and projector
    get_image_features = MiniGeminiModel.get_image_features

    def embed_multimodal(self, **kwargs: object) -> MultiModalEmbeddings:
        pixel_values = kwargs.get("pixel_values")
        high_res_pixel_values = kwargs.get("high_res_pixel_values")
        if pixel_values is None:
            return []
        if high_res_pixel_values is None:
            raise ValueError("Mini-Gemini needs high_res_pixel_values with pixel_values (its multimodal processor)")
        # (num_images, image_seq_length, hidden): one row of visual tokens per image, in prompt order
        return self.get_image_features(_stacked(pixel_values), _stacked(high_res_pixel_values))

    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: IntermediateTensors | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: object,
    ) -> torch.Tensor | IntermediateTensors:
        if intermediate_tensors is not None:
            inputs_embeds = None
        return self.language_model(input_ids, positions, intermediate_tensors, inputs_embeds=inputs_embeds)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        return self.language_model.compute_logits(hidden_states)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        # the LR-only variant (patch_info_mining=False) has no HR tower or mining layer, nor their weights
        return AutoWeightsLoader(self).load_weights(weights, mapper=self.hf_to_vllm_mapper)
