"""MiniGeminiConfig: one composite config for the two vision towers, the mining layer and the LLM."""

import re

from huggingface_hub.dataclasses import strict
from transformers import CONFIG_MAPPING, AutoConfig, PreTrainedConfig

try:  # transformers >= 5.2x declares a composite config's sub-config defaults as specs
    from transformers.configuration_utils import SubConfigSpec
except ImportError:  # earlier 5.x (vLLM 0.32 pins < 5.20): resolved in __post_init__, as LLaVA's config does there
    SubConfigSpec = None

PROJECTOR_PATTERN = re.compile(r"^(linear|mlp(\d+)x_gelu)$")

# sub-config -> (model_type of a dict that names none, the config built when it is None: the release's shapes)
SUB_CONFIG_DEFAULTS = {
    "vision_config": (
        "clip_vision_model",
        {
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "patch_size": 14,
            "image_size": 336,
            "projection_dim": 768,
        },
    ),
    "vision_aux_config": (
        "convnext",
        {"hidden_sizes": [192, 384, 768, 1536], "depths": [3, 3, 27, 3], "image_size": 768},
    ),
    "text_config": ("llama", {}),
}


@strict
class MiniGeminiConfig(PreTrainedConfig):
    r"""
    Configuration of a Mini-Gemini model (paper: "Mini-Gemini: Mining the Potential of Multi-modality Vision
    Language Models").

    Args:
        vision_config: the low-resolution (LR) encoder, a CLIP or SigLIP vision config. Its `image_size` is the LR
            input size (336 in the release) and sets N = (image_size / patch_size)^2 visual tokens per view.
        vision_aux_config: the high-resolution (HR) encoder, a ConvNeXt config. Its stage outputs are fused into one
            map of `sum(hidden_sizes)` channels (2880 for ConvNeXt-L) at the stem's stride.
        text_config: any causal LM config (`AutoConfig`).
        image_size_aux: HR input size of a whole image (768 normal, 1536 HD in the release).
        image_grid: 1 (normal) or 2 (HD: the LR image is cut into image_grid x image_grid crops).
        image_global: in HD, add a global LR view; tokens per image are then ordered [global, crops row-major].
        vision_feature_layer: LR hidden state used as features (-2 in the release).
        vision_feature_select_strategy: "default" drops the CLS token, "full" keeps every token.
        mining_hidden_size: width of the mining query/key projection; defaults to the LR hidden size.
        projector_type: "linear" or "mlp{N}x_gelu" (release default "mlp2x_gelu").
        image_token_id: id of the placeholder token that the processor expands to the visual tokens.
        patch_info_mining: False builds the LLaVA-style baseline of the paper's ablation (Table 4): LR tokens go
            straight to the projector; no HR encoder and no mining layer exist.
    """

    model_type = "minigemini"
    if SubConfigSpec is not None:
        sub_configs_defaults = {
            key: SubConfigSpec(config_class=AutoConfig, model_type=model_type, init_kwargs=init_kwargs)
            for key, (model_type, init_kwargs) in SUB_CONFIG_DEFAULTS.items()
        }
    else:
        sub_configs = {key: AutoConfig for key in SUB_CONFIG_DEFAULTS}

    vision_config: dict | PreTrainedConfig | None = None
    vision_aux_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    image_size_aux: int = 768
    image_grid: int = 1
    image_global: bool = False
    vision_feature_layer: int = -2
    vision_feature_select_strategy: str = "default"
    mining_hidden_size: int | None = None
    projector_type: str = "mlp2x_gelu"
    image_token_id: int | None = None
    tie_word_embeddings: bool = False
    patch_info_mining: bool = True

    def __post_init__(self, **kwargs):
        if SubConfigSpec is None:
            for key, (model_type, init_kwargs) in SUB_CONFIG_DEFAULTS.items():
                value = getattr(self, key)
                if value is None:
                    value = {"model_type": model_type, **init_kwargs}
                if isinstance(value, dict):
                    value = CONFIG_MAPPING[value.get("model_type", model_type)](**value)
                setattr(self, key, value)
        super().__post_init__(**kwargs)
        # Several LLMs (Gemma, SmolLM2) tie their head to the embeddings; the flag lives on the text config.
        if not self.tie_word_embeddings and getattr(self.text_config, "tie_word_embeddings", False):
            self.tie_word_embeddings = True
        if self.mining_hidden_size is None:
            self.mining_hidden_size = self.vision_config.hidden_size

    def validate_architecture(self):
        super().validate_architecture()
        if self.vision_feature_select_strategy not in ("default", "full"):
            raise ValueError(
                f"vision_feature_select_strategy must be 'default' or 'full', got {self.vision_feature_select_strategy!r}"
            )
        if not PROJECTOR_PATTERN.match(self.projector_type):
            raise ValueError(f"projector_type must be 'linear' or 'mlp<N>x_gelu', got {self.projector_type!r}")
        if self.image_grid < 1:
            raise ValueError(f"image_grid must be >= 1, got {self.image_grid}")
        if self.image_global and self.image_grid == 1:
            raise ValueError("image_global needs image_grid > 1 (the global view is the un-cropped image)")
        side = self.vision_config.image_size // self.vision_config.patch_size
        if not self.patch_info_mining:
            return
        hr_map_side = self.image_size_aux // self.vision_aux_config.patch_size // self.image_grid
        if self.image_size_aux % (self.vision_aux_config.patch_size * self.image_grid) or hr_map_side % side:
            raise ValueError(
                f"image_size_aux={self.image_size_aux} gives an HR map of {hr_map_side} cells per view side, which "
                f"must be a multiple of the {side} LR tokens per side (each LR token mines a square HR window)"
            )

    @property
    def tokens_per_side(self) -> int:
        """LR tokens along one side of a view (24 for CLIP-L/14 at 336)."""
        return self.vision_config.image_size // self.vision_config.patch_size

    @property
    def num_views(self) -> int:
        """LR views per image: 1, or the grid crops plus the optional global view."""
        if self.image_grid == 1:
            return 1
        return self.image_grid**2 + int(self.image_global)

    @property
    def image_seq_length(self) -> int:
        """Visual tokens the LLM sees per image (N, or 5N in HD) whatever the HR size."""
        return self.tokens_per_side**2 * self.num_views

    @property
    def vision_aux_hidden_size(self) -> int:
        """Channels of the fused HR map (sum of the ConvNeXt stage widths)."""
        return sum(self.vision_aux_config.hidden_sizes)


__all__ = ["MiniGeminiConfig"]
