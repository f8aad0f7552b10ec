"""Conversation -> (input_ids, labels): label masks from the chat template's supervised spans, computed once.

The release masks labels by re-tokenising pieces of the prompt and counting their tokens, which drifts whenever a
tokenizer merges characters across a piece boundary.  Here the conversation is rendered once into a string together
with the character spans the model must learn to produce (the assistant answers and their end-of-turn separators):

- a release template (``templates.render_segments``) gives ``(text, supervised)`` pieces directly;
- a tokenizer's own jinja template gives the spans from ``{% generation %}`` markers when it has them, else by
  rendering each prefix of the conversation (the prompt before an answer, then the conversation up to its end) and
  taking the difference -- which works for every template that renders a conversation's prefixes as prefixes.

The full string is then tokenised once, exactly as ``MiniGeminiProcessor`` tokenises at inference (special tokens
added, a doubled BOS collapsed), with ``return_offsets_mapping``; a token is supervised when its character span
overlaps a supervised span.  Finally each ``<image>`` token is expanded to ``image_seq_length`` image tokens, whose
labels are always -100.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from minigemini.modeling import IGNORE_INDEX
from minigemini.templates import content_to_text, normalize_image_placeholders, render_segments

__all__ = ["IGNORE_INDEX", "ConversationEncoder", "EncodedConversation"]

_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")

EncodedConversation = tuple[np.ndarray, np.ndarray]  # (input_ids, labels), int64, image tokens expanded


class ConversationEncoder:
    """Encodes chat messages for training with a ``MiniGeminiProcessor``'s tokenizer and image token settings.

    Args:
        processor: a ``MiniGeminiProcessor`` (its tokenizer must be a fast tokenizer, for offsets).
        template: a release template name (``plain`` for stage 1), or None for the tokenizer's jinja template.
    """

    def __init__(self, processor: Any, template: str | None):
        tokenizer = processor.tokenizer
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(
                f"training needs a fast tokenizer (offset mappings); got {type(tokenizer).__name__}. "
                "Load it with use_fast=True or convert it with `tokenizers`."
            )
        if template is None and not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                "no chat template: the processor names none and the tokenizer has no jinja chat_template; "
                "pass a release template (e.g. --template vicuna_v1)"
            )
        self.tokenizer = tokenizer
        self.template = template
        self.image_token_id = processor.image_token_id
        self.image_seq_length = processor.image_seq_length
        self.bos_token_id = tokenizer.bos_token_id

    # ------------------------------------------------------------------------------------------ text + spans

    def render(self, messages: Sequence[Mapping[str, Any]]) -> tuple[str, list[tuple[int, int]]]:
        """The full training string and its supervised character spans [start, end)."""
        if self.template is not None:
            text, spans, position = [], [], 0
            for piece, supervised in render_segments(self.template, messages, add_generation_prompt=False):
                if supervised:
                    spans.append((position, position + len(piece)))
                text.append(piece)
                position += len(piece)
            return "".join(text), spans
        return self._render_jinja(messages)

    def _render_jinja(self, messages: Sequence[Mapping[str, Any]]) -> tuple[str, list[tuple[int, int]]]:
        normalised = [
            {"role": m["role"], "content": normalize_image_placeholders(content_to_text(m.get("content", "")))}
            for m in messages
        ]
        tokenizer = self.tokenizer
        template = tokenizer.chat_template
        if _GENERATION_TAG.search(template):
            from transformers.utils.chat_template_utils import render_jinja_template

            rendered, indices = render_jinja_template(
                conversations=[normalised],
                chat_template=template,
                return_assistant_tokens_mask=True,
                add_generation_prompt=False,
                **tokenizer.special_tokens_map,
            )
            return rendered[0], [tuple(span) for span in indices[0]]

        def apply(msgs, generation_prompt):
            return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=generation_prompt)

        full = apply(normalised, False)
        spans = []
        for index, message in enumerate(normalised):
            if message["role"] != "assistant":
                continue
            prompt = apply(normalised[:index], True)
            upto = apply(normalised[: index + 1], False)
            if not (upto.startswith(prompt) and full.startswith(upto)):
                raise ValueError(
                    "the tokenizer's chat template does not render a conversation's prefixes as prefixes of it "
                    "(it rewrites earlier turns), so the answers cannot be located; add {% generation %} markers to "
                    "the template or use a release template (--template)"
                )
            spans.append((len(prompt), len(upto)))
        return full, spans

    # ------------------------------------------------------------------------------------------ tokens

    def encode(self, messages: Sequence[Mapping[str, Any]]) -> EncodedConversation:
        return self.encode_batch([messages])[0]

    def encode_batch(self, conversations: Sequence[Sequence[Mapping[str, Any]]]) -> list[EncodedConversation]:
        """Encode several conversations with one (parallel) tokenizer call."""
        rendered = [self.render(messages) for messages in conversations]
        encodings = self.tokenizer([text for text, _ in rendered], add_special_tokens=True, return_offsets_mapping=True)
        results = []
        for (text, spans), ids, offsets in zip(rendered, encodings["input_ids"], encodings["offset_mapping"]):
            results.append(self._labels(text, spans, ids, offsets))
        return results

    def _labels(self, text: str, spans, ids, offsets) -> EncodedConversation:
        ids = np.asarray(ids, dtype=np.int64)
        offsets = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
        bos = self.bos_token_id
        if bos is not None and len(ids) > 1 and ids[0] == bos and ids[1] == bos:
            ids, offsets = ids[1:], offsets[1:]  # as MiniGeminiProcessor does at inference
        supervised_chars = np.zeros(len(text) + 1, dtype=np.int64)
        for start, end in spans:
            supervised_chars[start:end] = 1
        prefix = np.concatenate([[0], np.cumsum(supervised_chars)])
        starts, ends = offsets[:, 0], offsets[:, 1]
        supervised = (ends > starts) & (prefix[ends] - prefix[starts] > 0)
        is_image = ids == self.image_token_id
        labels = np.where(supervised & ~is_image, ids, IGNORE_INDEX)
        if is_image.any():
            repeats = np.where(is_image, self.image_seq_length, 1)
            ids = np.repeat(ids, repeats)
            labels = np.repeat(labels, repeats)
        return ids, labels
