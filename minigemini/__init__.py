"""Mini-Gemini (MGM) on a current transformers: dual vision encoders, patch info mining, any causal LM."""

from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText

from minigemini.configuration import MiniGeminiConfig
from minigemini.image_processing import ImageLoadError, MiniGeminiImageProcessor, load_image
from minigemini.inference import batch_chat, chat
from minigemini.loading import load_pretrained
from minigemini.modeling import MiniGeminiForConditionalGeneration, MiniGeminiModel, MiniGeminiPreTrainedModel
from minigemini.processing import MiniGeminiProcessor

# Registering lets AutoConfig / AutoModel* resolve `"model_type": "minigemini"` from a saved directory.
AutoConfig.register(MiniGeminiConfig.model_type, MiniGeminiConfig, exist_ok=True)
AutoModel.register(MiniGeminiConfig, MiniGeminiModel, exist_ok=True)
AutoModelForImageTextToText.register(MiniGeminiConfig, MiniGeminiForConditionalGeneration, exist_ok=True)

__version__ = "0.1.0"
__all__ = [
    "batch_chat",
    "chat",
    "load_pretrained",
    "ImageLoadError",
    "MiniGeminiConfig",
    "MiniGeminiForConditionalGeneration",
    "MiniGeminiModel",
    "MiniGeminiImageProcessor",
    "MiniGeminiPreTrainedModel",
    "MiniGeminiProcessor",
    "load_image",
]
