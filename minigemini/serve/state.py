"""What the routes of `mgm serve` share (``app.state.server``): the model and its processor, the limits, the batching
engine, the image fetcher and the text-to-image backend."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from minigemini.serve.batching import BatchingEngine
from minigemini.serve.images import ImageFetcher
from minigemini.serve.limits import character_limit
from minigemini.serve.settings import ServerSettings

__all__ = ["ServerState"]


@dataclass(eq=False)
class ServerState:
    model: Any
    processor: Any
    settings: ServerSettings
    engine: BatchingEngine
    image_generator: Any = None
    fetcher: ImageFetcher = field(init=False)
    _decode_slots: asyncio.Semaphore | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.fetcher = ImageFetcher(self.settings)
        image_processor = getattr(self.processor, "image_processor", None)
        # Each image is shrunk to the model's input (the processor's own padded, resized square, which the processor
        # then takes as it is) before the next one is decoded, and counted as that padded square in the pixel budget.
        self.shrink = getattr(image_processor, "to_square_hr", None)
        self.square = bool(getattr(image_processor, "pad_to_square", True))
        self.max_characters = character_limit(self.engine.context_limit, self.processor.tokenizer)

    def decode_slot(self) -> asyncio.Semaphore:
        """The ``decode_slots`` semaphore, made on the server's event loop (a new one for each lifespan)."""
        if self._decode_slots is None:
            self._decode_slots = asyncio.Semaphore(self.settings.decode_slots)
        return self._decode_slots

    def start(self) -> None:
        self._decode_slots = None
        self.engine.start()

    def close(self) -> None:
        self.engine.close()
