"""Bounded inference: a fixed number of worker threads and a bounded number of admitted requests.

The model runs in worker threads (onnxruntime releases the GIL; the numpy front end
keeps its buffers per thread), never on the event loop, so health checks and metrics
answer while a request is being scored. Admission is decided on the event loop before
a request's body is read: with ``workers + queue`` requests admitted, the next one is
refused at once (503 + Retry-After) instead of queueing without bound.

A request that runs out of time stops waiting, but its slot is only given back when
its work has really ended (a running onnxruntime call cannot be interrupted), so the
number of inferences in progress never exceeds the bound, time-outs included.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any, Callable, Optional, TypeVar

from .problems import BusyError, InferenceTimeoutError

T = TypeVar("T")


class Slot:
    """One admitted request. Freed when the request is done *and* its submitted work has finished."""

    def __init__(self, pool: "InferencePool") -> None:
        self._pool = pool
        self._holds = 1  # the request itself

    def hold(self) -> None:
        self._holds += 1

    def drop(self) -> None:
        self._holds -= 1
        if self._holds == 0:
            self._pool._free()


class InferencePool:
    """``workers`` threads, at most ``workers + queue`` admitted requests. Use from one event loop only."""

    def __init__(self, workers: int, queue: int, retry_after: int = 1,
                 on_change: Optional[Callable[[int], None]] = None) -> None:
        self.workers, self.queue, self.retry_after = int(workers), int(queue), int(retry_after)
        self.capacity = self.workers + self.queue
        self.admitted = 0
        self._on_change = on_change
        self._executor = concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix="edge-detect-infer")

    def admit(self) -> Slot:
        """A slot for one request; raises BusyError (503) when ``workers + queue`` are already admitted."""
        if self.admitted >= self.capacity:
            raise BusyError(f"all {self.workers} inference slot(s) and {self.queue} queue place(s) are taken; "
                            f"retry after {self.retry_after} s")
        self.admitted += 1
        self._changed()
        return Slot(self)

    def _free(self) -> None:
        self.admitted -= 1
        self._changed()

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self.admitted)

    async def run(self, fn: Callable[..., T], *args: Any, timeout: float, slot: Optional[Slot] = None) -> T:
        """Run ``fn(*args)`` on a worker thread; raise InferenceTimeoutError after ``timeout`` seconds.

        With a ``slot``, the slot stays held until the work has finished even if the caller
        gave up waiting; work still queued at the time-out is cancelled.
        """
        loop = asyncio.get_running_loop()
        cf = self._executor.submit(fn, *args)
        if slot is not None:
            slot.hold()
            cf.add_done_callback(lambda _f: loop.call_soon_threadsafe(slot.drop))
        fut = asyncio.wrap_future(cf, loop=loop)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout=max(0.0, timeout))
        except asyncio.TimeoutError:
            cf.cancel()  # only succeeds while still queued; a running call finishes and then frees the slot
            fut.add_done_callback(_consume)
            raise InferenceTimeoutError(f"no answer within the {timeout:.1f} s left of the request time-out") from None

    def shutdown(self) -> None:
        """Stop taking work; queued work is cancelled, running work finishes in its thread."""
        self._executor.shutdown(wait=False, cancel_futures=True)


def _consume(fut: "asyncio.Future[Any]") -> None:
    """Retrieve the outcome of abandoned work so asyncio does not log it as never retrieved."""
    if not fut.cancelled():
        fut.exception()
