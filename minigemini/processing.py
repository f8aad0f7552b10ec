"""MiniGeminiProcessor: text (+ images) -> model inputs, with exact ``<image>`` expansion.

Why: the release splices images by splitting the prompt string on ``<image>`` and tokenising the pieces
separately (tokenisation then depends on where the cut falls) and pads on the right at inference, which
breaks batched generation.  Here ``<image>`` is a real special token: the text is tokenised once, then each
image token id is repeated ``image_seq_length`` times (exact for any tokenizer), and batches are padded on
the left by default.

After building a processor for a new model, resize the LLM embeddings to the tokenizer, because ``<image>``
(and possibly a pad token) may have been added:  ``model.resize_token_embeddings(len(processor.tokenizer))``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from tokenizers import AddedToken
from transformers import AutoTokenizer, BatchFeature

from minigemini.configuration import MiniGeminiConfig
from minigemini.image_processing import MiniGeminiImageProcessor
from minigemini.templates import IMAGE_PLACEHOLDER, content_to_text, get_template, normalize_image_placeholders, render

__all__ = ["PROCESSOR_CONFIG_NAME", "MiniGeminiProcessor", "build_processor"]

PROCESSOR_CONFIG_NAME = "processor_config.json"


def _is_image_list(value: Any) -> bool:
    return isinstance(value, (list, tuple))


class MiniGeminiProcessor:
    """Tokenizer + MiniGeminiImageProcessor + chat template.

    Args:
        image_processor: a ``MiniGeminiImageProcessor``.
        tokenizer: any Hugging Face tokenizer; ``<image>`` is added as a special token if missing, and a pad
            token (eos, else unk, else a new ``<pad>``) if it has none.
        image_seq_length: visual tokens per image, all HD views included (e.g. 576, or 5 * 576 in HD mode).
        chat_template: a release template name (see ``templates.TEMPLATE_NAMES``) or None to use the
            tokenizer's own jinja chat template.
    """

    image_token = IMAGE_PLACEHOLDER
    model_input_names = ["input_ids", "attention_mask", "pixel_values", "high_res_pixel_values"]

    def __init__(
        self,
        image_processor: MiniGeminiImageProcessor,
        tokenizer: Any,
        image_seq_length: int,
        chat_template: str | None = None,
    ):
        if not isinstance(image_processor, MiniGeminiImageProcessor):
            raise TypeError(f"image_processor must be a MiniGeminiImageProcessor, got {type(image_processor).__name__}")
        image_seq_length = int(image_seq_length)
        if image_seq_length < 1:
            raise ValueError(f"image_seq_length must be >= 1, got {image_seq_length}")
        if image_seq_length % image_processor.num_views:
            raise ValueError(
                f"image_seq_length {image_seq_length} is not a multiple of the image processor's "
                f"{image_processor.num_views} views per image"
            )
        if chat_template is not None:
            get_template(chat_template)  # unknown names raise, listing the known ones
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.image_seq_length = image_seq_length
        self.chat_template = chat_template
        self.num_added_tokens = self._prepare_tokenizer()
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)

    def _prepare_tokenizer(self) -> int:
        """Make ``<image>`` a single special token and ensure a pad token; return how many tokens were added."""
        tok = self.tokenizer
        added = 0
        if self.image_token not in tok.all_special_tokens:
            image_token = AddedToken(self.image_token, special=True, normalized=False, lstrip=False, rstrip=False)
            added += tok.add_special_tokens({"extra_special_tokens": [image_token]}, replace_extra_special_tokens=False)
        if tok.pad_token is None:
            if tok.eos_token is not None:
                tok.pad_token = tok.eos_token
            elif tok.unk_token is not None:
                tok.pad_token = tok.unk_token
            else:
                added += tok.add_special_tokens({"pad_token": "<pad>"})
        probe = tok.encode(f"a{self.image_token}b", add_special_tokens=False)
        if probe.count(tok.convert_tokens_to_ids(self.image_token)) != 1:
            raise ValueError(f"the tokenizer does not keep {self.image_token!r} as one token")
        return added

    # ------------------------------------------------------------------------------------------ text

    def apply_chat_template(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True) -> str:
        """Messages -> prompt string, with the release template or the tokenizer's own jinja template.

        Either way each ``<image>`` is moved to the start of its message, followed by a newline.
        """
        if self.chat_template is not None:
            return render(self.chat_template, messages, add_generation_prompt=add_generation_prompt)
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError(
                "this processor has no chat_template and the tokenizer has no jinja chat template; "
                "pass chat_template=<one of the release templates>"
            )
        normalised = [
            {**message, "content": normalize_image_placeholders(content_to_text(message.get("content", "")))}
            for message in messages
        ]
        return self.tokenizer.apply_chat_template(
            normalised, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def _group_images(self, images: Any, counts: list[int]) -> list[Any]:
        """Check placeholder counts against ``images`` and return the flat list of images in text order."""
        total = sum(counts)
        if images is None:
            images = []
        elif not _is_image_list(images):
            images = [images]
        nested = len(images) > 0 and all(_is_image_list(x) for x in images)
        if nested:
            if len(images) != len(counts):
                raise ValueError(f"got images for {len(images)} samples but {len(counts)} texts")
            for index, (sample_images, count) in enumerate(zip(images, counts)):
                if len(sample_images) != count:
                    raise ValueError(
                        f"sample {index} has {count} {self.image_token} placeholder(s) but {len(sample_images)} "
                        f"image(s) were given for it"
                    )
            return [image for sample_images in images for image in sample_images]
        if any(_is_image_list(x) for x in images):
            raise ValueError("images must be a flat list or a list of lists (one per sample), not a mixture")
        if len(images) != total:
            raise ValueError(
                f"the text has {total} {self.image_token} placeholder(s) but {len(images)} image(s) were given; "
                f"put one {self.image_token} in the text per image"
            )
        return list(images)

    def __call__(
        self,
        text: str | Sequence[str],
        images: Any = None,
        padding_side: str = "left",
        return_tensors: str | None = "pt",
        add_special_tokens: bool = True,
    ) -> BatchFeature:
        """Tokenise ``text`` (one string or a batch), expand each ``<image>`` to ``image_seq_length`` image
        tokens and pad to the longest sample (left by default, for generation).

        ``images``: a flat list over the batch in order of appearance, or one list per sample.  Returns
        ``input_ids`` and ``attention_mask``, plus ``pixel_values`` and ``high_res_pixel_values`` (all images
        of the batch, in order) when there are images.  A doubled leading BOS (template text that already
        starts with it) is collapsed to one.
        """
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        if return_tensors not in (None, "pt"):
            raise ValueError(f"return_tensors must be 'pt' or None, got {return_tensors!r}")
        texts = [text] if isinstance(text, str) else list(text)
        if not texts or not all(isinstance(t, str) for t in texts):
            raise ValueError("text must be a string or a non-empty list of strings")

        counts = [t.count(self.image_token) for t in texts]
        flat_images = self._group_images(images, counts)

        encoded = self.tokenizer(texts, add_special_tokens=add_special_tokens)["input_ids"]
        bos = self.tokenizer.bos_token_id
        sequences = []
        for index, (ids, count) in enumerate(zip(encoded, counts)):
            if bos is not None and len(ids) > 1 and ids[0] == bos and ids[1] == bos:
                ids = ids[1:]
            if ids.count(self.image_token_id) != count:
                raise ValueError(
                    f"sample {index}: {count} {self.image_token} placeholder(s) in the text became "
                    f"{ids.count(self.image_token_id)} image token(s) after tokenisation"
                )
            expanded: list[int] = []
            for token_id in ids:
                if token_id == self.image_token_id:
                    expanded.extend([self.image_token_id] * self.image_seq_length)
                else:
                    expanded.append(token_id)
            sequences.append(expanded)

        longest = max(len(s) for s in sequences)
        pad_id = self.tokenizer.pad_token_id
        input_ids, attention_mask = [], []
        for seq in sequences:
            fill = longest - len(seq)
            if padding_side == "left":
                input_ids.append([pad_id] * fill + seq)
                attention_mask.append([0] * fill + [1] * len(seq))
            else:
                input_ids.append(seq + [pad_id] * fill)
                attention_mask.append([1] * len(seq) + [0] * fill)

        data: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if return_tensors == "pt":
            data = {k: torch.tensor(v, dtype=torch.long) for k, v in data.items()}
        if flat_images:
            pixels = self.image_processor(flat_images, return_tensors="pt")
            data["pixel_values"] = pixels["pixel_values"]
            data["high_res_pixel_values"] = pixels["high_res_pixel_values"]
        return BatchFeature(data=data)

    def decode(self, *args, **kwargs) -> str:
        """Passthrough to ``tokenizer.decode``."""
        return self.tokenizer.decode(*args, **kwargs)

    def batch_decode(self, *args, **kwargs) -> list[str]:
        """Passthrough to ``tokenizer.batch_decode``."""
        return self.tokenizer.batch_decode(*args, **kwargs)

    # ------------------------------------------------------------------------------------------ save / load

    def to_dict(self) -> dict[str, Any]:
        return {
            "processor_class": type(self).__name__,
            "image_seq_length": self.image_seq_length,
            "chat_template": self.chat_template,
            "image_token": self.image_token,
        }

    def save_pretrained(self, save_directory: str | os.PathLike) -> list[str]:
        """Write tokenizer files, ``preprocessor_config.json`` and ``processor_config.json`` to a directory."""
        os.makedirs(save_directory, exist_ok=True)
        files = list(self.tokenizer.save_pretrained(save_directory))
        files += list(self.image_processor.save_pretrained(save_directory))
        path = os.path.join(save_directory, PROCESSOR_CONFIG_NAME)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=True)
            f.write("\n")
        return files + [path]

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> MiniGeminiProcessor:
        """Load what ``save_pretrained`` wrote.  ``image_seq_length=`` / ``chat_template=`` override the saved
        values; other keyword arguments go to ``AutoTokenizer.from_pretrained``."""
        overrides = {k: kwargs.pop(k) for k in ("image_seq_length", "chat_template") if k in kwargs}
        path = os.fspath(pretrained_model_name_or_path)
        config: dict[str, Any] = {}
        config_file = os.path.join(path, PROCESSOR_CONFIG_NAME)
        if os.path.isfile(config_file):
            with open(config_file, encoding="utf-8") as f:
                config = json.load(f)
        config.update(overrides)
        if "image_seq_length" not in config:
            raise ValueError(f"no {PROCESSOR_CONFIG_NAME} with image_seq_length in {path}; pass image_seq_length=")
        if config.get("image_token", cls.image_token) != cls.image_token:
            raise ValueError(f"saved image_token {config['image_token']!r} differs from {cls.image_token!r}")
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
        image_processor = MiniGeminiImageProcessor.from_pretrained(path)
        return cls(
            image_processor,
            tokenizer,
            image_seq_length=config["image_seq_length"],
            chat_template=config.get("chat_template"),
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(image_seq_length={self.image_seq_length}, chat_template={self.chat_template!r}, "
            f"image_token_id={self.image_token_id}, tokenizer={type(self.tokenizer).__name__}, "
            f"image_processor={self.image_processor.to_dict()})"
        )


def build_processor(config: MiniGeminiConfig, tokenizer: Any, chat_template: str | None, **image_kwargs):
    """A MiniGeminiProcessor matching `config` (LR/HR sizes, HD grid, visual tokens per image); adds `<image>`."""
    image_processor = MiniGeminiImageProcessor(
        image_size=config.vision_config.image_size,
        image_size_aux=config.image_size_aux,
        image_grid=config.image_grid,
        image_global=config.image_global,
        **image_kwargs,
    )
    return MiniGeminiProcessor(image_processor, tokenizer, config.image_seq_length, chat_template=chat_template)
