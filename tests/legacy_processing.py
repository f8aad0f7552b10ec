"""The processor as it was before it became a transformers ProcessorMixin (commit 253aca6), without its own
save/load: kept so that a test can prove the new one gives the same prompts and tensors on the same inputs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from tokenizers import AddedToken
from transformers import BatchFeature

from minigemini.image_processing import MiniGeminiImageProcessor
from minigemini.templates import IMAGE_PLACEHOLDER, content_to_text, get_template, normalize_image_placeholders, render


def _is_image_list(value: Any) -> bool:
    return isinstance(value, (list, tuple))


class LegacyMiniGeminiProcessor:
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
