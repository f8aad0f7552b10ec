"""MiniGeminiProcessor: text (+ images) -> model inputs, with exact ``<image>`` expansion; a transformers processor.

Why: the release splices images by splitting the prompt string on ``<image>`` and tokenising the pieces
separately (tokenisation then depends on where the cut falls) and pads on the right at inference, which
breaks batched generation.  Here ``<image>`` is a real special token: the text is tokenised once, then each
image token id is repeated ``image_seq_length`` times (exact for any tokenizer), and batches are padded on
the left by default.

It is a ``ProcessorMixin``, registered with ``AutoProcessor`` (``minigemini/__init__.py``), so transformers' doors
reach it: ``AutoProcessor.from_pretrained``, the ``image-text-to-text`` pipeline, TRL, engines that read
``processor_config.json`` and ``chat_template.jinja``.  Its chat template is jinja (``processor.chat_template``):
the release template named ``processor.template_name`` written as jinja, or the tokenizer's own behind the same
``<image>`` preparation (``templates.jinja_template`` / ``wrap_jinja_template``).

After building a processor for a new model, resize the LLM embeddings to the tokenizer, because ``<image>``
(and possibly a pad token) may have been added:  ``model.resize_token_embeddings(len(processor.tokenizer))``.
"""

from __future__ import annotations

import contextvars
import functools
import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Unpack

from tokenizers import AddedToken
from transformers import BatchFeature
from transformers.processing_utils import MultiModalData, ProcessingKwargs, ProcessorMixin

from .configuration import MiniGeminiConfig
from .image_processing import MiniGeminiImageProcessor
from .templates import (
    IMAGE_PLACEHOLDER,
    TEMPLATE_NAMES,
    ChatTemplate,
    get_template,
    jinja_template,
    stop_strings,
    validate_messages,
    wrap_jinja_template,
)

__all__ = ["PROCESSOR_CONFIG_NAME", "MiniGeminiProcessor", "build_processor", "image_processor_for_config"]

PROCESSOR_CONFIG_NAME = "processor_config.json"

# End-of-turn markers of common chat templates; stop tokens when the tokenizer's own template contains them.
_END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>", "</s>")
# What ``__call__`` takes besides text and images: transformers' text keywords that make sense here, and a few that
# are harmless to pass (always returned / never returned / no effect).
_TEXT_KEYWORDS = ("padding", "padding_side", "truncation", "max_length", "pad_to_multiple_of", "add_special_tokens")
_OUTPUT_KEYWORDS = ("return_tensors", "return_mm_token_type_ids", "return_attention_mask", "return_token_type_ids")
_KEYWORDS = {*_TEXT_KEYWORDS, *_OUTPUT_KEYWORDS, "verbose"}
_PADDING = {True: "longest", None: "longest", False: "do_not_pad", "max_length": "max_length"}
_PADDING.update({name: name for name in ("longest", "do_not_pad")})


# ``from_pretrained``'s overrides of the saved settings, on their way to ``from_args_and_dict``.
_OVERRIDES: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("mgm_overrides", default=None)


def _check_keywords(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keywords ``__call__`` was given, flat, with the values transformers' processors take refused here."""
    if kwargs.get("images_kwargs"):
        raise TypeError("images_kwargs are not taken: the image processor's settings are saved with it")
    nested = {**kwargs.get("text_kwargs", {}), **kwargs.get("common_kwargs", {})}
    flat = {**nested, **{k: v for k, v in kwargs.items() if k not in ("text_kwargs", "common_kwargs", "images_kwargs")}}
    if set(flat) - _KEYWORDS:
        raise TypeError(f"unexpected arguments: {sorted(set(flat) - _KEYWORDS)}")
    if flat.get("padding_side") not in (None, "left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {flat['padding_side']!r}")
    if flat.get("return_tensors", "pt") not in (None, "pt"):
        raise ValueError(f"return_tensors must be 'pt' or None, got {flat['return_tensors']!r}")
    padding = flat.get("padding", True)
    if not isinstance(padding, (bool, str, type(None))) or padding not in _PADDING:
        raise ValueError("padding must be True/'longest', 'max_length' or False/'do_not_pad'")
    return flat


def _is_image_list(value: Any) -> bool:
    return isinstance(value, (list, tuple))


def _looks_like_jinja(text: str) -> bool:
    return "{%" in text or "{{" in text


class _DropLegacyTemplateWarning(logging.Filter):
    """transformers warns when ``processor_config.json`` holds a ``chat_template`` key; in this package's older
    checkpoints that key is a release template's *name*, which ``get_processor_dict`` reads as such."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Chat templates should be in a 'chat_template.jinja' file" not in record.getMessage()


class MiniGeminiProcessor(ProcessorMixin):
    """Tokenizer + MiniGeminiImageProcessor + chat template.

    Args:
        image_processor: a ``MiniGeminiImageProcessor``.
        tokenizer: any Hugging Face tokenizer; ``<image>`` is added as a special token if missing, and a pad
            token (eos, else unk, else a new ``<pad>``) if it has none.
        image_seq_length: visual tokens per image, all HD views included (e.g. 576, or 5 * 576 in HD mode).
        chat_template: a release template name (see ``templates.TEMPLATE_NAMES``), a jinja template, or None
            for the tokenizer's own jinja template.
        image_token: the placeholder, ``<image>`` (kept in ``processor_config.json`` for engines that read it).
        template_name: the release template the jinja ``chat_template`` was written from (saved with the
            checkpoint; it names the stop strings); None for a tokenizer's own or a custom template.
    """

    #: ``__call__``'s defaults, under transformers' keyword arguments (``_merge_kwargs``)
    text_kwargs: ClassVar[dict[str, Any]] = {
        "padding": True,
        "padding_side": "left",
        "return_tensors": "pt",
        "add_special_tokens": True,
    }

    def __init__(
        self,
        image_processor: MiniGeminiImageProcessor | None = None,
        tokenizer: Any = None,
        image_seq_length: int | None = None,
        chat_template: str | None = None,
        image_token: str = IMAGE_PLACEHOLDER,
        template_name: str | None = None,
    ):
        # by name: loaded as a checkpoint's code, transformers imports each Auto class's module tree separately, so
        # AutoImageProcessor's MiniGeminiImageProcessor is a copy of the class this module imported
        if not any(cls.__name__ == MiniGeminiImageProcessor.__name__ for cls in type(image_processor).__mro__):
            raise TypeError(f"image_processor must be a MiniGeminiImageProcessor, got {type(image_processor).__name__}")
        if tokenizer is None:
            raise TypeError("a tokenizer is required")
        if image_seq_length is None:
            raise ValueError(f"no {PROCESSOR_CONFIG_NAME} with image_seq_length; pass image_seq_length=")
        image_seq_length = int(image_seq_length)
        if image_seq_length < 1:
            raise ValueError(f"image_seq_length must be >= 1, got {image_seq_length}")
        if image_seq_length % image_processor.num_views:
            raise ValueError(
                f"image_seq_length {image_seq_length} is not a multiple of the image processor's "
                f"{image_processor.num_views} views per image"
            )
        if image_token != IMAGE_PLACEHOLDER:
            raise ValueError(f"saved image_token {image_token!r} differs from {IMAGE_PLACEHOLDER!r}")
        self.image_seq_length = image_seq_length
        self.image_token = image_token
        self.template_name, jinja = self._resolve_template(chat_template, template_name, tokenizer)
        self.tokenizer = tokenizer
        self.num_added_tokens = self._prepare_tokenizer()
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        super().__init__(image_processor, tokenizer, chat_template=jinja)

    @staticmethod
    def _resolve_template(chat_template: Any, template_name: str | None, tokenizer: Any) -> tuple[str | None, Any]:
        """(release template name or None, jinja template or None) from the constructor's arguments."""
        if template_name is not None:
            get_template(template_name)  # unknown names raise, listing the known ones
        if isinstance(chat_template, ChatTemplate):
            return chat_template.name, jinja_template(chat_template)
        if isinstance(chat_template, str) and not _looks_like_jinja(chat_template):
            name = get_template(chat_template).name
            return name, jinja_template(name)
        if isinstance(chat_template, (str, dict)):
            if template_name is None and isinstance(chat_template, str):
                template_name = next((n for n in TEMPLATE_NAMES if jinja_template(n) == chat_template), None)
            return template_name, chat_template
        if chat_template is not None:
            raise TypeError(f"chat_template must be a template name, a jinja string or None, got {chat_template!r}")
        if template_name is not None:
            return template_name, jinja_template(template_name)
        own = getattr(tokenizer, "chat_template", None)
        return None, (wrap_jinja_template(own) if isinstance(own, str) else None)

    def _prepare_tokenizer(self) -> int:
        """Make ``<image>`` a single special token, ensure a pad token, and pad on the left (for batched generation:
        transformers' pipelines pad on the tokenizer's side); return how many tokens were added."""
        tok = self.tokenizer
        tok.padding_side = "left"
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

    def apply_chat_template(
        self,
        conversation: Sequence[Mapping[str, Any]] | Sequence[Sequence[Mapping[str, Any]]],
        chat_template: str | None = None,
        add_generation_prompt: bool | None = None,
        **kwargs: Any,
    ):
        """transformers' ``apply_chat_template`` with this processor's jinja template; messages may carry
        strings or ``text``/``image`` parts (``{"type": "image", "image": PIL | "url": ... | "path": ...}``).

        Renders exactly what ``templates.render`` renders for the release templates; each ``<image>`` moves to the
        start of its message, followed by a newline.  ``add_generation_prompt`` defaults to True (the assistant
        header follows a conversation that does not end with the assistant), unless ``continue_final_message``.
        ``tokenize=True, return_dict=True`` returns the model inputs, images loaded from the messages.  Messages
        are checked first, with the errors ``mgm.chat`` gives.
        """
        if add_generation_prompt is None:
            add_generation_prompt = not kwargs.get("continue_final_message", False)
        if chat_template is None and self.chat_template is None:
            raise ValueError(
                "this processor has no chat_template and the tokenizer has no jinja chat template; "
                "pass chat_template=<one of the release templates>"
            )
        if isinstance(chat_template, str) and not _looks_like_jinja(chat_template):
            chat_template = jinja_template(chat_template)  # a release template's name
        if self.template_name is not None and chat_template is None:
            batched = bool(conversation) and not isinstance(conversation[0], Mapping)
            for messages in conversation if batched else [conversation]:
                validate_messages(getattr(messages, "messages", messages))
        return super().apply_chat_template(
            conversation, chat_template=chat_template, add_generation_prompt=add_generation_prompt, **kwargs
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
        text: str | Sequence[str] | None = None,
        images: Any = None,
        videos: Any = None,
        audio: Any = None,
        **kwargs: Unpack[ProcessingKwargs],
    ) -> BatchFeature:
        """Tokenise ``text`` (one string or a batch), expand each ``<image>`` to ``image_seq_length`` image
        tokens and pad to the longest sample (left by default, for generation).

        ``images``: a flat list over the batch in order of appearance, or one list per sample (anything
        ``load_image`` takes, and http(s) URLs).  Returns ``input_ids`` and ``attention_mask``, plus
        ``pixel_values`` and ``high_res_pixel_values`` (all images of the batch, in order) when there are images,
        and ``mm_token_type_ids`` (1 at image tokens) with ``return_mm_token_type_ids``.  A doubled leading BOS
        (template text that already starts with it) is collapsed to one.

        transformers' processor keywords (merged by ``_merge_kwargs``, defaults in ``text_kwargs``) are taken where
        they make sense here and passed to the tokenizer: ``padding`` (True/"longest", "max_length", False),
        ``padding_side``, ``truncation`` with ``max_length`` (refused where it would cut image tokens),
        ``pad_to_multiple_of``, ``add_special_tokens``, ``return_tensors``.  ``videos``/``audio`` must be None.
        """
        _check_keywords(kwargs)
        if videos is not None or audio is not None:
            raise ValueError("Mini-Gemini takes text and images only, not videos or audio")
        merged = self._merge_kwargs(**kwargs)
        settings = {"truncation": None, "max_length": None, "pad_to_multiple_of": None, **merged["text_kwargs"]}
        settings.update(padding=_PADDING[settings["padding"]], padding_side=settings["padding_side"] or "left")
        texts = [text] if isinstance(text, str) else list(text) if text is not None else []
        if not texts or not all(isinstance(t, str) for t in texts):
            raise ValueError("text must be a string or a non-empty list of strings")
        counts = [t.count(self.image_token) for t in texts]
        flat_images = self._group_images(images, counts)
        expanded = [t.replace(self.image_token, self.image_token * self.image_seq_length) for t in texts]
        sequences = self._encode(expanded, counts, settings)
        data = self._pad(sequences, settings)
        if merged.get("return_mm_token_type_ids"):
            data["mm_token_type_ids"] = [[int(t == self.image_token_id) for t in ids] for ids in data["input_ids"]]
        batch = BatchFeature(data=dict(data), tensor_type=settings["return_tensors"])
        if flat_images:
            pixels = self.image_processor(flat_images, return_tensors="pt")
            batch["pixel_values"] = pixels["pixel_values"]
            batch["high_res_pixel_values"] = pixels["high_res_pixel_values"]
        return batch

    def _encode(self, texts: list[str], counts: list[int], settings: dict[str, Any]) -> list[list[int]]:
        """The tokenizer's ids of each (expanded) text, truncated by it to ``max_length`` with ``truncation``; a
        doubled leading BOS is collapsed before the cut, and a cut through image tokens is refused."""
        limit, add_special_tokens = (
            settings["max_length"] if settings["truncation"] else None,
            settings["add_special_tokens"],
        )
        sequences = self._tokenize(texts, add_special_tokens, limit)
        doubled = {index for index, ids in enumerate(sequences) if self._doubled_bos(ids)}
        if doubled and limit is not None:  # the collapse takes one token off: cut those one token later
            longer = {index: self._tokenize([texts[index]], add_special_tokens, limit + 1)[0] for index in doubled}
            sequences = [longer.get(index, ids) for index, ids in enumerate(sequences)]
        sequences = [ids[1:] if index in doubled else ids for index, ids in enumerate(sequences)]
        for index, (ids, count) in enumerate(zip(sequences, counts)):
            if ids.count(self.image_token_id) != count * self.image_seq_length:
                self._raise_image_token_count(index, texts[index], ids, count, settings)
        return sequences

    def _tokenize(self, texts: list[str], add_special_tokens: bool, max_length: int | None) -> list[list[int]]:
        tokenize = functools.partial(self.tokenizer, add_special_tokens=add_special_tokens)
        return tokenize(texts, truncation=max_length is not None, max_length=max_length)["input_ids"]

    def _doubled_bos(self, ids: list[int]) -> bool:
        bos = self.tokenizer.bos_token_id
        return bos is not None and len(ids) > 1 and ids[0] == bos and ids[1] == bos

    def _raise_image_token_count(self, index: int, text: str, ids: list[int], count: int, settings: dict[str, Any]):
        found = ids.count(self.image_token_id)
        if settings["truncation"] and found < count * self.image_seq_length:
            whole = self._tokenize([text], settings["add_special_tokens"], None)[0]
            length = len(whole) - self._doubled_bos(whole)
            raise ValueError(
                f"sample {index} is {length} tokens ({count} image(s) of {self.image_seq_length} tokens included); "
                f"truncating it to max_length={settings['max_length']} would cut its image tokens"
            )
        raise ValueError(
            f"sample {index}: {count} {self.image_token} placeholder(s) in the text became "
            f"{found / self.image_seq_length:g} image token(s) after tokenisation"
        )

    def _pad(self, sequences: list[list[int]], settings: dict[str, Any]) -> dict[str, list[list[int]]]:
        """``input_ids`` and ``attention_mask``, padded by the tokenizer; "max_length" pads to at least the longest
        sample, and unpadded samples of unequal length cannot make tensors."""
        padding, max_length = settings["padding"], settings["max_length"]
        if padding == "max_length":
            max_length = max(max(map(len, sequences)), max_length or 0)
        if padding == "do_not_pad" and settings["return_tensors"] and len(set(map(len, sequences))) > 1:
            raise ValueError("padding=False needs samples of equal length to make tensors; pass padding=True")
        padded = self.tokenizer.pad(
            {"input_ids": sequences},
            padding=padding,
            max_length=max_length if padding == "max_length" else None,
            pad_to_multiple_of=settings["pad_to_multiple_of"],
            padding_side=settings["padding_side"],
            return_attention_mask=True,
        )
        return {"input_ids": padded["input_ids"], "attention_mask": padded["attention_mask"]}

    def decode(self, *args, **kwargs) -> str:
        """Passthrough to ``tokenizer.decode``."""
        return self.tokenizer.decode(*args, **kwargs)

    def batch_decode(self, *args, **kwargs) -> list[str]:
        """Passthrough to ``tokenizer.batch_decode``."""
        return self.tokenizer.batch_decode(*args, **kwargs)

    # ------------------------------------------------------------------------------------------ engines

    @property
    def model_input_names(self) -> list[str]:
        """What the model's forward takes from this processor's output."""
        return ["input_ids", "attention_mask", "pixel_values", "high_res_pixel_values"]

    def _get_num_multimodal_tokens(self, image_sizes: Sequence[Sequence[int]] | None = None, **kwargs):
        """Placeholder tokens per image for images of ``image_sizes`` ((height, width) each): every image is
        padded to a square and resized, so always ``image_seq_length``; one ``pixel_values`` entry per image."""
        data = {}
        if image_sizes is not None:
            data = {
                "num_image_tokens": [self.image_seq_length] * len(image_sizes),
                "num_image_patches": [1] * len(image_sizes),
            }
        return MultiModalData(**data)

    def stop_settings(self) -> tuple[list[str], set[int]]:
        """(stop strings, stop token ids): the release template's end-of-turn strings, the tokenizer's eos, and
        end-of-turn tokens that its own template uses or that a stop string is."""
        tokenizer = self.tokenizer
        strings = stop_strings(self.template_name) if self.template_name else []
        ids: set[int] = set()
        if tokenizer.eos_token_id is not None:
            ids.add(tokenizer.eos_token_id)
        jinja = self.chat_template if isinstance(self.chat_template, str) else ""
        vocab = tokenizer.get_vocab()
        for token in _END_OF_TURN_TOKENS:
            if token in vocab and (token in jinja or token in strings):
                ids.add(vocab[token])
        for text in strings:  # a stop string that is a single special token stops at token level too
            if text in vocab and text in tokenizer.all_special_tokens:
                ids.add(vocab[text])
        return strings, ids

    # ------------------------------------------------------------------------------------------ save / load

    @classmethod
    def get_processor_dict(cls, pretrained_model_name_or_path, **kwargs):
        """transformers' reading of ``processor_config.json`` and ``chat_template.jinja``; this package's older
        checkpoints (a ``chat_template`` *name* in ``processor_config.json``, the image processor in
        ``preprocessor_config.json``) read as the same processor."""
        logger = logging.getLogger("transformers.processing_utils")
        legacy = _DropLegacyTemplateWarning()
        logger.addFilter(legacy)
        try:
            processor_dict, rest = super().get_processor_dict(pretrained_model_name_or_path, **kwargs)
        finally:
            logger.removeFilter(legacy)
        saved = os.path.join(os.fspath(pretrained_model_name_or_path), PROCESSOR_CONFIG_NAME)
        if os.path.isfile(saved):
            with open(saved, encoding="utf-8") as f:
                raw = json.load(f)
            if "chat_template" in raw:  # written before the processor was a ProcessorMixin
                name = raw["chat_template"]
                processor_dict["template_name"] = name if name in TEMPLATE_NAMES else None
                # the tokenizer's own template (also in chat_template.jinja) gets the <image> preparation
                processor_dict["chat_template"] = name if name not in TEMPLATE_NAMES else None
        return processor_dict, rest

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> MiniGeminiProcessor:
        """Load what ``save_pretrained`` wrote (this format or the older one).  ``image_seq_length=`` /
        ``chat_template=`` (a release template name or jinja) override the saved values; other keyword arguments
        go to transformers' loader (and ``AutoTokenizer.from_pretrained``)."""
        overrides = {k: kwargs.pop(k) for k in ("image_seq_length", "chat_template") if k in kwargs}
        if "chat_template" in overrides:
            overrides["template_name"] = None  # derived from the new template
        token = _OVERRIDES.set(overrides)  # for from_args_and_dict: they must not reach the tokenizer's loader
        try:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        finally:
            _OVERRIDES.reset(token)

    @classmethod
    def from_args_and_dict(cls, args, processor_dict: dict[str, Any], **kwargs):
        return super().from_args_and_dict(args, {**processor_dict, **(_OVERRIDES.get() or {})}, **kwargs)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(image_seq_length={self.image_seq_length}, template_name={self.template_name!r}, "
            f"image_token_id={self.image_token_id}, tokenizer={type(self.tokenizer).__name__}, "
            f"image_processor={self.image_processor.to_dict()})"
        )


def image_processor_for_config(config: MiniGeminiConfig, **image_kwargs) -> MiniGeminiImageProcessor:
    """The MiniGeminiImageProcessor matching `config`: LR and HR sizes, HD grid and global view."""
    return MiniGeminiImageProcessor(
        image_size=config.vision_config.image_size,
        image_size_aux=config.image_size_aux,
        image_grid=config.image_grid,
        image_global=config.image_global,
        **image_kwargs,
    )


def build_processor(config: MiniGeminiConfig, tokenizer: Any, chat_template: str | None, **image_kwargs):
    """A MiniGeminiProcessor matching `config` (LR/HR sizes, HD grid, visual tokens per image); adds `<image>`."""
    image_processor = image_processor_for_config(config, **image_kwargs)
    return MiniGeminiProcessor(image_processor, tokenizer, config.image_seq_length, chat_template=chat_template)
