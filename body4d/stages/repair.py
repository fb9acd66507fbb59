"""Mask repair: one corrected target re-propagated through finished masks, the others kept.

Input is a `models.sam3.TrackerSession` holding only the corrected target with all its prompts
(its old clicks and the correcting ones), the label maps of the finished masks stage and the
frames ``[first, last]`` that hold the correcting clicks. The target alone is tracked:

1. **Forward** from ``first`` towards the end of the video. Frames up to ``last`` are always
   written; after it, propagation stops as soon as the new mask agrees with the old track on
   ``agree_frames`` consecutive frames (IoU >= ``agree_iou``; a frame where both are empty agrees).
2. **Backwards** from ``first - 1`` towards frame 0 in a fresh session (like the segmentation
   stage's backward pass), with the same stopping rule from its first frame on.

A target that is not in the old track (a person who appeared later) has no old track to agree
with: it is propagated to both ends. The frames of the final agreeing run keep their old labels;
every frame before it is written.

Label rule on a written frame: the repaired target wins on every pixel of its new mask (whatever
id was there), and its old pixels outside the new mask become background (the label map holds one
id per pixel, so what another target had under the old mask is not known). Every other pixel is
left exactly as it was. The person-frames whose mask changed are reported per id: the target's,
and those of any target whose pixels it took or gave back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from body4d.jobs import Job
from body4d.stages.segment import BACKWARD, FORWARD, mask_iou
from models.sam3 import TrackerSession


@dataclass(frozen=True)
class MaskRepair:
    """What re-propagating one target changed.

    Attributes:
        target: the repaired object id.
        new: the target was not in the old track (propagated to both ends).
        span: ``(first, last)`` inclusive frames re-propagated and written.
        changed: ``{obj_id: sorted frames whose mask of that id changed}`` (empty: nothing changed).
    """

    target: int
    new: bool
    span: tuple[int, int]
    changed: dict[int, tuple[int, ...]]

    @property
    def frames_changed(self) -> int:
        """Frames whose label map changed."""
        return len({f for frames in self.changed.values() for f in frames})


def masks_agree(new: np.ndarray, old: np.ndarray, iou: float) -> bool:
    """The new and old boolean masks of a target agree: IoU >= ``iou``, or both empty."""
    if not new.any() and not old.any():
        return True
    return mask_iou(new, old) >= iou


def repair_target(
    tracker: TrackerSession,
    labels: np.ndarray,
    target: int,
    prompt_frames: tuple[int, int],
    *,
    new: bool,
    agree_iou: float,
    agree_frames: int,
    job: Job | None = None,
) -> MaskRepair:
    """Re-propagate ``target`` and write its new masks into ``labels`` (module docstring).

    Args:
        tracker: a session on the video holding ``target`` (only) with all its prompts.
        labels: ``uint8[T, H, W]`` label maps of the finished masks; updated in place.
        target: the object id to repair.
        prompt_frames: ``(first, last)`` frames of the correcting clicks.
        new: ``target`` is not in the old track (no stopping: both ends of the video).
        agree_iou: IoU from which a new mask agrees with the old one (``repair.agree_iou``).
        agree_frames: consecutive agreeing frames that stop propagation (``repair.agree_frames``).
        job: progress after every frame, cancellation before every frame.

    Returns:
        The `MaskRepair` (span written, person-frames changed).

    Raises:
        Cancelled: the job was cancelled (``labels`` may be partly updated: discard them).
    """
    n = labels.shape[0]
    first, last = prompt_frames
    changed: dict[int, set[int]] = {}
    done = 0

    def step(frame: int, phase: str) -> None:
        nonlocal done
        done += 1
        if job is not None:
            job.report(done / n, f"{phase} frame {frame}")

    def write(frame: int, mask: np.ndarray) -> None:
        before = np.asarray(labels[frame])
        after = before.copy()
        after[(before == target) & ~mask] = 0
        after[mask] = target
        diff = after != before
        for obj_id in set(np.unique(before[diff])) | set(np.unique(after[diff])):
            if obj_id:
                changed.setdefault(int(obj_id), set()).add(frame)
        if diff.any():
            labels[frame] = after  # ``before`` may be a view of it: read it first

    def propagate(session: TrackerSession, frames: range, forced: int, phase: str) -> int:
        """Track ``frames`` in order (the first ``forced`` always written) until the agreeing run;
        returns the last frame written (``frames.start - frames.step`` if none)."""
        pending: list[tuple[int, np.ndarray]] = []  # the current run of agreeing frames
        written = frames.start - frames.step
        for k, frame in enumerate(frames):
            if job is not None:
                job.check()
            mask = session.track(frame, reverse=frames.step < 0).masks[target]
            step(frame, phase)
            if not new and k >= forced and masks_agree(mask, np.asarray(labels[frame]) == target, agree_iou):
                pending.append((frame, mask))
                if len(pending) >= agree_frames:
                    break
                continue
            for held, held_mask in pending:
                write(held, held_mask)
            pending.clear()
            write(frame, mask)
            written = frame
        return written

    tracker.reset_tracking()
    hi = propagate(tracker, range(first, n), last - first + 1, FORWARD)
    lo = propagate(tracker.spawn([target]), range(first - 1, -1, -1), 0, BACKWARD) if first > 0 else first
    if job is not None:
        job.report(1.0, "done")
    return MaskRepair(target, new, (lo, hi), {k: tuple(sorted(v)) for k, v in sorted(changed.items())})
