"""What an `mgm serve` instance allows: sources and sizes of images, token limits, the API key, the queue, and the
bounds that keep its memory bounded under hostile clients (decoded pixels per request, concurrent decodes, images
waiting in the queue or batched together, request bodies held at once).  ``docs/serving.md`` gives the memory figure these bounds add up to."""

from __future__ import annotations

import os
from dataclasses import dataclass

from minigemini.image_processing import DEFAULT_MAX_IMAGE_PIXELS

__all__ = ["DEFAULT_MAX_REQUEST_PIXELS", "MiB", "ServerSettings"]

MiB = 1 << 20

#: Decoded pixels one request may cost, each image counted as the square it is padded to (its longer side squared):
#: a few phone photos, or one 8000x8000 picture; the model sees at most its HR size (768 or 1536 px) of each.
DEFAULT_MAX_REQUEST_PIXELS = 64_000_000


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
    max_request_pixels: int | None = DEFAULT_MAX_REQUEST_PIXELS  # decoded pixels per request (None: no budget)
    decode_slots: int = 2  # requests whose images are decoded at the same time; the others wait for a slot
    max_queued_images: int | None = 32  # encoded images waiting in the queue; more get 429
    max_batch_images: int | None = 16  # images in one batched generate call (a request with more runs alone)
    max_inflight_bytes: int | None = 256 * MiB  # request bodies held by the requests in progress; more get 429

    def __post_init__(self):
        if self.max_inflight_bytes is not None and self.max_inflight_bytes < self.max_request_bytes:
            raise ValueError(
                f"max_inflight_bytes ({self.max_inflight_bytes:,}) must be at least max_request_bytes "
                f"({self.max_request_bytes:,}): a request of the largest size could never be read"
            )
        if self.max_batch_images is not None and self.max_batch_images < 1:
            raise ValueError(f"max_batch_images must be >= 1 (or None: unbounded), got {self.max_batch_images}")
        if self.decode_slots < 1:
            raise ValueError(f"decode_slots must be >= 1, got {self.decode_slots}")
        if self.max_request_pixels is not None and self.max_request_pixels < 1:
            raise ValueError(f"max_request_pixels must be >= 1 (or None: no budget), got {self.max_request_pixels}")
        if self.max_queued_images is not None and self.max_queued_images < self.max_images:
            raise ValueError(
                f"max_queued_images ({self.max_queued_images}) must be at least max_images "
                f"({self.max_images}): a request with that many images could never be queued"
            )
