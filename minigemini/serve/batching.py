"""One model instance, many concurrent requests: a queue and a worker thread that batches them.

The worker takes the oldest waiting request, waits ``batch_wait`` seconds for companions, then takes every other
waiting request that can share its ``generate`` call (same sampling settings, and the padded batch still fits the
context) up to ``max_batch_size``, and runs one left-padded batched ``generate`` (``engine.run_batch``).  Each
request's ``on_text`` receives its own streamed text; ``Job.done`` is set when its answer is final.  Requests
waiting while a batch runs are gathered into the next one.

Bounds: ``max_queue`` requests and ``max_queued_images`` images (their encoded tensors are the queue's memory) may
wait; ``submit`` refuses more at once (``QueueFull``).  A batch takes at most ``max_batch_images`` images (its first
request whatever it holds), since the vision encoders see a batch's images all at once.  ``cancel`` drops a waiting request from the queue, or stops a
running one at its next token.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field

from minigemini import engine
from minigemini.engine import GenerationRequest, context_limit

__all__ = ["BatchingEngine", "Job", "QueueFull"]

logger = logging.getLogger(__name__)


class QueueFull(RuntimeError):
    """``submit`` refused a request: ``max_queue`` requests (or ``max_queued_images`` images) are already waiting."""


@dataclass(eq=False)
class Job:
    request: GenerationRequest
    on_done: object = None  # callable(job), called from the worker thread when the job ends
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    batch_size: int = 0  # how many requests shared the generate call that answered this one
    images: int = 0  # images in the request (its pixel tensors are what a waiting job costs in memory)


def _image_count(request) -> int:
    pixel_values = (getattr(request, "inputs", None) or {}).get("pixel_values")
    return 0 if pixel_values is None else int(pixel_values.shape[0])


class BatchingEngine:
    def __init__(
        self,
        model,
        processor,
        max_batch_size: int = 8,
        batch_wait: float = 0.005,
        max_queue: int | None = 64,
        max_queued_images: int | None = None,
        max_batch_images: int | None = None,
    ):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_queue is not None and max_queue < 1:
            raise ValueError(f"max_queue must be >= 1 (or None: unbounded), got {max_queue}")
        if max_queued_images is not None and max_queued_images < 1:
            raise ValueError(f"max_queued_images must be >= 1 (or None: unbounded), got {max_queued_images}")
        if max_batch_images is not None and max_batch_images < 1:
            raise ValueError(f"max_batch_images must be >= 1 (or None: unbounded), got {max_batch_images}")
        self.max_batch_images = max_batch_images
        self.max_queue = max_queue
        self.max_queued_images = max_queued_images
        self.rejected = 0  # requests refused because the queue was full
        self.cancelled = 0  # requests cancelled (their client went away) before or while generating
        self._queued_images = 0
        self.model = model
        self.processor = processor
        self.max_batch_size = max_batch_size
        self.batch_wait = batch_wait
        self.context_limit = context_limit(model)
        self._queue: collections.deque[Job] = collections.deque()
        self._condition = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self.batches = 0
        self.largest_batch = 0
        self.batch_sizes: collections.deque[int] = collections.deque(maxlen=1000)

    # ------------------------------------------------------------------------------------------- lifecycle

    def start(self) -> BatchingEngine:
        with self._condition:
            if self._thread is None:
                self._closed = False
                self._thread = threading.Thread(target=self._loop, name="mgm-batcher", daemon=True)
                self._thread.start()
        return self

    def close(self, timeout: float | None = 30.0) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def pending(self) -> int:
        with self._condition:
            return len(self._queue)

    # ------------------------------------------------------------------------------------------- requests

    def queued_images(self) -> int:
        with self._condition:
            return self._queued_images

    def _check(self, images: int) -> None:
        if self.max_queue is not None and len(self._queue) >= self.max_queue:
            raise QueueFull(f"{len(self._queue)} requests are already waiting (the limit is {self.max_queue})")
        if self.max_queued_images is not None and self._queued_images + images > self.max_queued_images:
            raise QueueFull(
                f"{self._queued_images} images are already waiting and this request brings {images} "
                f"(the limit is {self.max_queued_images})"
            )

    def check(self, images: int = 0) -> None:
        """Raise ``QueueFull`` (saying why) when a request with ``images`` images would be refused now."""
        with self._condition:
            self._check(images)

    def submit(self, request: GenerationRequest, on_done=None) -> Job:
        """Queue ``request``; raises ``QueueFull`` at once when the queue is full (requests or images)."""
        job = Job(request, on_done, images=_image_count(request))
        with self._condition:
            if self._closed:
                raise RuntimeError("the engine is closed")
            try:
                self._check(job.images)
            except QueueFull:
                self.rejected += 1
                raise
            self._queue.append(job)
            self._queued_images += job.images
            self._condition.notify()
        return job

    def cancel(self, job: Job) -> None:
        """Stop generating for ``job``: a waiting job leaves the queue now, a running one stops at its next token."""
        job.request.cancelled.set()
        with self._condition:
            if job.done.is_set():
                return
            self.cancelled += 1
            try:
                self._queue.remove(job)
            except ValueError:
                return  # running: the batch drops the row at its next step
            self._queued_images -= job.images
        job.request.finish_reason = "cancelled"
        self._finish(job)

    def generate(self, request: GenerationRequest, timeout: float | None = None) -> GenerationRequest:
        """Submit and wait (for callers on ordinary threads); re-raises a generation error."""
        job = self.submit(request)
        if not job.done.wait(timeout):
            request.cancelled.set()
            raise TimeoutError("generation did not finish in time")
        if job.error is not None:
            raise job.error
        return request

    # ------------------------------------------------------------------------------------------- worker

    def _fits(self, batch: list[Job], candidate: Job) -> bool:
        if candidate.request.sampling_key() != batch[0].request.sampling_key():
            return False
        images = sum(job.images for job in batch) + candidate.images
        if self.max_batch_images is not None and images > self.max_batch_images:
            return False
        if self.context_limit is None:
            return True
        requests = [job.request for job in batch] + [candidate.request]
        longest = max(r.prompt_length for r in requests)
        return longest + max(r.max_new_tokens for r in requests) <= self.context_limit

    def _take_batch(self) -> list[Job] | None:
        with self._condition:
            while not self._queue and not self._closed:
                self._condition.wait()
            if self._closed and not self._queue:
                return None
        if self.batch_wait > 0:
            time.sleep(self.batch_wait)
        with self._condition:
            if not self._queue:  # every waiting job was cancelled meanwhile
                return []
            batch = [self._queue.popleft()]
            kept: collections.deque[Job] = collections.deque()
            while self._queue:
                job = self._queue.popleft()
                if len(batch) < self.max_batch_size and self._fits(batch, job):
                    batch.append(job)
                else:
                    kept.append(job)
            self._queue = kept
            self._queued_images -= sum(job.images for job in batch)
        return batch

    def _finish(self, job: Job) -> None:
        job.done.set()
        if job.on_done is not None:
            try:
                job.on_done(job)
            except Exception:  # a callback must not kill the worker
                logger.exception("on_done callback failed")

    def _loop(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            live = []
            for job in batch:
                if job.request.cancelled.is_set():
                    job.request.finish_reason = "cancelled"
                    self._finish(job)
                else:
                    live.append(job)
            if not live:
                continue
            self.batches += 1
            self.largest_batch = max(self.largest_batch, len(live))
            self.batch_sizes.append(len(live))
            for job in live:
                job.batch_size = len(live)
            try:
                engine.run_batch(self.model, self.processor, [job.request for job in live])
            except Exception as error:  # reported to each caller; the worker keeps serving
                logger.exception("batched generation failed")
                for job in live:
                    job.error = error
            for job in live:
                self._finish(job)
