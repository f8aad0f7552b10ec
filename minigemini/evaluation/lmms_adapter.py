"""Mini-Gemini as an lmms-eval model (``python -m lmms_eval --model minigemini --model_args pretrained=DIR``).

lmms-eval (>= 0.7) finds plugin models through the entry-point group ``lmms_eval.models``; this package
declares (pyproject.toml)::

    [project.entry-points."lmms_eval.models"]
    minigemini = "minigemini.evaluation.lmms_adapter:lmms_eval_manifest"

Only lmms-eval imports this module, so lmms-eval is imported at the top; nothing else in ``minigemini``
imports it, and the package works without lmms-eval installed.  Generation goes through the same
``generate_answers`` as ``mgm eval``.
"""

from __future__ import annotations

try:
    from lmms_eval.api.instance import Instance
    from lmms_eval.api.model import lmms
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError("the lmms-eval adapter needs lmms-eval: pip install 'minigemini[lmms]'") from error

from minigemini.evaluation.answering import generate_answers, load_model_and_processor
from minigemini.templates import IMAGE_PLACEHOLDER

__all__ = ["MiniGeminiLMMS", "lmms_eval_manifest"]

MODEL_ID = "minigemini"
CLASS_PATH = "minigemini.evaluation.lmms_adapter.MiniGeminiLMMS"


def lmms_eval_manifest():
    """The entry point's payload: lmms-eval's ``ModelManifest`` for ``--model minigemini`` (alias ``mgm``)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_ID, simple_class_path=CLASS_PATH, aliases=("mgm", "mini_gemini"))


class MiniGeminiLMMS(lmms):
    """lmms-eval "simple" model: ``generate_until`` over (context, gen_kwargs, doc_to_visual, doc_id, task, split).

    model_args: ``pretrained`` (directory), ``device`` (auto), ``dtype`` (auto), ``batch_size`` (1),
    ``max_new_tokens`` (default when a task sets none: 128), ``chat_template`` (override).  Decoding is
    greedy whatever ``temperature`` a task asks for, as the paper's evaluation decodes.
    """

    is_simple = True

    def __init__(
        self,
        pretrained: str,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int | str = 1,
        max_new_tokens: int | str = 128,
        chat_template: str | None = None,
        **kwargs,
    ) -> None:
        super().__init__()
        self.model, self.processor = load_model_and_processor(
            pretrained, device=device, dtype=dtype, chat_template=chat_template
        )
        self.batch_size_per_gpu = max(1, int(batch_size))
        self.default_max_new_tokens = int(max_new_tokens)
        self.ignored_arguments = sorted(kwargs)

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
                texts = generate_answers(
                    self.model, self.processor, [prepared[i] for i in chunk], max_new_tokens=max_new, stop=list(until)
                )
                for position, text in zip(chunk, texts):
                    answers[position] = text
                    self.cache_hook.add_partial(
                        "generate_until", (requests[position].args[0], requests[position].args[1]), text
                    )
        return [a or "" for a in answers]

    def loglikelihood(self, requests):
        raise NotImplementedError("Mini-Gemini's lmms-eval adapter supports generation tasks only")

    def generate_until_multi_round(self, requests):
        raise NotImplementedError("Mini-Gemini's lmms-eval adapter supports single-round generation only")
