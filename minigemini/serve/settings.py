"""What an `mgm serve` instance allows: sources and sizes of images, token limits, the API key, the queue."""

from __future__ import annotations

import os
from dataclasses import dataclass

from minigemini.image_processing import DEFAULT_MAX_IMAGE_PIXELS

__all__ = ["MiB", "ServerSettings"]

MiB = 1 << 20


@dataclass
class ServerSettings:
    model_name: str = "minigemini"
    allow_local_files: str | os.PathLike | None = None
    allow_remote_urls: bool = False
    max_request_bytes: int = 32 * MiB
    max_image_bytes: int = 20 * MiB
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS
    max_images: int = 8
    default_max_tokens: int = 512
    max_tokens_limit: int = 4096
    default_temperature: float = 0.0
    remote_timeout: float = 15.0
    api_key: str | None = None  # when set, /v1 requests need "Authorization: Bearer <api_key>"
    max_queue: int | None = 64  # requests waiting for the model; more get 429
