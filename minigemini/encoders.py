"""The two vision towers: a ViT for low-resolution tokens and a ConvNeXt for the high-resolution map."""

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, ConvNextModel


class LowResEncoder(nn.Module):
    """CLIP/SigLIP vision model; features are one hidden layer, CLS dropped for the "default" strategy."""

    def __init__(self, config):
        super().__init__()
        self.model = AutoModel.from_config(config.vision_config)
        self.feature_layer = config.vision_feature_layer
        self.drop_cls = config.vision_feature_select_strategy == "default"

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, N, C)."""
        pixel_values = pixel_values.to(self.model.dtype)
        outputs = self.model(pixel_values=pixel_values, output_hidden_states=True)
        features = outputs.hidden_states[self.feature_layer]
        return features[:, 1:] if self.drop_cls else features


class HighResEncoder(nn.Module):
    """ConvNeXt trunk whose four stage outputs are upsampled to stage 0 and concatenated (stride 4 in the release).

    Only the stem and stages run: the pooled head of `ConvNextModel` is never used.
    """

    def __init__(self, config):
        super().__init__()
        self.convnext = ConvNextModel(config.vision_aux_config)

    def stage_outputs(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """The four stage outputs, (B, hidden_sizes[i], H / (4 * 2^i), W / (4 * 2^i))."""
        hidden = self.convnext.embeddings(pixel_values.to(self.convnext.dtype))
        outputs = []
        for stage in self.convnext.encoder.stages:
            hidden = stage(hidden)
            outputs.append(hidden)
        return outputs

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, sum(hidden_sizes), H / stride, W / stride)."""
        stage_outputs = self.stage_outputs(pixel_values)
        size = stage_outputs[0].shape[-2:]
        # Interpolate in the map's own dtype: an fp32 copy of a 2880-channel map is the largest tensor of the model.
        upsampled = [F.interpolate(x, size=size, mode="bilinear", align_corners=False) for x in stage_outputs[1:]]
        return torch.cat([stage_outputs[0], *upsampled], dim=1)


def freeze_encoder(encoder: nn.Module) -> None:
    """Freeze a tower for training: no gradients, and stochastic depth (drop-path) replaced by identity."""
    encoder.requires_grad_(False)
    for module in encoder.modules():
        for name, child in module.named_children():
            if type(child).__name__.endswith("DropPath"):
                setattr(module, name, nn.Identity())
