"""Mini-Gemini (MGM) on a current transformers: dual vision encoders, patch info mining, any causal LM."""

import logging

# transformers imports torchao, when it is installed, as it imports its quantizers: torchao then logs each CUDA kernel
# library it cannot load and torch warns about torchao's enums, in every command, about nothing this package runs.
for _noisy in ("torchao", "torch.utils._pytree"):
    logging.getLogger(_noisy).setLevel(logging.ERROR)

from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageTextToText, AutoProcessor

from minigemini.configuration import MiniGeminiConfig
from minigemini.image_processing import ImageLoadError, MiniGeminiImageProcessor, load_image
from minigemini.inference import batch_chat, chat
from minigemini.loading import load_pretrained
from minigemini.modeling import MiniGeminiForConditionalGeneration, MiniGeminiModel, MiniGeminiPreTrainedModel
from minigemini.processing import MiniGeminiProcessor

# Registering lets AutoConfig / AutoModel* resolve `"model_type": "minigemini"` from a saved directory, and
# AutoProcessor / AutoImageProcessor the class names that processor_config.json records: transformers looks an
# out-of-tree class name up only among registered classes (without this, "Unrecognized image processor").  The image
# processor is one class for both of transformers' backends (its tensors are torch, its decoding PIL).
AutoConfig.register(MiniGeminiConfig.model_type, MiniGeminiConfig, exist_ok=True)
AutoModel.register(MiniGeminiConfig, MiniGeminiModel, exist_ok=True)
AutoModelForImageTextToText.register(MiniGeminiConfig, MiniGeminiForConditionalGeneration, exist_ok=True)
AutoImageProcessor.register(
    MiniGeminiConfig,
    image_processor_classes={"torchvision": MiniGeminiImageProcessor, "pil": MiniGeminiImageProcessor},
    exist_ok=True,
)
AutoProcessor.register(MiniGeminiConfig, MiniGeminiProcessor, exist_ok=True)

__version__ = "0.1.0"
__all__ = [
    "ImageLoadError",
    "MiniGeminiConfig",
    "MiniGeminiForConditionalGeneration",
    "MiniGeminiImageProcessor",
    "MiniGeminiModel",
    "MiniGeminiPreTrainedModel",
    "MiniGeminiProcessor",
    "batch_chat",
    "chat",
    "load_image",
    "load_pretrained",
]
