"""Images of a chat request: base64 data URLs, remote URLs and local files, under the server's rules.

Three steps, so that a request is refused before its pixels are paid for: ``fetch`` (the encoded bytes, within the
byte limits), ``size`` (width and height from the header alone, within the per-image pixel limit) and ``decode``.
After a large decode, ``return_memory`` gives the freed pages back to the system.
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import functools
import os
import sys
from urllib.parse import unquote, urlparse

from minigemini.image_processing import ImageLoadError, load_image, read_image_size
from minigemini.serve.errors import APIError
from minigemini.serve.settings import ServerSettings

__all__ = ["RETURN_MEMORY_PIXELS", "ImageFetcher", "return_memory"]

#: Counted pixels a request's images must reach for ``return_memory`` to run after they are decoded (a 2000x2000
#: picture decodes to 12 MB; below that, what glibc keeps is small and soon reused).
RETURN_MEMORY_PIXELS = 4_000_000


@functools.cache
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim = ctypes.CDLL(None).malloc_trim  # glibc only (musl has none)
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def return_memory() -> bool:
    """Give the C heap's free pages back to the system (glibc's ``malloc_trim``); False where there is nothing to call.

    A freed large picture otherwise stays resident: after glibc frees one memory-mapped block it raises its mmap
    threshold (up to 32 MiB), so the next pictures' blocks come from the heap, whose free pages it keeps.
    """
    trim = _malloc_trim()
    return bool(trim is not None and trim(0))


def refused(param: str, code: str, message: str) -> APIError:
    """The 400 for an image of the request, named by ``param``."""
    return APIError(400, f"{param}: {message}", param=param, code=code)


class ImageFetcher:
    """Turns an ``image_url`` into bytes, a size and a picture under the server's rules (which sources, how large)."""

    def __init__(self, settings: ServerSettings):
        self.settings = settings
        root = settings.allow_local_files
        self.root = os.path.realpath(root) if root is not None else None

    def _too_large(self, raw: bytes, param: str) -> None:
        if len(raw) > self.settings.max_image_bytes:
            raise refused(
                param,
                "image_too_large",
                f"image is {len(raw):,} bytes, above this server's limit of {self.settings.max_image_bytes:,}",
            )

    def size(self, raw: bytes, param: str) -> tuple[int, int]:
        """(width, height) from the header, nothing decoded; 400 for non-images and images above the pixel limit."""
        self._too_large(raw, param)
        try:
            width, height = read_image_size(raw)
        except ImageLoadError as error:
            raise refused(param, "invalid_image", str(error)) from None
        limit = self.settings.max_image_pixels
        if limit is not None and width * height > limit:
            raise refused(
                param,
                "invalid_image",
                f"image is too large: {width}x{height} = {width * height:,} pixels exceeds "
                f"this server's limit of {limit:,} pixels per image",
            )
        return width, height

    def decode(self, raw: bytes, param: str):
        """The RGB picture (``load_image``); 400 for data that does not decode."""
        self._too_large(raw, param)
        try:
            return load_image(raw, max_pixels=self.settings.max_image_pixels)
        except ImageLoadError as error:
            raise refused(param, "invalid_image", str(error)) from None

    def _data_url(self, url: str, param: str) -> bytes:
        header, comma, payload = url.partition(",")
        if not comma or not header.endswith(";base64"):
            raise refused(param, "invalid_image_url", "only base64 data URLs (data:image/...;base64,...) are supported")
        if len(payload) > self.settings.max_image_bytes * 4 // 3 + 4:
            raise refused(
                param,
                "image_too_large",
                f"image data is above this server's limit of {self.settings.max_image_bytes:,} bytes",
            )
        try:
            return base64.b64decode(payload.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise refused(param, "invalid_image_url", "malformed base64 in the data URL") from None

    def _local(self, url: str, param: str) -> bytes:
        if self.root is None:
            raise refused(
                param,
                "local_files_not_allowed",
                "local file paths are not allowed on this server (start it with "
                "--allow-local-files DIR to allow files inside DIR)",
            )
        path = unquote(urlparse(url).path) if url.startswith("file://") else url
        if "\x00" in path:  # os.path.realpath raises on it
            raise refused(param, "invalid_image_url", "the path holds a NUL byte")
        full = os.path.realpath(os.path.join(self.root, path))
        if os.path.commonpath([full, self.root]) != self.root:
            raise refused(param, "local_files_not_allowed", "the path is outside the directory this server may read")
        if not os.path.isfile(full):
            raise refused(param, "invalid_image_url", "no such file in the allowed directory")
        if os.path.getsize(full) > self.settings.max_image_bytes:
            raise refused(
                param,
                "image_too_large",
                f"image file is above this server's limit of {self.settings.max_image_bytes:,} bytes",
            )
        with open(full, "rb") as file:
            return file.read()

    async def _remote(self, url: str, param: str) -> bytes:
        if not self.settings.allow_remote_urls:
            raise refused(
                param,
                "remote_urls_not_allowed",
                "remote image URLs are not fetched by this server (start it with "
                "--allow-remote-urls, or send the image as a base64 data URL)",
            )
        import httpx

        limit = self.settings.max_image_bytes
        try:
            client = httpx.AsyncClient(timeout=self.settings.remote_timeout, follow_redirects=True, max_redirects=3)
            async with client, client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise refused(
                        param, "invalid_image_url", f"fetching the image failed with HTTP {response.status_code}"
                    )
                chunks, size = [], 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise refused(
                            param, "image_too_large", f"remote image is above this server's limit of {limit:,} bytes"
                        )
                    chunks.append(chunk)
                return b"".join(chunks)
        except httpx.HTTPError as error:
            raise refused(param, "invalid_image_url", f"fetching the image failed ({type(error).__name__})") from None

    async def fetch(self, url: str, param: str) -> bytes:
        """The encoded image bytes behind ``url`` (not decoded: see ``size`` and ``decode``)."""
        from starlette.concurrency import run_in_threadpool

        if url.startswith("data:"):
            return self._data_url(url, param)
        if url.startswith(("http://", "https://")):
            return await self._remote(url, param)
        if "://" in url and not url.startswith("file://"):
            raise refused(param, "invalid_image_url", "unsupported URL scheme")
        return await run_in_threadpool(self._local, url, param)
