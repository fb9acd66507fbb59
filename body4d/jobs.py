"""Progress and cancellation of long work: one `Job` per stage, one `Cancelled` for every stage,
and `interrupt_on_signals` turning SIGINT/SIGTERM into `Interrupted` for the commands."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

# What ``docker stop``, ``timeout`` and Ctrl-C send.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

# progress(stage, fraction in [0, 1], message)
ProgressFn = Callable[[str, float, str], None]
CancelFn = Callable[[], bool]


class Cancelled(Exception):  # noqa: N818 - the name says what happened, like KeyboardInterrupt
    """The user stopped the work; the stage that was running keeps none of its partial results."""


class Interrupted(KeyboardInterrupt):
    """The process got a stop signal (`STOP_SIGNALS`); raised where the main thread was running.

    A KeyboardInterrupt, so no ``except Exception`` swallows it and every cleanup on the way out
    (temporary files, the manifest's stage status) runs as for Ctrl-C.
    """

    def __init__(self, signum: int) -> None:
        self.signal_name = signal.Signals(signum).name
        super().__init__(self.signal_name)


@contextlib.contextmanager
def interrupt_on_signals() -> Iterator[None]:
    """Within the block, the first SIGINT or SIGTERM raises `Interrupted` in the main thread.

    Later signals are logged and ignored until the block ends, so that the cleanup the first one
    started is not cut short. Outside the main thread (where Python cannot set handlers) the
    block runs with the handlers as they are.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def handler(signum: int, _frame: FrameType | None) -> None:
        if received:
            log.warning("%s while stopping: still cleaning up", signal.Signals(signum).name)
            return
        received.append(signum)
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class Job:
    """What a stage may do about progress and cancellation.

    Args:
        stage: the stage name reported with every progress call.
        progress: ``progress(stage, fraction, message)``, or None.
        should_cancel: polled by `check`; True means stop.
        notes: what the stage noted about how it ran (`note`); shared with its spans.
    """

    def __init__(
        self,
        stage: str,
        progress: ProgressFn | None = None,
        should_cancel: CancelFn | None = None,
        notes: dict[str, Any] | None = None,
    ):
        self.stage = stage
        self._progress = progress
        self._should_cancel = should_cancel
        self.notes: dict[str, Any] = {} if notes is None else notes

    def note(self, key: str, value: Any) -> None:
        """Note how the stage ran (e.g. the batch size that fitted in memory); a stage's save
        returns `notes` among its manifest fields."""
        self.notes[key] = value

    def report(self, fraction: float, message: str = "") -> None:
        """Tell the user how far the stage is (``fraction`` in [0, 1])."""
        if self._progress is not None:
            self._progress(self.stage, min(max(fraction, 0.0), 1.0), message)

    def span(self, start: float, end: float) -> Job:
        """A job reporting into ``[start, end]`` of this one's progress (same stage, same cancel),
        e.g. for the part of a stage that saves its result."""
        parent = self

        def report(_stage: str, fraction: float, message: str) -> None:
            parent.report(start + (end - start) * fraction, message)

        return Job(self.stage, report, self._should_cancel, self.notes)

    def check(self) -> None:
        """Raise `Cancelled` when the user asked to stop."""
        if self._should_cancel is not None and self._should_cancel():
            raise Cancelled(f"{self.stage} cancelled")
