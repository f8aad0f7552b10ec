"""What one request may cost `mgm serve`, checked before the cost is paid, and the memory figure the bounds add up to.

- Pixels: an image is refused from its header when the request's images would decode to more than
  ``max_request_pixels``.  Each image counts as the square the processor pads it to (its longer side squared; w x h
  when the processor crops instead), because that square is what gets allocated: a 50000x1000 strip is only 50 MP
  but its padded square is 2.5 GP.
- Characters: a prompt longer than the model's context times the longest token of the vocabulary cannot fit in the
  context whatever it says, so it is refused before the tokenizer sees it (tokenising a megabyte costs hundreds of MB).
- Memory: ``memory_bound`` is the documented figure (``docs/serving.md``): decoding is done by at most
  ``decode_slots`` requests at a time, one image after another, each image shrunk to the model's input size before
  the next is decoded, so decoding never holds more than ``decode_slots x max_request_pixels x
  BYTES_PER_DECODED_PIXEL``; the encoded images waiting in the queue or in the running batch are bounded by
  ``max_queued_images`` and ``max_batch_images``.
"""

from __future__ import annotations

from minigemini.serve.errors import APIError

__all__ = [
    "BODY_COPIES",
    "BYTES_PER_DECODED_PIXEL",
    "PixelBudget",
    "character_limit",
    "encoded_image_bytes",
    "image_cost",
    "memory_bound",
]

#: The most memory one counted pixel takes while its image is decoded, converted to RGB, padded and shrunk, over image
#: kinds (8-bit, alpha, 16-bit, float, CMYK, rotated JPEG), with some headroom; benchmarks/bench_serve_memory.py
#: measures each kind against it.
BYTES_PER_DECODED_PIXEL = 12

#: Copies of its body a request holds at most while it is read and parsed (the bytes, the JSON text, the data URL's
#: base64 and its decoded bytes); benchmarks/bench_serve_memory.py measures it.
BODY_COPIES = 4


def image_cost(width: int, height: int, square: bool = True) -> int:
    """Pixels an image costs to decode: the padded square (``square``) or the image itself."""
    return max(width, height) ** 2 if square else width * height


class PixelBudget:
    """The running pixel cost of one request's images; ``add`` refuses (400) the image that would exceed it."""

    def __init__(self, limit: int | None, square: bool = True):
        self.limit, self.square, self.used = limit, square, 0

    def add(self, width: int, height: int, param: str) -> None:
        cost = image_cost(width, height, self.square)
        if self.limit is not None and self.used + cost > self.limit:
            counted = "padded to a square, " if self.square and width != height else ""
            raise APIError(
                400,
                f"{param}: this {width}x{height} image ({counted}{cost:,} pixels) takes the request's images to "
                f"{self.used + cost:,} pixels, above this server's budget of {self.limit:,} decoded pixels per request; "
                "send smaller or fewer images",
                param=param,
                code="too_many_pixels",
            )
        self.used += cost


def character_limit(context_tokens: int | None, tokenizer) -> int | None:
    """Characters that cannot fit in ``context_tokens`` tokens: no token of ``tokenizer`` spells more characters than
    its longest vocabulary entry (byte-level entries spell at most one character per symbol), so a longer text needs
    more tokens than the context holds.  None when the context is unknown."""
    if context_tokens is None:
        return None
    vocabulary = tokenizer.get_vocab()
    longest = max((len(token) for token in vocabulary), default=1)
    return context_tokens * max(longest, 1)


def encoded_image_bytes(image_processor) -> int:
    """Bytes of one image's model input (float32 HR tensor + LR views), what a queued request holds per image."""
    hr = getattr(image_processor, "image_size_aux", 0)
    lr = getattr(image_processor, "image_size", 0)
    views = getattr(image_processor, "num_views", 1)
    return 4 * 3 * (hr * hr + views * lr * lr)


def memory_bound(settings, image_processor) -> dict[str, int | None]:
    """The request memory the server's bounds allow, in bytes (None: unbounded), on top of the model and its
    activations: ``decoding`` (images being decoded), ``encoded`` (model inputs queued, plus the running batch's, held
    twice: per request and collated), ``bodies`` (the request bodies held at once, each about ``BODY_COPIES`` times
    over: its bytes, its JSON, its images' bytes)."""
    decoding = None
    if settings.max_request_pixels is not None:
        decoding = settings.decode_slots * settings.max_request_pixels * BYTES_PER_DECODED_PIXEL
    encoded = None
    if settings.max_queued_images is not None and settings.max_batch_images is not None:
        images = settings.max_queued_images + 2 * max(settings.max_batch_images, settings.max_images)
        encoded = images * encoded_image_bytes(image_processor)
    bodies = None if settings.max_inflight_bytes is None else BODY_COPIES * settings.max_inflight_bytes
    return {"decoding": decoding, "encoded": encoded, "bodies": bodies}
