"""Mini-Gemini as an lmms-eval model (``python -m lmms_eval --model minigemini --model_args pretrained=DIR``).

lmms-eval (>= 0.7) finds plugin models through the entry-point group ``lmms_eval.models``; this package
declares (pyproject.toml)::

    [project.entry-points."lmms_eval.models"]
    minigemini = "minigemini.evaluation.lmms_adapter:lmms_eval_manifest"

Only lmms-eval imports this module, so lmms-eval is imported at the top; nothing else in ``minigemini``
imports it, and the package works without lmms-eval installed.  Answers come from the same engines as
``mgm eval`` (``engines/``): ``--model_args pretrained=DIR`` (transformers), ``pretrained=DIR,engine=vllm`` (vLLM in
process, in the vLLM environment) or ``endpoint=URL[,endpoint_model=NAME,concurrency=N]`` (any OpenAI-compatible
server).  lmms-eval turns on PIL's ``LOAD_TRUNCATED_IMAGES`` for its whole process (some of its datasets hold
truncated images), so inside lmms-eval a truncated image is answered as lmms-eval decodes it, where ``mgm eval``
refuses it.
"""

from __future__ import annotations

import importlib.util

try:
    from lmms_eval.api.instance import Instance
    from lmms_eval.api.model import lmms
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError("the lmms-eval adapter needs lmms-eval: pip install 'minigemini[lmms]'") from error

from minigemini.evaluation.engines import EngineOptions, open_engine
from minigemini.evaluation.samples import AnswerError
from minigemini.templates import IMAGE_PLACEHOLDER

__all__ = ["MiniGeminiLMMS", "lmms_eval_manifest"]

MODEL_ID = "minigemini"
CLASS_PATH = "minigemini.evaluation.lmms_adapter.MiniGeminiLMMS"


def lmms_eval_manifest():
    """The entry point's payload: lmms-eval's ``ModelManifest`` for ``--model minigemini`` (alias ``mgm``)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_ID, simple_class_path=CLASS_PATH, aliases=("mgm", "mini_gemini"))


def skip_filelock3_patch() -> None:
    """lmms-eval 0.7.3's ``simple_evaluate`` makes filelock's and datasets' ``FileLock`` share re-entrant locks by
    patching filelock 3's private ``filelock._api``, which filelock 4 no longer has: every run would stop there with
    ``No module named 'filelock._api'``.  Under filelock 4 the patch is marked done (skipped) instead; datasets
    takes its locks as it does without lmms-eval.  Called when the model is built, which is before that patch."""
    if importlib.util.find_spec("filelock._api") is not None:
        return
    from lmms_eval import evaluator

    patch = getattr(evaluator, "_enable_reentrant_filelocks", None)
    if patch is not None:
        patch._patched = True


def vllm_arguments(model_args: dict) -> dict:
    """``vllm_KEY=VALUE`` model_args as ``vllm.LLM`` keyword arguments (lmms-eval has parsed true/false/numbers)."""
    return {key.removeprefix("vllm_"): value for key, value in model_args.items() if key.startswith("vllm_")}


class MiniGeminiLMMS(lmms):
    """lmms-eval "simple" model: ``generate_until`` over (context, gen_kwargs, doc_to_visual, doc_id, task, split).

    model_args: ``pretrained`` (directory), ``engine`` (transformers, vllm; endpoint when ``endpoint`` is given),
    ``endpoint`` (URL), ``endpoint_model``, ``concurrency`` (8), ``device`` (auto), ``dtype`` (auto),
    ``batch_size`` (1 on transformers), ``max_new_tokens`` (default when a task sets none: 128), ``chat_template``
    (override), and with ``engine=vllm`` ``vllm_KEY=VALUE`` (any other ``vllm.LLM`` argument, as ``mgm eval
    --vllm-arg``: ``vllm_enforce_eager=true``; other engines list them in ``ignored_arguments``).
    Decoding is greedy whatever ``temperature`` a task asks for, as the paper's evaluation decodes.  A question
    the endpoint fails answers "" (lmms-eval takes text only).
    """

    is_simple = True

    def __init__(
        self,
        pretrained: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int | str | None = None,
        max_new_tokens: int | str = 128,
        chat_template: str | None = None,
        engine: str | None = None,
        endpoint: str | None = None,
        endpoint_model: str | None = None,
        concurrency: int | str = 8,
        **kwargs,
    ) -> None:
        super().__init__()
        skip_filelock3_patch()
        engine = engine or ("endpoint" if endpoint else "transformers")
        vllm_args = vllm_arguments(kwargs) if engine == "vllm" else {}
        if batch_size is None:  # one at a time on transformers (no padding); the others' own default
            batch_size = 1 if engine == "transformers" else None
        options = EngineOptions(
            model=pretrained,
            load={"device": device, "dtype": dtype, "chat_template": chat_template},
            batch_size=None if batch_size is None else max(1, int(batch_size)),
            endpoint=endpoint,
            endpoint_model=endpoint_model,
            concurrency=int(concurrency),
            max_model_len=vllm_args.get("max_model_len"),
            vllm_args={key: value for key, value in vllm_args.items() if key != "max_model_len"},
        )
        self.engine = open_engine(engine, options)
        self.model, self.processor = self.engine.model, self.engine.processor
        self.batch_size_per_gpu = self.engine.batch_size
        self.default_max_new_tokens = int(max_new_tokens)
        self.ignored_arguments = sorted(key for key in kwargs if key.removeprefix("vllm_") not in vllm_args)

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    def _visuals(self, doc_to_visual, doc_id, task, split) -> list:
        if doc_to_visual is None:
            return []
        visuals = doc_to_visual(self.task_dict[task][split][doc_id])
        if visuals is None:
            return []
        return list(visuals) if isinstance(visuals, (list, tuple)) else [visuals]

    def generate_until(self, requests: list[Instance]) -> list[str]:
        """Answers in request order; requests sharing their generation settings are batched together."""
        answers: list[str | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        prepared = []
        for position, request in enumerate(requests):
            context, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
            gen_kwargs = dict(gen_kwargs or {})
            until = gen_kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(gen_kwargs.get("max_new_tokens") or self.default_max_new_tokens)
            images = self._visuals(doc_to_visual, doc_id, task, split)
            prepared.append((images, str(context).replace(IMAGE_PLACEHOLDER, "").strip()))
            groups.setdefault((max_new, tuple(until)), []).append(position)
        for (max_new, until), positions in groups.items():
            for start in range(0, len(positions), self.batch_size_per_gpu):
                chunk = positions[start : start + self.batch_size_per_gpu]
                texts = self.engine.answer([prepared[i] for i in chunk], max_new, stop=list(until))
                for position, text in zip(chunk, texts):
                    text = "" if isinstance(text, AnswerError) else text
                    answers[position] = text
                    self.cache_hook.add_partial(
                        "generate_until", (requests[position].args[0], requests[position].args[1]), text
                    )
        return [a or "" for a in answers]

    def loglikelihood(self, requests):
        raise NotImplementedError("Mini-Gemini's lmms-eval adapter supports generation tasks only")

    def generate_until_multi_round(self, requests):
        raise NotImplementedError("Mini-Gemini's lmms-eval adapter supports single-round generation only")
