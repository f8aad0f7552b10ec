"""The transformers engine: the model loaded in this process, batched greedy ``generate()``."""

from __future__ import annotations

from collections.abc import Sequence

from minigemini.evaluation import answering
from minigemini.evaluation.answering import generate_answers
from minigemini.evaluation.engines import Engine, EngineOptions
from minigemini.evaluation.samples import AnswerError, EvalError

__all__ = ["ENGINE", "TransformersEngine"]


class TransformersEngine(Engine):
    name = "transformers"

    def __init__(self, options: EngineOptions):
        if not options.model:
            raise EvalError("the transformers engine needs --model")
        self.model, self.processor = answering.load_model_and_processor(options.model, **options.load)
        self.model_name = str(options.model)
        self.batch_size = options.batch_size or 8

    def answer(
        self, batch: Sequence[tuple[list, str]], max_new_tokens: int, stop: Sequence[str] | None = None
    ) -> list[str | AnswerError]:
        return generate_answers(self.model, self.processor, batch, max_new_tokens=max_new_tokens, stop=stop)


ENGINE = TransformersEngine
