"""The wire format of the OpenAI-compatible API: request models and the OpenAI-shaped error."""

from __future__ import annotations

import json
from typing import Any, Literal

__all__ = ["APIError", "request_models", "validation_message"]


class APIError(Exception):
    """An error answered as ``{"error": {...}}`` with an HTTP status (OpenAI's shape)."""

    def __init__(
        self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
        code: str | None = None,
    ):  # fmt: skip
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self, headers: dict[str, str] | None = None):
        """The one rendering of every error the server answers (routes, exception handlers and middleware alike)."""
        from starlette.responses import JSONResponse

        return JSONResponse(self.body(), status_code=self.status, headers=headers)


def request_models():
    """Pydantic request models (built lazily: pydantic is a dependency of the serve extra only)."""
    from pydantic import BaseModel, ConfigDict, Field

    class ImageURL(BaseModel):
        url: str
        detail: str | None = None

    class ContentPart(BaseModel):
        model_config = ConfigDict(extra="allow")
        type: str
        text: str | None = None
        image_url: ImageURL | str | None = None

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

    class ImageGenerationRequest(BaseModel):
        model_config = ConfigDict(extra="ignore")
        prompt: str = Field(min_length=1, max_length=4000)
        model: str | None = None
        n: int = Field(default=1, ge=1, le=4)
        size: str | None = None
        response_format: str | None = "b64_json"
        seed: int | None = None
        negative_prompt: str | None = None

    return ChatCompletionRequest, ImageGenerationRequest


def validation_message(error) -> tuple[str, str | None]:
    first = error.errors()[0]
    location = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
    message = first.get("msg", "invalid value")
    if first.get("type") == "finite_number":
        message = (
            f"{json.dumps(first.get('input'), default=str)} is not a number this field accepts; give a finite number"
        )
    return (f"{location}: {message}" if location else message), (location or None)
