"""The OpenAI wire format of `mgm serve` as module-level pydantic models (vLLM's ``entrypoints/openai/protocol.py``):
the requests, the whole replies, the stream chunks and the error body, each sent with ``model_dump_json``.

Only the server's routes import this module (pydantic comes with the serve extra's FastAPI); the error factory,
``errors.APIError``, renders ``ErrorResponse``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ChatCompletionResponse",
    "ErrorResponse",
    "ImageGenerationRequest",
    "ImageGenerationResponse",
    "ModelList",
    "sse",
]


def _absent(value: Any) -> bool:
    return value is None


# ----------------------------------------------------------------------------------------------------- requests


class ImageURL(BaseModel):
    url: str
    detail: str | None = None


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None
    image_url: ImageURL | str | None = None

    @property
    def url(self) -> str | None:
        return self.image_url if isinstance(self.image_url, str) else getattr(self.image_url, "url", None)


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    # Python's JSON reader takes NaN and Infinity (and 1e999 as infinity): no float field accepts them.
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)
    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    # accepted for OpenAI clients that always send them, checked against OpenAI's range; not applied
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    generate_image: bool = False
    ocr: bool = False

    @property
    def stops(self) -> list[str]:
        """The stop strings, at most four (OpenAI's limit)."""
        return ([self.stop] if isinstance(self.stop, str) else list(self.stop or []))[:4]

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class ImageGenerationRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    prompt: str = Field(min_length=1, max_length=4000)
    model: str | None = None
    n: int = Field(default=1, ge=1, le=4)
    size: str | None = None
    response_format: str | None = "b64_json"
    seed: int | None = None
    negative_prompt: str | None = None


# ----------------------------------------------------------------------------------------------------- replies


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Picture(BaseModel):
    """A picture drawn from the answer's ``<h>prompt</h>`` (the ``generate_image`` extension)."""

    b64_json: str
    prompt: str
    mime_type: str = "image/png"


class ChatMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    images: list[Picture] | None = Field(default=None, exclude_if=_absent)  # only when generate_image was asked


class Choice(BaseModel):
    index: int = 0
    message: ChatMessage
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage


class Delta(BaseModel):
    role: Literal["assistant"] | None = Field(default=None, exclude_if=_absent)
    content: str | None = Field(default=None, exclude_if=_absent)
    images: list[Picture] | None = Field(default=None, exclude_if=_absent)


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = Field(default=None, exclude_if=_absent)  # the last chunk's, with include_usage


class GeneratedImage(BaseModel):
    b64_json: str
    revised_prompt: str


class ImageGenerationResponse(BaseModel):
    created: int
    data: list[GeneratedImage]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "minigemini"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# ----------------------------------------------------------------------------------------------------- errors


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """OpenAI's error body, the one shape of every status."""

    error: ErrorInfo


def sse(payload: BaseModel) -> str:
    """One server-sent event carrying ``payload``."""
    return f"data: {payload.model_dump_json()}\n\n"
