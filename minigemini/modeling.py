"""MiniGeminiForConditionalGeneration: dual vision encoders + patch info mining + projector + any causal LM."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import AutoModel, GenerationMixin, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.utils.generic import can_return_tuple

# Relative imports: these modules also travel as a checkpoint's code (Hub custom code, saving.py), flat beside it.
from .cache_compat import CACHE_NAME, cache_of, take_cache
from .configuration import PROJECTOR_PATTERN, MiniGeminiConfig
from .encoders import HighResEncoder, LowResEncoder, freeze_encoder
from .mining import PatchInfoMining, mine_views

#: release key -> this package's key, in transformers' `key_mapping` form: applied in order, each regex may fire on the
#: output of the previous ones, at most one capture group each. The rest of the release's format (its config, file
#: layout, tokenizer and template) is read by `minigemini.convert.release`.
RELEASE_KEY_MAPPING = {
    # open_clip / timm ConvNeXt block leaves -> transformers ConvNextLayer names (same shapes; timm's stem and
    # downsample LayerNorm2d are channels-first like transformers' ConvNextLayerNorm there)
    r"^(model\.vision_tower_aux\.vision_stages\.\d+\.blocks\.\d+)\.conv_dw\.": r"\1.dwconv.",
    r"^(model\.vision_tower_aux\.vision_stages\.\d+\.blocks\.\d+)\.norm\.": r"\1.layernorm.",
    r"^(model\.vision_tower_aux\.vision_stages\.\d+\.blocks\.\d+)\.mlp\.fc1\.": r"\1.pwconv1.",
    r"^(model\.vision_tower_aux\.vision_stages\.\d+\.blocks\.\d+)\.mlp\.fc2\.": r"\1.pwconv2.",
    r"^(model\.vision_tower_aux\.vision_stages\.\d+\.blocks\.\d+)\.gamma$": r"\1.layer_scale_parameter",
    r"^model\.vision_tower_aux\.vision_stages\.(\d+)\.blocks\.": (
        r"model.vision_tower_aux.convnext.encoder.stages.\1.layers."
    ),
    r"^model\.vision_tower_aux\.vision_stages\.(\d+)\.downsample\.": (
        r"model.vision_tower_aux.convnext.encoder.stages.\1.downsampling_layer."
    ),
    r"^model\.vision_tower_aux\.vision_stem\.0\.": "model.vision_tower_aux.convnext.embeddings.patch_embeddings.",
    r"^model\.vision_tower_aux\.vision_stem\.1\.": "model.vision_tower_aux.convnext.embeddings.layernorm.",
    # CLIP keeps transformers' own names, one wrapper level deeper
    r"^model\.vision_tower\.vision_tower\.": "model.vision_tower.model.",
    # mining: query / key ("aux") / value, each (LayerNorm, Linear)
    r"^model\.vlm_uni_query_projector\.": "model.mining.query.",
    r"^model\.vlm_uni_aux_projector\.": "model.mining.key.",
    r"^model\.vlm_uni_val_projector\.": "model.mining.value.",
    # a "linear" projector is one bare nn.Linear in the release, the first layer of a Sequential here
    r"^model\.mm_projector\.(weight|bias)$": r"model.mm_projector.0.\1",
    # the LLM body moves under language_model; lm_head keeps its name
    r"^model\.(embed_tokens|layers|norm)\.": r"model.language_model.\1.",
}


IGNORE_INDEX = -100  # label of positions without loss (cross-entropy's default); the data pipeline masks with it too


@dataclass(frozen=True)
class ReleaseConversion:
    """How ``from_pretrained`` converts a published release checkpoint on load: ``recognises(source)`` tells one (its
    config.json), ``load(model_class, source, chat_template, **from_pretrained_kwargs)`` gives (model, processor).
    ``minigemini.convert.release`` registers it, which the core does not import."""

    recognises: Callable[[Any], bool]
    load: Callable[..., tuple[Any, Any]]


@dataclass
class MiniGeminiModelOutputWithPast(BaseModelOutputWithPast):
    """LLM outputs plus the projected visual tokens, (num_images, image_seq_length, hidden)."""

    image_hidden_states: torch.Tensor | None = None


@dataclass
class MiniGeminiCausalLMOutputWithPast(CausalLMOutputWithPast):
    """Loss, logits and the LLM's outputs plus the projected visual tokens."""

    image_hidden_states: torch.Tensor | None = None


def build_projector(config: MiniGeminiConfig) -> nn.Sequential:
    """The release's projector: "linear" or "mlp{N}x_gelu" (Linear, then N-1 x (GELU, Linear))."""
    in_size, out_size = config.vision_config.hidden_size, config.text_config.hidden_size
    depth_match = PROJECTOR_PATTERN.match(config.projector_type).group(2)
    depth = int(depth_match) if depth_match else 1
    layers = [nn.Linear(in_size, out_size)]
    for _ in range(depth - 1):
        layers += [ACT2FN["gelu"], nn.Linear(out_size, out_size)]
    return nn.Sequential(*layers)


class MiniGeminiPreTrainedModel(PreTrainedModel):
    config: MiniGeminiConfig
    config_class = MiniGeminiConfig
    base_model_prefix = "model"
    input_modalities = ("image", "text")
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _skip_keys_device_placement: ClassVar[list[str]] = [CACHE_NAME]
    _no_split_modules: ClassVar[list[str]] = ["PatchInfoMining"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = False


#: The modules that quantisation leaves alone (only the LLM is quantised): transformers' quantizers (bitsandbytes, torchao,
#: ...) skip every module named in a model's ``_keep_in_fp32_modules``, so a plain ``BitsAndBytesConfig`` or
#: ``TorchAoConfig`` quantises the LLM only.  They keep the load's dtype, except fp16, where transformers loads them in fp32.
VISION_MODULES = ("vision_tower", "vision_tower_aux", "mining", "mm_projector")


class MiniGeminiModel(MiniGeminiPreTrainedModel):
    """Vision towers, mining, projector and the LLM body (no LM head)."""

    _keep_in_fp32_modules: ClassVar[list[str]] = list(VISION_MODULES)

    def __init__(self, config: MiniGeminiConfig):
        super().__init__(config)
        self.vision_tower = LowResEncoder(config)
        # The LLaVA-style baseline (patch_info_mining=False) has neither the HR tower nor the mining layer.
        self.vision_tower_aux = HighResEncoder(config) if config.patch_info_mining else None
        self.mining = (
            PatchInfoMining(config.vision_config.hidden_size, config.vision_aux_hidden_size, config.mining_hidden_size)
            if config.patch_info_mining
            else None
        )
        self.mm_projector = build_projector(config)
        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()

    def get_input_embeddings(self):
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.language_model.set_input_embeddings(value)

    def freeze_vision_towers(self, low_res: bool = True, high_res: bool = True) -> None:
        """Freeze the encoders as the paper does in both stages (drop-path off in the frozen ConvNeXt)."""
        if low_res:
            freeze_encoder(self.vision_tower)
        if high_res and self.vision_tower_aux is not None:
            freeze_encoder(self.vision_tower_aux)

    def get_image_features(self, pixel_values: torch.Tensor, high_res_pixel_values: torch.Tensor) -> torch.Tensor:
        """Visual tokens for the LLM.

        pixel_values: (B, 3, S, S), or (B, V, 3, S, S) in HD with views [global, crops row-major].
        high_res_pixel_values: (B, 3, H, H).
        Returns (B, V * N, text_hidden_size).
        """
        config = self.config
        num_images = high_res_pixel_values.shape[0]
        if pixel_values.dim() == 4:
            pixel_values = pixel_values.unsqueeze(1)
        if pixel_values.shape[:2] != (num_images, config.num_views):
            raise ValueError(
                f"pixel_values has shape {tuple(pixel_values.shape)} but {num_images} high-res images with "
                f"{config.num_views} LR view(s) each were expected (image_grid={config.image_grid}, "
                f"image_global={config.image_global})"
            )
        lr_features = self.vision_tower(pixel_values.flatten(0, 1))  # (B*V, N, C)
        if lr_features.shape[1] != config.tokens_per_side**2:
            raise ValueError(
                f"LR encoder produced {lr_features.shape[1]} tokens per view, expected {config.tokens_per_side**2}: "
                f"are pixel_values {config.vision_config.image_size}px?"
            )
        if self.mining is None:
            return self.mm_projector(lr_features.reshape(num_images, -1, lr_features.shape[-1]))
        hr_map = self.vision_tower_aux(high_res_pixel_values)  # (B, C_aux, H/4, H/4)
        mined = mine_views(self.mining, lr_features, hr_map, config.image_grid, config.image_global)
        mined = mined.reshape(num_images, -1, mined.shape[-1])
        return self.mm_projector(mined)

    def get_placeholder_mask(self, input_ids: torch.LongTensor | None, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """(B, L) bool mask of image placeholder positions."""
        if self.config.image_token_id is None:
            return torch.zeros(inputs_embeds.shape[:2], dtype=torch.bool, device=inputs_embeds.device)
        if input_ids is not None:
            return input_ids == self.config.image_token_id
        placeholder = self.get_input_embeddings()(torch.tensor(self.config.image_token_id, device=inputs_embeds.device))
        return (inputs_embeds == placeholder).all(-1)

    def check_context_length(self, sequence_length: int, past_key_values: Cache | None) -> None:
        """Refuse prompts the LLM cannot attend over, instead of silently degrading past its position limit."""
        limit = getattr(self.config.text_config, "max_position_embeddings", None)
        past = past_key_values.get_seq_length() if past_key_values is not None else 0
        if limit is not None and past + sequence_length > limit:
            raise ValueError(
                f"The sequence ({past} cached + {sequence_length} new tokens, visual tokens included) is longer than "
                f"the language model's context of {limit} tokens; shorten the prompt or use fewer images."
            )

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        high_res_pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs,
    ) -> MiniGeminiModelOutputWithPast:
        past_key_values = take_cache(past_key_values, kwargs)
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds")
        if (pixel_values is None) != (high_res_pixel_values is None):
            raise ValueError("pixel_values and high_res_pixel_values come together: pass both or neither")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        self.check_context_length(inputs_embeds.shape[1], past_key_values)

        image_features = None
        placeholder_mask = self.get_placeholder_mask(input_ids, inputs_embeds)
        num_placeholders = int(placeholder_mask.sum())
        if pixel_values is not None and high_res_pixel_values.shape[0] == 0:
            # No image in this batch, under an engine that shards the encoders (ZeRO-3, FSDP: the trainer passes
            # empty tensors): the encoders run on one blank image, weighted 0, so that every process gathers and
            # reduces the same parameters in the same order.
            blank = self.get_image_features(
                pixel_values.new_zeros((1, *pixel_values.shape[1:])),
                high_res_pixel_values.new_zeros((1, *high_res_pixel_values.shape[1:])),
            )
            inputs_embeds = inputs_embeds + 0.0 * blank.sum().to(inputs_embeds.dtype)
        elif pixel_values is not None:
            image_features = self.get_image_features(pixel_values, high_res_pixel_values)
            num_images, tokens_per_image = image_features.shape[:2]
            if num_placeholders != num_images * tokens_per_image:
                raise ValueError(
                    f"The text has {num_placeholders} image placeholder tokens but {num_images} image(s) x "
                    f"{tokens_per_image} visual tokens = {num_images * tokens_per_image} were given; each image needs "
                    f"exactly one placeholder expanded to {tokens_per_image} tokens (use MiniGeminiProcessor)."
                )
            image_features = image_features.to(inputs_embeds.device, inputs_embeds.dtype)
            inputs_embeds = inputs_embeds.masked_scatter(placeholder_mask.unsqueeze(-1), image_features)
        elif num_placeholders and (past_key_values is None or past_key_values.get_seq_length() == 0):
            raise ValueError(f"The text has {num_placeholders} image placeholder tokens but no images were given")

        outputs = self.language_model(
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            **{CACHE_NAME: past_key_values},
            **kwargs,
        )
        return MiniGeminiModelOutputWithPast(
            last_hidden_state=outputs.last_hidden_state,
            **{CACHE_NAME: cache_of(outputs)},
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_hidden_states=image_features,
        )


class MiniGeminiForConditionalGeneration(MiniGeminiPreTrainedModel, GenerationMixin):
    """Mini-Gemini with an LM head: training loss and `generate()` (images are encoded once, at prefill)."""

    _tied_weights_keys: ClassVar[dict[str, str]] = {"lm_head.weight": "model.language_model.embed_tokens.weight"}
    # quantizers match these names from the start of a module's full name: spelled from this class's root
    _keep_in_fp32_modules: ClassVar[list[str]] = [f"model.{name}" for name in VISION_MODULES]
    #: Set by ``minigemini.convert.release`` (imported with the package); None in a checkpoint's own copied code.
    release_conversion: ClassVar[ReleaseConversion | None] = None

    def __init__(self, config: MiniGeminiConfig):
        super().__init__(config)
        self.model = MiniGeminiModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """transformers' `from_pretrained`; a published Mini-Gemini (MGM) release checkpoint is converted on load."""
        conversion = cls.release_conversion
        if not model_args and conversion is not None and conversion.recognises(pretrained_model_name_or_path):
            return cls.from_release_checkpoint(pretrained_model_name_or_path, **kwargs)[0]
        return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)

    @classmethod
    def from_release_checkpoint(cls, source, chat_template: str | None = None, **from_pretrained_kwargs):
        """Load a release checkpoint as (model, MiniGeminiProcessor or None); `minigemini.convert.release` reads it.

        `chat_template` overrides the detected template; `from_pretrained_kwargs` (dtype, device_map, ...) go to
        transformers' loader. The processor is None when the directory has no tokenizer; the model then gets
        `<image>` as a new last row, which a tokenizer must map to `config.image_token_id`.
        """
        if cls.release_conversion is None:
            raise RuntimeError("converting a release checkpoint needs the minigemini package (minigemini.convert)")
        return cls.release_conversion.load(cls, source, chat_template, **from_pretrained_kwargs)

    @classmethod
    def from_release_weights(cls, directory, config: MiniGeminiConfig, **from_pretrained_kwargs):
        """transformers' loader on a release's weights renamed by `RELEASE_KEY_MAPPING`: (model, loading info).

        Shape mismatches are reported in the loading info, not raised; the model saves in this package's layout."""
        model, info = super().from_pretrained(
            directory,
            config=config,
            key_mapping=RELEASE_KEY_MAPPING,
            output_loading_info=True,
            ignore_mismatched_sizes=True,
            **from_pretrained_kwargs,
        )
        # The key mapping is remembered to save back in the source layout; this package saves in its own.
        model._weight_conversions = None
        return model, info

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    def get_image_features(self, pixel_values: torch.Tensor, high_res_pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.get_image_features(pixel_values, high_res_pixel_values)

    def freeze_vision_towers(self, low_res: bool = True, high_res: bool = True) -> None:
        self.model.freeze_vision_towers(low_res, high_res)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        high_res_pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        full_logits: bool | None = None,
        **kwargs,
    ) -> MiniGeminiCausalLMOutputWithPast:
        """labels: (B, L) token ids, -100 where no loss is wanted; image placeholder positions are always ignored.

        full_logits: with labels, whether to compute the LM head at every position (and return `logits`).  False
            computes it only where a next token is supervised (labels[:, 1:] != -100) and returns `logits=None`: the
            same loss, without the (B, L, vocab) tensor, which dominates memory and time for large vocabularies and
            for stage-1 batches that are mostly image tokens.  Default (None): False in training mode, True in eval
            mode.  Without labels the logits are always computed (`logits_to_keep` applies).
        """
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            high_res_pixel_values=high_res_pixel_values,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,  # or `cache` in kwargs: the model takes either
            inputs_embeds=inputs_embeds,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        if labels is not None and input_ids is not None:
            labels = labels.masked_fill(input_ids == self.config.image_token_id, IGNORE_INDEX)
        if full_logits is None:
            full_logits = not self.training
        loss = logits = None
        if labels is not None and not full_logits:
            loss = self.supervised_loss(hidden_states, labels, kwargs.get("num_items_in_batch"))
        else:
            slice_indices = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
            logits = self.lm_head(hidden_states[:, slice_indices, :])
            if labels is not None:
                loss = self.loss_function(
                    logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **kwargs
                )

        return MiniGeminiCausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            **{CACHE_NAME: cache_of(outputs)},
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_hidden_states=outputs.image_hidden_states,
        )

    def supervised_loss(
        self, hidden_states: torch.Tensor, labels: torch.Tensor, num_items_in_batch: torch.Tensor | int | None = None
    ) -> torch.Tensor:
        """Next-token cross-entropy with the LM head applied only at supervised positions.

        Equal to the full-logits loss (mean over supervised tokens, or sum / `num_items_in_batch` when the Trainer
        normalises over gradient-accumulation steps); a batch without supervised tokens gives a zero loss that is
        still connected to the graph, instead of NaN.
        """
        shift_labels = labels[:, 1:].to(hidden_states.device)
        mask = shift_labels != IGNORE_INDEX
        selected = hidden_states[:, :-1][mask]  # (K, H)
        logits = self.lm_head(selected).float()
        loss = nn.functional.cross_entropy(logits, shift_labels[mask], reduction="sum")
        denominator = num_items_in_batch if num_items_in_batch is not None else mask.sum()
        if torch.is_tensor(denominator):
            denominator = denominator.to(loss.device).clamp(min=1)
        else:
            denominator = max(int(denominator), 1)
        return loss / denominator


def add_image_token(model, processor=None) -> int:
    """Give the model an `<image>` row and set `config.image_token_id` (the processor's id, else a new last row).

    New rows get the mean of the existing ones (input and output), which keeps generation as before: the input row
    is always replaced by visual tokens, and a mean output row never wins the argmax. Returns the id.
    """
    rows = model.get_input_embeddings().weight.shape[0]
    token_id = processor.image_token_id if processor is not None else rows
    needed = max(rows, token_id + 1, len(processor.tokenizer) if processor is not None else 0)
    if needed > rows:
        model.resize_token_embeddings(needed, mean_resizing=False)
        with torch.no_grad():
            for embedding in {id(m): m for m in (model.get_input_embeddings(), model.get_output_embeddings())}.values():
                weight = embedding.weight
                weight[rows:] = weight[:rows].mean(dim=0, keepdim=True)
    model.config.image_token_id = token_id
    return token_id


__all__ = [
    "IGNORE_INDEX",
    "MiniGeminiForConditionalGeneration",
    "MiniGeminiModel",
    "MiniGeminiPreTrainedModel",
    "add_image_token",
]
