"""Work beside the network calls: a prefetching iterator and an ordered background writer.

A GPU call returns control to Python while the device works only if Python has the next batch
ready and is not busy writing the last one's outputs. `prefetch` runs a producer (decoding,
cropping) in a thread ahead of its consumer; `OrderedWriter` runs writes (images, masks, OBJ,
npz, video frames) in a thread behind their producer. Both are bounded — at most ``depth`` items
wait — so memory stays flat however long the video is, and both keep order. An error on either
side reaches the caller as itself (a full disk stays a `DiskFullError`, a Cancel a `Cancelled`),
and no thread outlives the block that started it. Depth 0 runs everything inline, one step after
another (``runtime.queue_depth: 0``: for debugging and for measuring what overlap gains).

Threads, not processes: the work that overlaps (PyAV decoding and encoding, OpenCV warps, PIL
and zlib compression, file writes, CUDA calls) releases the GIL.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, TypeVar

T = TypeVar("T")

# How often a blocked thread looks up to see whether the other side has stopped, in seconds.
POLL_S = 0.1

_END = object()


class _Failed:
    """A producer's exception, carried through the queue to the consumer."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _put(q: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    """Put ``item`` unless ``stop`` is set first (False then)."""
    while not stop.is_set():
        try:
            q.put(item, timeout=POLL_S)
            return True
        except queue.Full:
            continue
    return False


def prefetch(items: Iterable[T], depth: int, name: str) -> Iterator[T]:
    """``items``, produced by a thread up to ``depth`` items ahead of the caller.

    Args:
        items: the producer (an iterable; it runs in the thread, its exceptions reach the caller).
        depth: items made ahead at most; 0 = no thread, ``items`` as they are.
        name: the thread's name (logs, debuggers).

    Yields:
        the items in their order. Closing the iterator early stops the producer after the item
        it is making.
    """
    if depth <= 0:
        yield from items
        return
    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if not _put(q, item, stop):
                    return
            _put(q, _END, stop)
        except BaseException as exc:  # noqa: BLE001 — handed to the consumer, which raises it
            _put(q, _Failed(exc), stop)
        finally:
            close = getattr(items, "close", None)
            if close is not None and stop.is_set():
                close()  # a generator stopped early runs its cleanup in its own thread

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()


class OrderedWriter:
    """Runs submitted calls in one thread, in submission order, with at most ``depth`` waiting.

    Use as a context manager: leaving the block waits for every submitted call. The first error
    of a call is raised by the next `submit` or when the block ends (the calls after it are
    dropped). When the block itself fails, the calls still waiting are dropped, the one running
    finishes, and the block's error goes on.

    Args:
        depth: calls waiting at most (`submit` blocks beyond); 0 = each call runs in `submit`.
        name: the thread's name.
    """

    def __init__(self, depth: int, name: str) -> None:
        self._depth = depth
        self._name = name
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(depth, 1))
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> OrderedWriter:
        if self._depth > 0:
            self._thread = threading.Thread(target=self._work, name=self._name, daemon=True)
            self._thread.start()
        return self

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Queue ``fn(*args, **kwargs)``; raises the error of an earlier call, if one failed."""
        self._raise_error()
        if self._thread is None:
            fn(*args, **kwargs)
            return
        if not _put(self._queue, (fn, args, kwargs), self._stop):
            self._raise_error()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._thread is None:
            return
        if exc is not None:
            self._stop.set()  # drop what waits; the running call ends on its own
        else:
            _put(self._queue, _END, self._stop)
        self._thread.join()
        if exc is None:
            self._raise_error()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                item = self._queue.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if item is _END:
                return
            fn, args, kwargs = item
            try:
                fn(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 — raised in the submitting thread
                self._error = exc
                self._stop.set()
                return
