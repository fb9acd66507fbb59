"""Click prompts and targets: each click goes to the current target and, with SAM-3 loaded,
through the session's own tracking session, so the frame shows every target's live mask.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import numpy as np

from body4d.checkpoints import CheckpointReport
from body4d.driver import PipelineModels
from body4d.errors import InputError
from body4d.session import Session
from body4d.stages.segment import apply_prompts
from body4d.types import Click
from body4d.ui.display import FrameView, display_scale, display_to_video, show_frame
from body4d.ui.status import Capabilities, segment_fix
from models.frames import FrameSource, PromptError
from models.sam3 import TrackerSession

log = logging.getLogger(__name__)

PERCENT = 100

TrackerFactory = Callable[[FrameSource], TrackerSession]


@dataclass(frozen=True)
class ClickRequest:
    """A click on the displayed frame.

    Attributes:
        x: column in display pixels.
        y: row in display pixels.
        positive: foreground (True) or background (False) point.
    """

    x: float
    y: float
    positive: bool


@dataclass(frozen=True)
class PromptResult:
    """The frame redrawn after a prompt edit, plus a status sentence."""

    view: FrameView
    message: str


def tracker_factory(models: PipelineModels | None) -> TrackerFactory | None:
    """A function opening a SAM-3 tracking session on a video, or None without SAM-3.

    The session uses the ``sam3`` settings the models were loaded with (caches, mask threshold).

    Args:
        models: the networks loaded by the app (None = not loaded).
    """
    if models is None or models.sam3 is None:
        return None
    return models.sam3.open_session


def session_tracker(session: Session, open_tracker: TrackerFactory) -> TrackerSession:
    """The session's tracking session, opened on first use with every click made so far.

    Args:
        session: the caller's session (with a video).
        open_tracker: opens a tracking session on a video (here `Session.frame_source`, so the
            frame on screen is not decoded again).
    """
    if session.tracker is not None:
        return cast(TrackerSession, session.tracker)
    tracker = open_tracker(session.frame_source())
    apply_prompts(tracker, session.prompts())
    session.tracker = tracker
    log.info("session %s: SAM-3 tracking session opened", session.session_id)
    return tracker


def add_click(
    session: Session,
    request: ClickRequest,
    caps: Capabilities,
    report: CheckpointReport,
    open_tracker: TrackerFactory | None = None,
) -> PromptResult:
    """Record a click on the current frame for the current target; redraw masks and markers.

    With ``open_tracker`` (SAM-3 loaded) the clicks of the current target on this frame go to
    the session's tracker first, and the frame shows every target's live mask; a click SAM-3
    refuses is not recorded.

    Args:
        session: the caller's session.
        request: the click in display pixels.
        caps: what the app can do (why there is no mask preview, if there is none).
        report: checkpoint status (for the fix named in that case).
        open_tracker: opens a SAM-3 tracking session (None = no live masks).

    Raises:
        InputError: no video loaded, or SAM-3 refused the clicks (e.g. only negative ones).
    """
    info = session.require_info()
    scale = display_scale(info.width, info.height)
    x, y = display_to_video(request.x, request.y, scale, info)
    frame, target = session.current_frame, session.current_target
    click = Click(frame=frame, x=x, y=y, positive=request.positive)
    mask_note = ""
    if open_tracker is not None:
        tracker = session_tracker(session, open_tracker)
        clicks = [c for c in session.targets[target] if c.frame == frame] + [click]
        try:
            mask = tracker.add_points(target, frame, clicks)
        except PromptError as exc:
            raise InputError(str(exc)) from exc
        assert tracker.last_masks is not None
        session.set_masks(frame, tracker.last_masks.masks)
        pixels = int(np.count_nonzero(mask))
        share = PERCENT * (pixels / mask.size)
        mask_note = f" Mask of Target {target}: {pixels} px ({share:.1f} % of the frame)."
    session.add_click(click)
    view = show_frame(session, frame)
    count = len(session.targets[target])
    kind = "positive" if click.positive else "negative"
    message = (
        f"Target {target}: {kind} click at (x={x:.0f}, y={y:.0f}) on frame {frame} "
        f"({count} click{'s' if count != 1 else ''} on this target).{mask_note}"
    )
    if caps.segment is not None:
        message += f" No mask preview: {segment_fix(caps, report)}"
    return PromptResult(view, message)


def target_choices(session: Session) -> list[tuple[str, int]]:
    """``(label, id)`` per target for the targets list, e.g. ``("Target 3 · 2 clicks", 3)``."""
    out = []
    for tid, clicks in session.targets.items():
        n = len(clicks)
        out.append((f"Target {tid} · {n} click{'s' if n != 1 else ''}", tid))
    return out


def add_target(session: Session) -> str:
    """Start a new target (refused while the current one has no clicks); returns the status.

    Raises:
        InputError: no video loaded, or the current target has no clicks.
    """
    session.require_info()
    current = session.current_target
    if not session.add_target():
        raise InputError(
            f"Target {current} has no clicks yet: click on a person before adding another target"
        )
    return f"Added Target {session.current_target}: new clicks go to it."


def select_target(session: Session, target_id: int) -> str:
    """Send new clicks to ``target_id``; returns the status.

    Raises:
        InputError: there is no such target.
    """
    try:
        session.select_target(int(target_id))
    except KeyError as exc:
        raise InputError(f"{exc.args[0]}: pick one from the targets list") from exc
    return f"Clicks now go to Target {session.current_target}."


def remove_target(session: Session) -> str:
    """Delete the current target and its clicks; returns the status."""
    removed = session.current_target
    session.remove_target(removed)
    return f"Removed Target {removed}; clicks now go to Target {session.current_target}."


def clear_targets(session: Session) -> str:
    """Delete every target and click; returns the status."""
    session.clear_targets()
    return "Cleared all targets; clicks now go to Target 1."
