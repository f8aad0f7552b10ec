"""`mgm data gen`: build the paper's text-only generation instructions (§3.3, Figure 4, appendix B / Figure 7).

Two kinds, each asked of any OpenAI-compatible chat endpoint (OpenAI, vLLM, ``mgm serve``...):

- ``recaption`` (simple-instruction re-captioning): from a descriptive caption (e.g. LAION-GPT4V), the LLM infers a
  user's short request for such a picture and the answer with a Stable Diffusion prompt::

      human: "Paint me a cosy reading nook on a rainy day <GEN>"
      gpt:   "Here is a cosy nook for you. <h>warm reading nook, rain on the window, ...</h>"

- ``context`` (in-context prompt generation): from a real conversation (LIMA, OpenAssistant2), the LLM writes a
  prompt for a picture that suits it; the user turn gets `` <GEN>`` and the original answer the ``<h>...</h>``.

Every query carries 5 text-to-image prompts sampled from a pool of high-quality ones (``--examples``; the paper used
GigaSheet's SD prompts, a small built-in pool is the default) and, for ``recaption``, 3 instruction templates
(``--instruction-templates``) -- the paper's ``get_example_captions()`` / ``get_example_queries()``. Replies that
break the format (no ``<h>`` block, several, unclosed, empty or over-long prompt, no instruction) are dropped and
counted by reason, as the paper filtered ~16K queries down to 13K.

Resumable and frugal: each finished item (kept or dropped) is appended to ``OUTPUT.gen-cache.jsonl`` at once, so a
re-run never pays twice; endpoint errors and timeouts are retried with backoff, then left for the next run. Requests
are rate-limited (``--rpm``), tokens and cost (``--price-input/--price-output``, USD per million tokens) reported.
Exit status 1 when items remain (run again to resume).
"""

from __future__ import annotations

import dataclasses
import os
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from minigemini.data.jsonio import AppendCache, iter_raw, write_json, write_records
from minigemini.data.records import DataError
from minigemini.data.skips import Skip, SkipCounter
from minigemini.datatools.mix import images_of
from minigemini.generation import GEN_TAG, PROMPT_CLOSE, PROMPT_OPEN, prompt_blocks, request_image
from minigemini.templates import IMAGE_PLACEHOLDER

__all__ = [
    "DEFAULT_EXAMPLE_PROMPTS",
    "DEFAULT_INSTRUCTION_TEMPLATES",
    "KINDS",
    "GenConfig",
    "Item",
    "build",
    "build_messages",
    "check_reply",
    "load_items",
]

KINDS = ("recaption", "context")
N_EXAMPLE_PROMPTS = 5  # paper, appendix B: 5 sampled high-quality SD prompts per query
N_INSTRUCTION_TEMPLATES = 3  # ... and 3 simple instruction templates

#: A small pool of text-to-image prompts in the style the paper samples from (written for this project).
DEFAULT_EXAMPLE_PROMPTS = (
    "a lighthouse on a basalt cliff at dusk, crashing waves, volumetric light, cinematic, ultra detailed, 8k",
    "portrait of an elderly fisherman, weathered skin, knitted cap, soft window light, 85mm, shallow depth of field",
    "isometric cutaway of a cozy bakery, warm lighting, pastel colors, tiny people, highly detailed, octane render",
    "a red fox curled up in fresh snow, morning mist, golden hour, wildlife photography, sharp focus",
    "futuristic tram gliding through a neon-lit rainy street, reflections on wet asphalt, cyberpunk, concept art",
    "watercolor illustration of a hillside village in spring, cherry blossoms, gentle brush strokes, paper texture",
    "macro photo of a dewdrop on a green leaf reflecting a sunrise, bokeh background, vivid colors",
    "an ancient library with towering bookshelves, floating candles, dust in sunbeams, fantasy art, intricate",
    "minimalist product shot of a ceramic coffee cup on a wooden table, morning light, clean background, studio",
    "astronaut sitting on a crescent moon fishing among the stars, whimsical, digital painting, soft glow",
    "aerial view of turquoise river delta, braided channels, patterns, drone photography, high resolution",
    "steampunk owl made of brass gears and copper feathers, detailed mechanical parts, dramatic lighting",
    "a bowl of ramen with a soft-boiled egg and scallions, steam rising, food photography, top view, appetizing",
    "snow-covered pine forest under the northern lights, long exposure, starry sky, serene, national geographic",
    "oil painting of a sailing ship in a stormy sea, dramatic clouds, rembrandt lighting, museum quality",
    "cute clay figurine of a turtle wearing a tiny backpack, pastel background, 3d render, soft shadows",
    "busy morning market in marrakech, colorful spices, sunlight through canopies, street photography, 35mm",
    "art deco poster of a mountain resort, bold geometric shapes, limited color palette, vintage travel poster",
    "a glass greenhouse full of exotic plants at night, fairy lights, mysterious atmosphere, photorealistic",
    "close-up of a hummingbird feeding from a red flower, frozen wings, high shutter speed, vibrant",
    "ink sketch of a cat sleeping on a stack of books, loose lines, cross hatching, black and white",
    "desert canyon at sunset, layered sandstone, long shadows, warm orange tones, landscape photography",
)

#: Simple user instructions asking for a picture (the paper's get_example_queries pool; written for this project).
DEFAULT_INSTRUCTION_TEMPLATES = (
    "Draw a picture of a dog playing in the park.",
    "Can you show me what a medieval castle looks like?",
    "Generate an image of a sunset over the ocean.",
    "I'd love to see a cozy cabin in the woods.",
    "Paint me a bowl of fruit.",
    "Show me a city street at night.",
    "Create an illustration of a dragon.",
    "Please make a picture of a birthday cake.",
    "What would a robot chef look like? Draw it.",
    "Give me an image of mountains in winter.",
    "Sketch a cat wearing a hat.",
    "Make a poster of a jazz concert.",
)

SYSTEM_PROMPT = (
    "You write training data for an assistant that turns what a user wants into a prompt for a text-to-image "
    "model (Stable Diffusion XL). Follow the requested output format exactly."
)


@dataclasses.dataclass
class Item:
    """One query to make: ``key`` is stable across runs (resume), ``origin`` names the input record."""

    key: str
    kind: str
    origin: str
    caption: str = ""
    question: str = ""
    answer: str = ""


def _first_pair(obj: dict[str, Any]) -> tuple[str, str] | None:
    question = answer = None
    for turn in obj.get("conversations") or []:
        if not isinstance(turn, dict):
            return None
        role, value = turn.get("from", turn.get("role")), turn.get("value", turn.get("content"))
        if not isinstance(value, str):
            return None
        if question is None and role in ("human", "user"):
            question = value
        elif question is not None and role in ("gpt", "assistant"):
            answer = value
            break
    if not question or not answer or not question.strip() or not answer.strip():
        return None
    return question.strip(), answer.strip()


def load_items(kind: str, files: list[str], problems: SkipCounter, max_chars: int = 6000) -> list[Item]:
    """Work items from the input files: captions (``recaption``) or text-only conversations (``context``).

    ``recaption`` takes a ``.txt`` file (one caption per line), objects with a ``caption`` field, or LLaVA records
    (the first answer is the caption). ``context`` takes text-only LLaVA records (the first question and answer).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose one of {KINDS}")
    items: list[Item] = []
    seen: set[str] = set()
    for path in files:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"input not found: {path}")
        name = Path(path).stem
        if path.endswith(".txt"):
            if kind != "recaption":
                raise ValueError(f"{path}: a .txt input (one caption per line) is for 'recaption' only")
            with open(path, encoding="utf-8") as handle:
                rows = [(f"{name}:{i}", {"caption": line.strip()}, None) for i, line in enumerate(handle, 1)]
            rows = [r for r in rows if r[1]["caption"]]
        else:
            try:
                rows = list(iter_raw(path))
            except DataError as err:
                raise DataError(f"cannot read {path}: {err}") from None
        for where, obj, error in rows:
            if error is not None:
                problems.add(Skip("bad_json", where, error))
                continue
            if not isinstance(obj, dict):
                problems.add(Skip("bad_record", where, "not an object"))
                continue
            origin = str(obj.get("id", where))
            key = f"{kind}:{origin}"
            if key in seen:
                key = f"{kind}:{where}"  # repeated ids across files stay distinct items
            if kind == "recaption":
                caption = obj.get("caption")
                if caption is None:
                    pair = _first_pair(obj)
                    caption = pair[1] if pair else None
                if not isinstance(caption, str) or not caption.strip():
                    problems.add(Skip("no_caption", where))
                    continue
                item = Item(key=key, kind=kind, origin=origin, caption=caption.strip())
            else:
                if images_of(obj):
                    problems.add(Skip("has_image", where))  # the paper's context data is text-only
                    continue
                pair = _first_pair(obj)
                if pair is None:
                    problems.add(Skip("no_conversation", where))
                    continue
                item = Item(key=key, kind=kind, origin=origin, question=pair[0], answer=pair[1])
            if len(item.caption) + len(item.question) + len(item.answer) > max_chars:
                problems.add(Skip("too_long", where, f"over {max_chars} characters"))
                continue
            seen.add(key)
            items.append(item)
    return items


def build_messages(
    item: Item, example_prompts: list[str], instruction_templates: list[str], seed: int
) -> list[dict[str, str]]:
    """The chat messages of one query; its in-context examples are a seeded sample, stable for the item."""
    rng = random.Random(f"{seed}:{item.key}")
    examples = rng.sample(example_prompts, min(N_EXAMPLE_PROMPTS, len(example_prompts)))
    shown = "\n".join(f"{i}. {p}" for i, p in enumerate(examples, 1))
    if item.kind == "recaption":
        templates = rng.sample(instruction_templates, min(N_INSTRUCTION_TEMPLATES, len(instruction_templates)))
        user = (
            f'Here is a detailed description of an image:\n"""\n{item.caption}\n"""\n\n'
            "Imagine a user who wants such a picture and asks for it with a short, casual instruction, like these:\n"
            + "\n".join(f"- {t}" for t in templates)
            + f"\n\nHigh-quality Stable Diffusion prompts look like these:\n{shown}\n\n"
            "Write (1) the user's short instruction (do not copy the description) and (2) the assistant's reply: one "
            f"short sentence, then a Stable Diffusion prompt for the picture in the style of the examples, wrapped in "
            f"{PROMPT_OPEN} and {PROMPT_CLOSE}. Answer in exactly this format and nothing else:\n"
            f"Instruction: <the user's instruction>\nAnswer: <one sentence> {PROMPT_OPEN}<the prompt>{PROMPT_CLOSE}"
        )
    else:
        user = (
            f"Here is a conversation between a user and an assistant:\nUser: {item.question}\n"
            f"Assistant: {item.answer}\n\n"
            "The user now wants a picture that goes with this conversation. "
            f"High-quality Stable Diffusion prompts look like these:\n{shown}\n\n"
            "Write one Stable Diffusion prompt, in the style of the examples, for an image that suits the "
            f"conversation. Answer with the prompt wrapped in {PROMPT_OPEN} and {PROMPT_CLOSE} and nothing else."
        )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


_INSTRUCTION = re.compile(
    r"^\s*(?:\d\.\s*)?Instruction\s*:\s*(.+?)\s*\n\s*(?:\d\.\s*)?Answer\s*:\s*(.+)$", re.DOTALL | re.IGNORECASE
)


def _one_prompt(text: str, max_words: int, rejected: Callable[[str], Skip]) -> str:
    """The prompt of ``text``'s one closed, non-empty, short enough ``<h>`` block; else raises ``rejected(why)``."""
    blocks = prompt_blocks(text)  # generation.py's reading of <h> blocks, so data and inference agree
    if not blocks:
        raise rejected("no_prompt_block")
    if len(blocks) > 1:
        raise rejected("several_prompt_blocks")
    if text.count(PROMPT_CLOSE) != 1 or text.index(PROMPT_CLOSE) < text.index(PROMPT_OPEN):
        raise rejected("unclosed_prompt_block")
    if not blocks[0]:
        raise rejected("empty_prompt")
    if len(blocks[0].split()) > max_words:
        raise rejected("prompt_too_long")
    return blocks[0]


def check_reply(item: Item, reply: str | None, max_prompt_words: int = 80) -> dict[str, Any]:
    """The LLaVA record of a reply in the required format; raises the Skip that drops it otherwise (its reason, the
    item's origin and the reply's start)."""

    def rejected(reason: str) -> Skip:
        return Skip(reason, item.origin, repr((reply or "")[:200]))

    if not reply or not reply.strip():
        raise rejected("empty_reply")
    text = reply.strip()
    if GEN_TAG in text or IMAGE_PLACEHOLDER in text:
        raise rejected("stray_tag")
    if item.kind == "recaption":
        match = _INSTRUCTION.match(text)
        if match is None:
            raise rejected("no_instruction")
        instruction, answer = match.group(1).strip().strip('"'), match.group(2).strip()
        if not instruction or PROMPT_OPEN in instruction or PROMPT_CLOSE in instruction:
            raise rejected("no_instruction")
        _one_prompt(answer, max_prompt_words, rejected)
        turns = [request_image(instruction), answer]
    else:
        prompt = _one_prompt(text, max_prompt_words, rejected)
        turns = [request_image(item.question), f"{item.answer}\n{PROMPT_OPEN}{prompt}{PROMPT_CLOSE}"]
    return {
        "id": item.key.replace(":", "-"),
        "conversations": [{"from": "human", "value": turns[0]}, {"from": "gpt", "value": turns[1]}],
        "source": f"gen_{item.kind}",
        "origin": item.origin,
    }


class RateLimiter:
    """At most ``per_minute`` request starts per minute, evenly spaced, shared by the worker threads."""

    def __init__(self, per_minute: float | None):
        self.interval = 60.0 / per_minute if per_minute else 0.0
        self.next_start = 0.0
        self.lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next_start)
            self.next_start = start + self.interval
        if start > now:
            time.sleep(start - now)


@dataclasses.dataclass
class GenConfig:
    kind: str
    inputs: list[str]
    output: str
    base_url: str
    model: str
    api_key: str | None = None
    count: int | None = None
    seed: int = 0
    example_prompts: list[str] = dataclasses.field(default_factory=lambda: list(DEFAULT_EXAMPLE_PROMPTS))
    instruction_templates: list[str] = dataclasses.field(default_factory=lambda: list(DEFAULT_INSTRUCTION_TEMPLATES))
    temperature: float = 0.7
    max_reply_tokens: int = 512
    max_prompt_words: int = 80
    rpm: float | None = 60.0
    workers: int = 4
    timeout: float = 60.0
    retries: int = 3
    backoff: float = 2.0
    max_consecutive_errors: int = 20
    price_input: float | None = None  # USD per million prompt tokens
    price_output: float | None = None
    retry_rejected: bool = False
    cache: str | None = None
    progress: bool = True


class _Fatal(Exception):
    """An endpoint answer that no retry can fix (bad key, unknown model): the run stops."""


def _ask(client, config: GenConfig, messages, limiter: RateLimiter, stop: threading.Event) -> tuple[Any, list[str]]:
    """(response, errors of failed attempts); response is None when every attempt failed or the run is stopping."""
    import openai

    errors: list[str] = []
    for attempt in range(config.retries + 1):
        if stop.is_set():
            return None, errors
        limiter.wait()
        try:
            response = client.chat.completions.create(
                model=config.model,
                messages=messages,
                temperature=config.temperature,
                max_tokens=config.max_reply_tokens,
            )
            return response, errors
        except openai.APITimeoutError:
            errors.append("timeout")
        except openai.APIStatusError as err:
            if err.status_code in (401, 403, 404):
                raise _Fatal(f"HTTP {err.status_code} from {config.base_url}: {err.message}") from None
            errors.append(f"http_{err.status_code}")
        except openai.APIConnectionError as err:
            errors.append(f"connection_error: {err}")
        if attempt < config.retries:
            time.sleep(min(config.backoff * 2**attempt, 60.0))
    return None, errors


class _Endpoint:
    """The endpoint as the worker threads ask it: rate-limited, retried, and stopped for all of them at once by a
    fatal answer or ``max_consecutive_errors`` failed items in a row."""

    def __init__(self, config: GenConfig):
        import openai

        self.config = config
        self.client = openai.OpenAI(
            base_url=config.base_url, api_key=config.api_key or "none", timeout=config.timeout, max_retries=0
        )
        self.limiter = RateLimiter(config.rpm)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.consecutive_failures = 0
        self.fatal: str | None = None

    def ask(self, item: Item) -> tuple[Item, Any, list[str], bool]:
        """(item, response or None, errors of failed attempts, whether the item failed for good this run)."""
        config = self.config
        messages = build_messages(item, config.example_prompts, config.instruction_templates, config.seed)
        try:
            response, errors = _ask(self.client, config, messages, self.limiter, self.stop)
        except _Fatal as err:
            self.stop.set()  # set here, not when the main thread gets to it: no further request is made
            with self.lock:
                self.fatal = self.fatal or str(err)
            return item, None, [], False
        with self.lock:
            if response is not None:
                self.consecutive_failures = 0
            elif not self.stop.is_set():
                self.consecutive_failures += 1
                if self.consecutive_failures >= config.max_consecutive_errors:
                    self.stop.set()  # the endpoint looks down: keep what is done, resume later
                return item, None, errors, True
        return item, response, errors, False


@dataclasses.dataclass
class _Progress:
    """What this run got: endpoint errors, replies dropped by the format filter, tokens used."""

    endpoint: SkipCounter = dataclasses.field(default_factory=lambda: SkipCounter(log_first=0))
    rejected: SkipCounter = dataclasses.field(default_factory=lambda: SkipCounter(log_first=0))
    usage: Counter = dataclasses.field(default_factory=Counter)

    def take(self, answer: tuple[Item, Any, list[str], bool], cache: AppendCache, max_prompt_words: int) -> bool:
        """Count one finished item and cache its outcome; False when it has no answer to cache."""
        item, response, errors, failed = answer
        if failed:  # every attempt failed: the item is left for the next run
            self.endpoint.add(Skip("failed_items", item.origin, errors[-1] if errors else "no answer"))
        for error in errors:
            self.endpoint.add(Skip(error.split(":")[0], item.origin, error))
        if response is None:
            return False
        reply = response.choices[0].message.content if response.choices else None
        usage = {
            "prompt_tokens": getattr(response.usage, "prompt_tokens", 0) or 0,
            "completion_tokens": getattr(response.usage, "completion_tokens", 0) or 0,
        }
        self.usage.update(usage)
        try:
            record = check_reply(item, reply, max_prompt_words)
        except Skip as skip:
            self.rejected.add(skip)
            cache.add({"key": item.key, "status": "rejected", "reason": skip.reason, "reply": reply, "usage": usage})
        else:
            cache.add({"key": item.key, "status": "ok", "record": record, "usage": usage})
        return True


def _load(config: GenConfig) -> tuple[list[Item], SkipCounter]:
    """The run's items (a seeded pick of ``count``) and the problems of its inputs."""
    if config.kind not in KINDS:
        raise ValueError(f"unknown kind {config.kind!r}; choose one of {KINDS}")
    if len(config.example_prompts) < N_EXAMPLE_PROMPTS:
        raise ValueError(f"need at least {N_EXAMPLE_PROMPTS} example text-to-image prompts")
    if config.kind == "recaption" and len(config.instruction_templates) < N_INSTRUCTION_TEMPLATES:
        raise ValueError(f"need at least {N_INSTRUCTION_TEMPLATES} instruction templates")
    problems = SkipCounter(log_first=0)
    items = load_items(config.kind, config.inputs, problems)
    random.Random(config.seed).shuffle(items)  # a seeded pick: the same items on every re-run
    if config.count is not None:
        items = items[: config.count]
    if not items:
        found = "\n".join(problems.lines()) or "the inputs are empty"
        raise DataError(f"no usable input items ({found})")
    return items, problems


def _ask_all(config: GenConfig, endpoint: _Endpoint, pending: list[Item], cache: AppendCache) -> tuple[_Progress, bool]:
    """Ask for every pending item from ``config.workers`` threads; (what came back, whether Ctrl-C stopped it)."""
    from tqdm.auto import tqdm

    progress = _Progress()
    bar = tqdm(total=len(pending), desc=f"gen {config.kind}", unit="item", disable=not config.progress)
    interrupted = False
    pool = ThreadPoolExecutor(max_workers=max(1, config.workers))
    try:
        futures = [pool.submit(endpoint.ask, item) for item in pending]
        for future in as_completed(futures):
            if progress.take(future.result(), cache, config.max_prompt_words):
                bar.update(1)
    except KeyboardInterrupt:
        interrupted = True  # stop asking, write what is done, then let the interrupt through
        endpoint.stop.set()
    finally:
        pool.shutdown(wait=not interrupted, cancel_futures=True)
    bar.close()
    return progress, interrupted


def build(config: GenConfig) -> dict[str, Any]:
    """Query the endpoint for every pending item, keep the well-formed replies, write the output; the report."""
    items, input_problems = _load(config)
    cache_path = config.cache or f"{config.output}.gen-cache.jsonl"
    endpoint = _Endpoint(config)
    started = time.monotonic()
    with AppendCache(cache_path) as cache:
        pending = [
            i
            for i in items
            if i.key not in cache or (config.retry_rejected and cache.get(i.key).get("status") == "rejected")
        ]
        progress, interrupted = _ask_all(config, endpoint, pending, cache)
        entries = [cache.get(i.key) for i in items]

    records = [e["record"] for e in entries if e is not None and e.get("status") == "ok"]
    usage_total = Counter()
    for entry in entries:
        if entry is not None:
            usage_total.update(entry.get("usage") or {})
    write_records(config.output, records)
    report = {
        "kind": config.kind,
        "inputs": [os.path.abspath(p) for p in config.inputs],
        "output": os.path.abspath(config.output),
        "cache": os.path.abspath(cache_path),
        "endpoint": config.base_url,
        "model": config.model,
        "items": len(items),
        "done_before": len(items) - len(pending),
        "kept": len(records),
        "rejected": sum(1 for e in entries if e is not None and e.get("status") == "rejected"),
        "rejected_this_run": progress.rejected.report(),
        "remaining": sum(e is None for e in entries),
        "endpoint_errors": progress.endpoint.report(),
        "input_problems": input_problems.report(),
        "fatal": endpoint.fatal,
        "tokens_this_run": dict(progress.usage),
        "tokens_total": dict(usage_total),
        "seconds": round(time.monotonic() - started, 2),
    }
    if config.price_input is not None or config.price_output is not None:
        report["cost_usd_this_run"] = _cost(config, progress.usage)
        report["cost_usd_total"] = _cost(config, usage_total)
    write_json(f"{config.output}.report.json", report)
    if interrupted:
        raise KeyboardInterrupt
    return report


def _cost(config: GenConfig, usage: Counter) -> float:
    return round(
        usage.get("prompt_tokens", 0) * (config.price_input or 0) / 1e6
        + usage.get("completion_tokens", 0) * (config.price_output or 0) / 1e6,
        4,
    )


def read_lines_or_json(path: str) -> list[str]:
    """A pool file: one entry per line (.txt), or a JSON list of strings."""
    import json

    text = Path(path).read_text(encoding="utf-8")
    if path.endswith(".json"):
        data = json.loads(text)
        if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
            raise ValueError(f"{path}: expected a JSON list of strings")
        return [x.strip() for x in data if x.strip()]
    return [line.strip() for line in text.splitlines() if line.strip()]
