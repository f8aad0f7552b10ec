"""An LLM judge behind any OpenAI-compatible endpoint (``POST {base_url}/chat/completions``).

Used by MM-Vet (grading, required), MathVista (answer extraction) and MMBench (matching answers the rules
cannot place).  Configured by base URL, model name and the name of the environment variable holding the
API key (the key itself never goes on a command line).  Replies are cached in a JSONL file when a cache
path is given, so an interrupted scoring run does not pay twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

__all__ = ["Judge", "JudgeConfig", "JudgeError"]


class JudgeError(OSError):
    """The judge endpoint could not be reached or answered with something that is not a chat completion
    (an OSError: the CLI prints it as one line, like other environment problems)."""


@dataclasses.dataclass
class JudgeConfig:
    base_url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    timeout: float = 60.0
    max_retries: int = 3
    retry_wait: float = 2.0
    cache_path: Path | None = None


class Judge:
    """``complete(prompt) -> str``: one user message, greedy (temperature 0 unless given)."""

    def __init__(self, config: JudgeConfig):
        if not config.base_url or not config.model:
            raise ValueError("a judge needs both a base URL and a model name")
        self.config = config
        self.url = config.base_url.rstrip("/") + "/chat/completions"
        host = urllib.parse.urlsplit(self.url).hostname or ""
        # A judge on this machine is reached directly, whatever proxy the environment sets for the outside.
        loopback = host in ("localhost", "::1") or host.startswith("127.")
        self._opener = (
            urllib.request.build_opener(urllib.request.ProxyHandler({})) if loopback else urllib.request.build_opener()
        )
        self.calls = 0
        self._lock = threading.Lock()
        self._cache: dict[str, str] = {}
        if config.cache_path is not None and Path(config.cache_path).is_file():
            with open(config.cache_path, encoding="utf-8") as handle:
                for line in handle:
                    try:
                        entry = json.loads(line)
                        self._cache[entry["key"]] = entry["reply"]
                    except (json.JSONDecodeError, KeyError, TypeError):
                        continue  # a line cut by an interruption

    def _key(self, payload: dict) -> str:
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()

    def complete(self, prompt: str, max_tokens: int = 256, temperature: float = 0.0) -> str:
        payload = {
            "model": self.config.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": temperature,
            "max_tokens": max_tokens,
        }
        key = self._key(payload)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        reply = self._post(payload)
        with self._lock:
            self._cache[key] = reply
            if self.config.cache_path is not None:
                Path(self.config.cache_path).parent.mkdir(parents=True, exist_ok=True)
                with open(self.config.cache_path, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps({"key": key, "reply": reply}) + "\n")
        return reply

    def _post(self, payload: dict) -> str:
        headers = {"Content-Type": "application/json"}
        api_key = os.environ.get(self.config.api_key_env) if self.config.api_key_env else None
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        body = json.dumps(payload).encode("utf-8")
        last_error: Exception | None = None
        for attempt in range(self.config.max_retries + 1):
            if attempt:
                time.sleep(self.config.retry_wait * attempt)
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            self.calls += 1
            try:
                with self._opener.open(request, timeout=self.config.timeout) as response:
                    data = json.loads(response.read().decode("utf-8"))
            except urllib.error.HTTPError as error:
                last_error = error
                if error.code in (408, 409, 429) or error.code >= 500:
                    continue
                raise JudgeError(
                    f"judge at {self.url} refused the request: HTTP {error.code} {error.reason}"
                ) from error
            except (urllib.error.URLError, TimeoutError, ConnectionError, json.JSONDecodeError) as error:
                last_error = error
                continue
            try:
                content = data["choices"][0]["message"]["content"]
            except (KeyError, IndexError, TypeError) as error:
                raise JudgeError(
                    f"judge at {self.url} answered without choices[0].message.content: {str(data)[:200]}"
                ) from error
            return "" if content is None else str(content)
        raise JudgeError(f"judge at {self.url} failed after {self.config.max_retries + 1} attempts: {last_error}")
