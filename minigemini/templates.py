"""The chat templates of the Mini-Gemini release, as data, and one small renderer.

Why: a checkpoint only answers well in the exact text format it was trained on, and training must know
which characters are the assistant's (supervised) and which are the prompt.  ``render_segments`` returns
both at once, so the prompt used at inference is, by construction, the unsupervised prefix seen in
training: ``render(history + [user], add_generation_prompt=True)`` is a prefix of
``render(history + [user, assistant])`` and ends exactly where the supervised text starts.

Formats (from the release's ``mgm/conversation.py`` and ``mgm/train/train.py``; ``q`` = user text,
``a`` = assistant text, supervised text in [brackets]; BOS tokens come from the tokenizer, not the text):

- ``vicuna_v1`` (7B/13B):  ``SYSTEM USER: q ASSISTANT:[ a</s>]USER: ...``
- ``gemma`` (2B):          ``<start_of_turn>user\\nq<end_of_turn>\\n<start_of_turn>model\\n[a<end_of_turn>\\n<eos>]``
- ``llama_3`` (8B):        ``<|start_header_id|>system<|end_header_id|>\\n\\nSYSTEM<|eot_id|>``
  ``<|start_header_id|>user<|end_header_id|>\\n\\nq<|eot_id|><|start_header_id|>system<|end_header_id|>\\n\\n[a<|eot_id|>]``
  (the assistant header really is ``system``: that is how the release trained it; ``<|begin_of_text|>`` is
  left to the tokenizer, as in the release's later conversation.py whose masks count the tokenizer's BOS).
- ``mistral_instruct`` (8x7B): ``[INST] q [/INST][ a </s>]<s>[INST] q2 [/INST][ a2 </s>]``
- ``chatml_direct`` (34B): ``<|im_start|>system\\nSYSTEM<|im_end|><|im_start|>user\\nq<|im_end|>``
  ``<|im_start|>assistant\\n[a<|im_end|>]``
  (no newline between turns, as released).
- ``plain`` (stage 1):     ``<image>[caption\\n]`` -- the user turn contributes only its ``<image>`` placeholders.

Where a leading space belongs to the answer (vicuna_v1, mistral_instruct) it is supervised, because SentencePiece
tokenizers fold it into the answer's first token (``▁a``), which is what the release's label masks supervise.
Label masks should be built on the full string's tokens (e.g. with offset mappings), not by tokenizing pieces.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "IMAGE_PLACEHOLDER",
    "SHORT_ANSWER",
    "TEMPLATE_NAMES",
    "ChatTemplate",
    "content_to_text",
    "get_template",
    "jinja_template",
    "normalize_image_placeholders",
    "render",
    "render_segments",
    "stop_strings",
    "validate_messages",
    "wrap_jinja_template",
]

#: LLaVA-1.5's instruction for short answers: in its training mix and in the benchmarks' prompts (TextVQA, GQA, ...).
SHORT_ANSWER = "Answer the question using a single word or phrase."

IMAGE_PLACEHOLDER = "<image>"

_LLAVA_SYSTEM = (
    "You are a helpful language and vision assistant. You are able to understand the visual content that the "
    "user provides, and assist the user with a variety of tasks using natural language."
)


@dataclasses.dataclass(frozen=True)
class ChatTemplate:
    """One release template.  A turn renders as ``user_prefix + text + user_suffix`` or
    ``assistant_prefix`` + [``assistant_lead + text + assistant_suffix``] (bracket = supervised)."""

    name: str
    default_system: str
    system_prefix: str | None  # a system block ``system_prefix + system + system_suffix``; None: no block
    system_suffix: str
    system_in_first_user: str | None  # else: fold the system into the first user text with this format
    user_prefix: str
    user_suffix: str
    assistant_prefix: str  # the generation prompt; not supervised
    assistant_lead: str  # supervised text before the answer (a space the tokenizer merges into it)
    assistant_suffix: str  # end-of-turn the model must learn to emit; supervised
    stop: tuple[str, ...]
    later_user_prefix: str | None = None  # user prefix for every user turn after the first
    user_images_only: bool = False  # ``plain``: the user turn is just its image placeholders


_TEMPLATES: dict[str, ChatTemplate] = {
    t.name: t
    for t in (
        ChatTemplate(
            name="vicuna_v1",
            default_system=(
                "A chat between a curious user and an artificial intelligence assistant. "
                "The assistant gives helpful, detailed, and polite answers to the user's questions."
            ),
            system_prefix="",
            system_suffix=" ",
            system_in_first_user=None,
            user_prefix="USER: ",
            user_suffix=" ",
            assistant_prefix="ASSISTANT:",
            assistant_lead=" ",
            assistant_suffix="</s>",
            stop=("</s>",),
        ),
        ChatTemplate(
            name="gemma",
            default_system="",
            system_prefix=None,
            system_suffix="",
            system_in_first_user="{system}\n\n",  # Gemma has no system role; its own template does this
            user_prefix="<start_of_turn>user\n",
            user_suffix="<end_of_turn>\n",
            assistant_prefix="<start_of_turn>model\n",
            assistant_lead="",
            assistant_suffix="<end_of_turn>\n<eos>",
            stop=("<end_of_turn>", "<eos>"),
        ),
        ChatTemplate(
            name="llama_3",
            default_system=_LLAVA_SYSTEM,
            system_prefix="<|start_header_id|>system<|end_header_id|>\n\n",
            system_suffix="<|eot_id|>",
            system_in_first_user=None,
            user_prefix="<|start_header_id|>user<|end_header_id|>\n\n",
            user_suffix="<|eot_id|>",
            assistant_prefix="<|start_header_id|>system<|end_header_id|>\n\n",  # sic: trained this way
            assistant_lead="",
            assistant_suffix="<|eot_id|>",
            stop=("<|eot_id|>",),
        ),
        ChatTemplate(
            name="mistral_instruct",
            default_system="",
            system_prefix=None,
            system_suffix="",
            system_in_first_user="<<SYS>>\n{system}\n<</SYS>>\n\n",
            user_prefix="[INST] ",
            later_user_prefix="<s>[INST] ",
            user_suffix=" [/INST]",
            assistant_prefix="",
            assistant_lead=" ",
            assistant_suffix=" </s>",
            stop=("</s>",),
        ),
        ChatTemplate(
            name="chatml_direct",
            default_system="Answer the questions.",
            system_prefix="<|im_start|>system\n",
            system_suffix="<|im_end|>",
            system_in_first_user=None,
            user_prefix="<|im_start|>user\n",
            user_suffix="<|im_end|>",
            assistant_prefix="<|im_start|>assistant\n",
            assistant_lead="",
            assistant_suffix="<|im_end|>",
            stop=("<|im_end|>",),
        ),
        ChatTemplate(
            name="plain",
            default_system="",
            system_prefix=None,
            system_suffix="",
            system_in_first_user=None,  # stage-1 data has no system prompt; one given is ignored
            user_prefix="",
            user_suffix="",
            assistant_prefix="",
            assistant_lead="",
            assistant_suffix="\n",
            stop=("\n",),
            user_images_only=True,
        ),
    )
}

TEMPLATE_NAMES: tuple[str, ...] = tuple(_TEMPLATES)


def get_template(template: str | ChatTemplate) -> ChatTemplate:
    """Look a template up by name; unknown names raise ValueError listing the known ones."""
    if isinstance(template, ChatTemplate):
        return template
    try:
        return _TEMPLATES[template]
    except (KeyError, TypeError):
        raise ValueError(f"unknown chat template {template!r}; known templates: {', '.join(TEMPLATE_NAMES)}") from None


def content_to_text(content: Any) -> str:
    """Message content as text; accepts a string or HF-style parts ([{"type": "image"}, {"type": "text", ...}])."""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        pieces = []
        for part in content:
            kind = part.get("type") if isinstance(part, Mapping) else None
            if kind == "text":
                pieces.append(part.get("text", ""))
            elif kind == "image":
                pieces.append(IMAGE_PLACEHOLDER)
            else:
                raise ValueError(f"unsupported message content part {part!r}; use 'text' or 'image' parts")
        return "".join(pieces)
    raise ValueError(f"message content must be a string or a list of parts, got {type(content).__name__}")


def normalize_image_placeholders(text: str) -> str:
    """Move every ``<image>`` of a message to its start, each followed by ``\\n`` (as the release trains).

    ``"What is <image> this?"`` -> ``"<image>\\nWhat is  this?"``; text without placeholders is unchanged;
    the result is stripped, so ``"<image>"`` alone stays ``"<image>"``.
    """
    count = text.count(IMAGE_PLACEHOLDER)
    if count == 0:
        return text
    rest = text.replace(IMAGE_PLACEHOLDER, "").strip()
    return ((IMAGE_PLACEHOLDER + "\n") * count + rest).strip()


def _prepare(messages: Sequence[Mapping[str, Any]]) -> tuple[str | None, list[tuple[str, str]]]:
    """Validate roles, split off a leading system message, normalise image placeholders."""
    system = None
    turns: list[tuple[str, str]] = []
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, Mapping) else None
        if role not in ("system", "user", "assistant"):
            raise ValueError(f"message {index} has role {role!r}; expected 'system', 'user' or 'assistant'")
        text = content_to_text(message.get("content", ""))
        if role == "system":
            if index != 0:
                raise ValueError(f"a system message must come first (found one at position {index})")
            system = text
            continue
        turns.append((role, normalize_image_placeholders(text)))
    return system, turns


def validate_messages(messages: Sequence[Mapping[str, Any]]) -> None:
    """Raise the ValueError ``render`` would raise for these messages (roles, system first, content parts)."""
    _prepare(messages)


def render_segments(
    template: str | ChatTemplate,
    messages: Sequence[Mapping[str, Any]],
    add_generation_prompt: bool = True,
) -> list[tuple[str, bool]]:
    """Render ``messages`` as consecutive ``(text, supervised)`` pieces (adjacent pieces of one kind merged).

    ``supervised`` is True for assistant text plus the end-of-turn separator the model must emit.  A first
    ``system`` message replaces the template's default system prompt.  With ``add_generation_prompt`` the
    assistant header is appended when the last message is not from the assistant.
    """
    tpl = get_template(template)
    system, turns = _prepare(messages)
    system = tpl.default_system if system is None else system

    pieces: list[tuple[str, bool]] = []
    if tpl.system_prefix is not None:
        pieces.append((tpl.system_prefix + system + tpl.system_suffix, False))
    pending_system = bool(system) and tpl.system_in_first_user is not None
    seen_user = False
    for role, text in turns:
        if role == "user":
            if tpl.user_images_only:
                text = IMAGE_PLACEHOLDER * text.count(IMAGE_PLACEHOLDER)
            if pending_system:
                text = tpl.system_in_first_user.format(system=system) + text
                pending_system = False
            prefix = tpl.later_user_prefix if (seen_user and tpl.later_user_prefix is not None) else tpl.user_prefix
            pieces.append((prefix + text + tpl.user_suffix, False))
            seen_user = True
        else:
            pieces.append((tpl.assistant_prefix, False))
            pieces.append((tpl.assistant_lead + text + tpl.assistant_suffix, True))
    if add_generation_prompt and (not turns or turns[-1][0] != "assistant"):
        pieces.append((tpl.assistant_prefix, False))

    merged: list[tuple[str, bool]] = []
    for text, supervised in pieces:
        if not text:
            continue
        if merged and merged[-1][1] == supervised:
            merged[-1] = (merged[-1][0] + text, supervised)
        else:
            merged.append((text, supervised))
    return merged


def render(
    template: str | ChatTemplate,
    messages: Sequence[Mapping[str, Any]],
    add_generation_prompt: bool = True,
) -> str:
    """The prompt string: the concatenation of ``render_segments``."""
    return "".join(text for text, _ in render_segments(template, messages, add_generation_prompt))


def stop_strings(template: str | ChatTemplate) -> list[str]:
    """Strings that end an assistant turn, for ``generate(stop_strings=...)``."""
    return list(get_template(template).stop)


# ----------------------------------------------------------------------------------------------------------
# The same templates as jinja, for transformers' ``apply_chat_template`` and the engines that read
# ``chat_template.jinja`` (vLLM, TGI, ...).  Built from the dataclasses above, so there is one source of truth;
# tests check that they render exactly what ``render`` renders.
# ----------------------------------------------------------------------------------------------------------


def _literal(text: str) -> str:
    """A jinja string literal for ``text`` (JSON escaping is valid jinja string syntax)."""
    return json.dumps(text, ensure_ascii=False)


# Message content -> text with every <image> moved first, each followed by "\n" (content_to_text and
# normalize_image_placeholders), in jinja.
_JINJA_PRELUDE = (
    (
        "{%- macro mgm_text(content) -%}"
        "{%- if content is string -%}{{ content }}"
        "{%- elif content is iterable and content is not mapping -%}"
        "{%- for part in content -%}"
        "{%- if part is mapping and part['type'] == 'text' -%}{{ part['text'] if part['text'] is defined else '' }}"
        "{%- elif part is mapping and part['type'] == 'image' -%}@IMAGE@"
        "{%- else -%}{{ raise_exception(\"unsupported message content part; use 'text' or 'image' parts\") }}"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- elif content is none or content is undefined -%}"
        "{%- else -%}{{ raise_exception('message content must be a string or a list of parts') }}"
        "{%- endif -%}"
        "{%- endmacro -%}"
        "{%- macro mgm_normalize(text) -%}"
        "{%- set count = text.count(@IMAGE_LITERAL@) -%}"
        "{%- if count == 0 -%}{{ text }}"
        "{%- else -%}{{ ((@IMAGE_LINE_LITERAL@ * count) ~ text.replace(@IMAGE_LITERAL@, '').strip()).strip() }}"
        "{%- endif -%}"
        "{%- endmacro -%}"
    )
    .replace("@IMAGE_LITERAL@", _literal(IMAGE_PLACEHOLDER))
    .replace("@IMAGE_LINE_LITERAL@", _literal(IMAGE_PLACEHOLDER + "\n"))
    .replace("@IMAGE@", IMAGE_PLACEHOLDER)
)

# The role checks of ``_prepare`` (release templates only: a tokenizer's own template may know more roles).
_JINJA_ROLE_CHECK = (
    "{%- for message in messages -%}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] -%}"
    "{{ raise_exception('message ' ~ loop.index0 ~ ' has role ' ~ message['role'] ~ "
    "\"; expected 'system', 'user' or 'assistant'\") }}"
    "{%- elif message['role'] == 'system' and not loop.first -%}"
    "{{ raise_exception('a system message must come first (found one at position ' ~ loop.index0 ~ ')') }}"
    "{%- endif -%}"
    "{%- endfor -%}"
)


def jinja_template(template: str | ChatTemplate) -> str:
    """The release template as a jinja chat template: ``messages`` (string or ``text``/``image`` parts) and
    ``add_generation_prompt``, rendered exactly as ``render`` renders them."""
    tpl = get_template(template)
    lit = _literal
    before, _, after = (tpl.system_in_first_user or "{system}").partition("{system}")
    later = tpl.later_user_prefix if tpl.later_user_prefix is not None else tpl.user_prefix
    parts = [
        f"{{#- Mini-Gemini release chat template {tpl.name!r} (minigemini.templates) -#}}",
        _JINJA_PRELUDE,
        _JINJA_ROLE_CHECK,
        f"{{%- set ns = namespace(system={lit(tpl.default_system)}, seen_user=false, last='') -%}}",
        (
            "{%- if messages and messages[0]['role'] == 'system' -%}"
            "{%- set ns.system = mgm_text(messages[0]['content']) -%}{%- endif -%}"
        ),
    ]
    if tpl.system_prefix is not None:
        parts.append(f"{{{{ {lit(tpl.system_prefix)} ~ ns.system ~ {lit(tpl.system_suffix)} }}}}")
    pending = "ns.system != ''" if tpl.system_in_first_user is not None else "false"
    parts.append(f"{{%- set ns.pending = {pending} -%}}")
    user_text = f"{lit(IMAGE_PLACEHOLDER)} * text.count({lit(IMAGE_PLACEHOLDER)})" if tpl.user_images_only else "text"
    parts += [
        "{%- for message in messages if message['role'] != 'system' -%}",
        "{%- set text = mgm_normalize(mgm_text(message['content'])) -%}",
        "{%- if message['role'] == 'user' -%}",
        f"{{%- set text = {user_text} -%}}",
        (
            f"{{%- if ns.pending -%}}{{%- set text = {lit(before)} ~ ns.system ~ {lit(after)} ~ text -%}}"
            "{%- set ns.pending = false -%}{%- endif -%}"
        ),
        f"{{{{ ({lit(later)} if ns.seen_user else {lit(tpl.user_prefix)}) ~ text ~ {lit(tpl.user_suffix)} }}}}",
        "{%- set ns.seen_user = true -%}",
        "{%- else -%}",
        f"{{{{ {lit(tpl.assistant_prefix)} ~ {lit(tpl.assistant_lead)} ~ text ~ {lit(tpl.assistant_suffix)} }}}}",
        "{%- endif -%}",
        "{%- set ns.last = message['role'] -%}",
        "{%- endfor -%}",
        (
            f"{{%- if add_generation_prompt and ns.last != 'assistant' -%}}{{{{ {lit(tpl.assistant_prefix)} }}}}"
            "{%- endif -%}"
        ),
    ]
    return "".join(parts)


_WRAP_MARK = "{#- minigemini: messages prepared for the template below (minigemini.templates) -#}"


def wrap_jinja_template(template: str) -> str:
    """A tokenizer's own jinja template behind the same preparation: content parts become text and each
    ``<image>`` moves to the start of its message (as the release trains), before ``template`` renders.  A template
    wrapped already is returned as it is."""
    if template.startswith(_WRAP_MARK):
        return template
    prepare = (
        "{%- set mgm = namespace(messages=[]) -%}"
        "{%- for message in messages -%}"
        "{%- set mgm.messages = mgm.messages + [dict(message, content=mgm_normalize(mgm_text(message['content'])))] -%}"
        "{%- endfor -%}"
        "{%- set messages = mgm.messages -%}"
    )
    return _WRAP_MARK + _JINJA_PRELUDE + prepare + template
