"""Progress and cancellation of long work: one `Job` per stage, one `Cancelled` for every stage."""

from __future__ import annotations

from collections.abc import Callable

# progress(stage, fraction in [0, 1], message)
ProgressFn = Callable[[str, float, str], None]
CancelFn = Callable[[], bool]


class Cancelled(Exception):  # noqa: N818 - the name says what happened, like KeyboardInterrupt
    """The user stopped the work; the stage that was running keeps none of its partial results."""


class Job:
    """What a stage may do about progress and cancellation.

    Args:
        stage: the stage name reported with every progress call.
        progress: ``progress(stage, fraction, message)``, or None.
        should_cancel: polled by `check`; True means stop.
    """

    def __init__(self, stage: str, progress: ProgressFn | None = None, should_cancel: CancelFn | None = None):
        self.stage = stage
        self._progress = progress
        self._should_cancel = should_cancel

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

        return Job(self.stage, report, self._should_cancel)

    def check(self) -> None:
        """Raise `Cancelled` when the user asked to stop."""
        if self._should_cancel is not None and self._should_cancel():
            raise Cancelled(f"{self.stage} cancelled")
