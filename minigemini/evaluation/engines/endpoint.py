"""The endpoint engine: any OpenAI-compatible chat completions server answers (``mgm serve``, ``vllm serve`` with the
plugin, a hosted API).

Each question is one request (``POST {url}/chat/completions``, greedy: temperature 0): its images as PNG data URLs
first, then the prompt, in one user message.  Up to ``concurrency`` requests are in flight; the client (``openai``)
times each out after ``timeout`` seconds and retries a refused, failed or timed-out one ``retries`` times.  A question
that still fails -- refused, timed out, a reply that is not JSON or has no text -- is an ``AnswerError``: written as
the question's error, not scored, and asked again by ``--retry-errors``.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from minigemini.errors import require
from minigemini.evaluation.engines import Engine, EngineOptions
from minigemini.evaluation.samples import AnswerError, EvalError

__all__ = ["ENGINE", "EndpointEngine", "base_url", "data_url"]


def base_url(url: str) -> str:
    """The client's base URL: ``url`` itself, or ``url/v1`` when it names only a server (``http://host:8000``)."""
    url = url.rstrip("/")
    return url + "/v1" if urlsplit(url).path in ("", "/") else url


def data_url(picture) -> str:
    """A loaded picture (PIL) as a PNG data URL (lossless: the server reads the pixels the runner loaded)."""
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


class EndpointEngine(Engine):
    name = "endpoint"

    def __init__(self, options: EngineOptions):
        require("openai", extra="eval")
        import openai

        if not options.endpoint:
            raise EvalError("the endpoint engine needs --endpoint URL")
        self.url = base_url(options.endpoint)
        self.client = openai.OpenAI(
            base_url=self.url,
            api_key=os.environ.get(options.api_key_env) or "EMPTY",
            timeout=options.timeout,
            max_retries=options.retries,
        )
        self.model_name = options.endpoint_model or self._served_model()
        self.concurrency = max(1, options.concurrency)
        self.batch_size = options.batch_size or 4 * self.concurrency
        self.pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="mgm-eval-endpoint")

    def _served_model(self) -> str:
        """The first model the server lists (``GET /models``), for a run without ``--endpoint-model``."""
        import openai

        try:
            models = self.client.models.list().data
        except (openai.OpenAIError, ValueError) as error:
            raise EvalError(
                f"--endpoint {self.url}: listing its models failed ({error}); name one with --endpoint-model"
            )
        if not models:
            raise EvalError(f"--endpoint {self.url} lists no model; name one with --endpoint-model")
        return models[0].id

    def _ask(self, images: list, prompt: str, max_new_tokens: int, stop: Sequence[str] | None) -> str | AnswerError:
        import openai

        content = [{"type": "image_url", "image_url": {"url": data_url(picture)}} for picture in images]
        content.append({"type": "text", "text": prompt})
        try:
            reply = self.client.chat.completions.create(
                model=self.model_name,
                messages=[{"role": "user", "content": content}],
                max_tokens=max_new_tokens,
                temperature=0.0,
                **({"stop": list(stop)} if stop else {}),
            )
        except (openai.OpenAIError, ValueError) as error:  # refused, timed out, not JSON (after the retries)
            return AnswerError(f"endpoint: {type(error).__name__}: {str(error)[:300]}")
        if not getattr(reply, "choices", None) or not isinstance(reply.choices[0].message.content, str):
            return AnswerError(f"endpoint: a reply without an answer's text: {str(reply)[:200]}")
        return reply.choices[0].message.content.strip()

    def answer(
        self, batch: Sequence[tuple[list, str]], max_new_tokens: int, stop: Sequence[str] | None = None
    ) -> list[str | AnswerError]:
        return list(self.pool.map(lambda item: self._ask(item[0], item[1], max_new_tokens, stop), batch))

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.client.close()


ENGINE = EndpointEngine
