"""The engines that answer a benchmark's questions, one module each, and their registry.

- ``transformers``: the model in this process, batched greedy ``generate()`` (``answering.generate_answers``).
- ``vllm``: vLLM's engine in this process through the plugin (``minigemini.vllm_plugin``): one engine for the run,
  continuous batching, data parallel with ``--data-parallel``; the vLLM environment (``minigemini[vllm]``).
- ``endpoint``: any OpenAI-compatible server (``mgm serve``, ``vllm serve`` with the plugin, a hosted API), images
  as data URLs, requests in parallel, retried and timed out; a question it fails is an error, not a wrong answer.

Every engine takes the same ``(images, prompt)`` questions (the images loaded, the prompt without ``<image>``) and
answers them greedily; the two local engines render them with the same chat template call
(``answering.render_prompt``).  A new engine is one module with an ``Engine`` subclass plus its line in
``ENGINES``.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Sequence
from typing import Any, ClassVar

from minigemini.evaluation.samples import AnswerError, EvalError

__all__ = ["ENGINES", "Engine", "EngineOptions", "open_engine"]

#: engine name -> the module defining it (imported only when chosen: vLLM and the HTTP client are optional)
ENGINES = {
    "transformers": "minigemini.evaluation.engines.transformers",
    "vllm": "minigemini.evaluation.engines.vllm",
    "endpoint": "minigemini.evaluation.engines.endpoint",
}


@dataclasses.dataclass
class EngineOptions:
    """What the engines are opened with (each reads its own fields).

    model: the model directory (transformers, vllm).  load: ``load_model_and_processor``'s keyword arguments
    (device, dtype, chat_template).  batch_size: questions handed to the engine at once (None: the engine's
    default).  endpoint / endpoint_model / api_key_env / concurrency / timeout / retries: the endpoint's.
    data_parallel / max_model_len / vllm_args (more keyword arguments of ``vllm.LLM``): vLLM's.
    """

    model: str | None = None
    load: dict[str, Any] = dataclasses.field(default_factory=dict)
    batch_size: int | None = None
    endpoint: str | None = None
    endpoint_model: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 8
    timeout: float = 120.0
    retries: int = 2
    data_parallel: int = 1
    max_model_len: int | None = None
    vllm_args: dict[str, Any] = dataclasses.field(default_factory=dict)


class Engine:
    """Answers questions: ``answer(batch, max_new_tokens, stop)`` -> one text (or ``AnswerError``) per question.

    ``model_name``: what answered (recorded in the run's manifest); ``batch_size``: how many questions the runner
    hands over at once; ``model`` / ``processor``: the loaded ones where the engine has them in this process
    (the runner reads the processor's image size limit from it).
    """

    name: ClassVar[str]
    model: Any = None
    processor: Any = None
    model_name: str = ""
    batch_size: int = 8

    def answer(
        self, batch: Sequence[tuple[list, str]], max_new_tokens: int, stop: Sequence[str] | None = None
    ) -> list[str | AnswerError]:
        raise NotImplementedError

    def close(self) -> None:
        """Free what the engine holds (processes, connections)."""


def open_engine(name: str, options: EngineOptions) -> Engine:
    """The engine ``name`` opened with ``options``; EvalError for an unknown name."""
    if name not in ENGINES:
        raise EvalError(f"unknown engine {name!r}; known: {', '.join(ENGINES)}")
    module = importlib.import_module(ENGINES[name])
    return module.ENGINE(options)
