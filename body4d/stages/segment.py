"""Segmentation stage: every target through the whole video, forwards and backwards.

Inputs are a `models.sam3.TrackerSession` holding the user's prompts (or none) and, for
automatic mode, a detector ``detect(frame) -> Detections``. Output is a `MaskTrack`: one uint8
label map per frame (pixel = object id, 0 = background; where masks overlap the higher id wins,
as in `body4d.masks.masks_to_labels`).

Order of work:

1. **Forward** from the earliest prompted frame ``E`` (frame 0 in automatic mode) to the last
   frame in the main session. A target is written on frame ``f`` only from its own first prompt
   on (``f >= first(obj)``). With a detector, frames ``0, N, 2N, ...`` (``N = redetect_every``;
   ``0`` = the first frame only) are searched for people; a detection whose mask IoU with every
   current target is at most ``redetect_iou`` becomes a new target (next free id, never reused)
   prompted by its mask on that frame. An empty first frame is fine: nothing is tracked until
   someone is found.
2. **Backwards** for every group of targets sharing a first prompt frame ``p > 0``: a separate
   session holding only that group with all its prompts tracks ``p-1, p-2, ..., 0`` in
   reverse. A late arrival detected on frame 60 is thus also found on frames 45..59 where it was
   already visible, and the main session's memory of the other targets is not disturbed.

Why a `MaskTrack` and not a generator of final label maps: step 2 adds late arrivals to frames
that step 1 already produced, so no frame is final before the end. Progress is reported after
every tracked frame (``"<phase> frame <i>"``); cancellation is checked before every frame.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from body4d.jobs import Job
from body4d.types import Click, MaskTrack, Prompts
from models.frames import MAX_OBJ_ID, PromptError
from models.sam3 import Detections, TrackerSession, check_clicks

log = logging.getLogger(__name__)

FORWARD = "forward"
BACKWARD = "backward"


@dataclass(frozen=True)
class SegmentResult:
    """Output of `segment_video`.

    Attributes:
        track: label maps ``uint8[T, H, W]`` and the ids of every target.
        areas: ``int64[T, N]`` pixels of each target's own mask per frame, before overlaps are
            resolved in the label map (columns in ``track.obj_ids`` order; 0 = lost there).
        first_frames: ``{obj_id: first prompted frame}`` (detection frame for found people).
    """

    track: MaskTrack
    areas: np.ndarray
    first_frames: dict[int, int]


Detector = Callable[[np.ndarray], Detections]


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks (0 when both are empty)."""
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b)) / union if union else 0.0


def select_new_detections(
    detections: Detections, tracked: Mapping[int, np.ndarray], iou_threshold: float
) -> list[int]:
    """Indices of detections that are not any tracked target (greedy, in score order).

    A detection is new when its mask IoU with every tracked mask, and with every detection
    already accepted here, is at most ``iou_threshold``. Empty detection masks are ignored.

    Args:
        detections: candidates sorted by decreasing score, masks ``bool[N, H, W]``.
        tracked: ``{obj_id: bool[H, W]}`` masks of the current targets on the same frame.
        iou_threshold: the ``sam3.redetect_iou`` value in (0, 1].
    """
    taken = [np.asarray(m, dtype=bool) for m in tracked.values()]
    new: list[int] = []
    for i, mask in enumerate(detections.masks):
        if not mask.any():
            continue
        if all(mask_iou(mask, other) <= iou_threshold for other in taken):
            new.append(i)
            taken.append(mask)
    return new


def _clicks_by_frame(clicks: tuple[Click, ...]) -> list[tuple[int, list[Click]]]:
    """Group clicks per frame; frames with a positive click first (so refinements are accepted)."""
    by_frame: dict[int, list[Click]] = {}
    for click in clicks:
        by_frame.setdefault(click.frame, []).append(click)
    return sorted(by_frame.items(), key=lambda kv: (not any(c.positive for c in kv[1]), kv[0]))


def check_prompts(prompts: Prompts, n_frames: int, height: int, width: int) -> None:
    """Validate every click of ``prompts`` against the video size without any network.

    Raises:
        PromptError: as `models.sam3.check_clicks`.
    """
    for obj_id in prompts.obj_ids:
        for i, (frame, clicks) in enumerate(_clicks_by_frame(prompts.clicks[obj_id])):
            check_clicks(obj_id, frame, clicks, n_frames, height, width, has_other_prompts=i > 0)


def apply_prompts(session: TrackerSession, prompts: Prompts) -> None:
    """Send every object's clicks to the session, frame by frame (object ids kept as given).

    Raises:
        PromptError: a click outside the video or frame, a bad id, or negative-only clicks.
    """
    check_prompts(prompts, session.n_frames, session.height, session.width)
    for i, obj_id in enumerate(prompts.obj_ids):
        # Every prompted frame runs the network once: with many targets this takes a while
        # before the first tracked frame is reported, so each target is logged.
        log.info("prompting target %d (%d of %d)", obj_id, i + 1, len(prompts.obj_ids))
        for frame, clicks in _clicks_by_frame(prompts.clicks[obj_id]):
            session.add_points(obj_id, frame, clicks)


def _paint(labels: np.ndarray, obj_id: int, mask: np.ndarray) -> None:
    """Write ``obj_id`` where ``mask`` is set unless a higher id is already there."""
    labels[mask & (labels < obj_id)] = obj_id


def segment_video(
    session: TrackerSession,
    *,
    detect: Detector | None,
    redetect_every: int,
    redetect_iou: float,
    job: Job | None = None,
    out: np.ndarray | None = None,
) -> SegmentResult:
    """Segment every target on every frame.

    Args:
        session: tracker session on the video, with the user's prompts (may be empty when
            ``detect`` is given). Its tracked state is reset first; prompts are kept, and
            detected people are added to it as new targets.
        detect: automatic people detector (``Sam3Models.detect`` with the prompt and threshold
            bound), or None for prompts only.
        redetect_every: search for new people every this many frames (0 = first frame only).
        redetect_iou: a detection with mask IoU above this with a target is that target.
        job: progress after every tracked frame, cancellation before every frame.
        out: optional ``uint8[T, H, W]`` array (e.g. a memmap) to fill instead of allocating.

    Returns:
        `SegmentResult`; its track lists every target id, also those empty on every frame.

    Raises:
        PromptError: no prompted target and no detector, or nobody detected anywhere.
        Cancelled: the job was cancelled.
    """
    n, height, width = session.n_frames, session.height, session.width
    if redetect_every < 0:
        raise ValueError(f"redetect_every must be >= 0, got {redetect_every}")
    if not session.obj_ids and detect is None:
        raise PromptError("no targets to segment: click on at least one person (or use automatic detection)")
    if out is None:
        labels = np.zeros((n, height, width), dtype=np.uint8)
    else:
        if out.shape != (n, height, width) or out.dtype != np.uint8:
            raise ValueError(f"out must be uint8{[n, height, width]}, got {out.dtype}{list(out.shape)}")
        labels = out
        labels[...] = 0

    areas: dict[int, np.ndarray] = {}

    def record(frame: int, oid: int, mask: np.ndarray) -> None:
        areas.setdefault(oid, np.zeros(n, dtype=np.int64))[frame] = np.count_nonzero(mask)
        _paint(labels[frame], oid, mask)

    session.reset_tracking()
    first = {oid: session.first_prompt_frame(oid) for oid in session.obj_ids}
    start = min(first.values()) if first else 0
    backward_frames = sum(set(first.values()) - {0})  # one backward pass per first-prompt frame
    counter = _Counter(total=n - start + backward_frames, job=job)

    # 1. forward, main session (+ re-detection)
    for frame in range(start, n):
        counter.check()
        current: dict[int, np.ndarray] = {}
        if session.obj_ids:
            current = session.track(frame).masks
            for oid in sorted(current):
                if first[oid] <= frame:
                    record(frame, oid, current[oid])
        if detect is not None and _is_detection_frame(frame, start, redetect_every):
            added = _add_new_people(session, detect, frame, current, redetect_iou)
            if added and frame not in first.values():
                counter.total += frame  # their backward pass
            for oid, mask in added.items():
                first[oid] = frame
                record(frame, oid, mask)
        counter.step(frame, FORWARD)

    if not first:
        raise PromptError(
            "nobody was detected in the video: lower sam3.detection_threshold, re-detect more often "
            "(sam3.redetect_every) or give prompts"
        )

    # 2. backward, one session per group of targets sharing a first prompt frame
    groups: dict[int, list[int]] = {}
    for oid, frame in first.items():
        if frame > 0:
            groups.setdefault(frame, []).append(oid)
    for prompt_frame, ids in sorted(groups.items()):
        log.info("tracking %s backwards from frame %d", ids, prompt_frame)
        back = session.spawn(ids)
        for frame in range(prompt_frame - 1, -1, -1):
            counter.check()
            masks = back.track(frame, reverse=True).masks
            for oid in sorted(ids):
                record(frame, oid, masks[oid])
            counter.step(frame, BACKWARD)

    ids = tuple(sorted(first))
    table = np.stack([areas.get(oid, np.zeros(n, dtype=np.int64)) for oid in ids], axis=1)
    return SegmentResult(MaskTrack(obj_ids=ids, labels=labels), table, dict(sorted(first.items())))


def _is_detection_frame(frame: int, start: int, every: int) -> bool:
    if frame == start:
        return True
    return every > 0 and frame % every == 0


def _add_new_people(
    session: TrackerSession,
    detect: Detector,
    frame: int,
    current: dict[int, np.ndarray],
    iou_threshold: float,
) -> dict[int, np.ndarray]:
    """Detect on ``frame``; prompt every new person as a new target. Returns ``{new_id: mask}``."""
    detections = detect(session.frame(frame))
    new = select_new_detections(detections, current, iou_threshold)
    added: dict[int, np.ndarray] = {}
    next_id = max(session.obj_ids, default=0) + 1
    for i in new:
        if next_id > MAX_OBJ_ID:
            log.warning("more than %d targets: ignoring further detections from frame %d", MAX_OBJ_ID, frame)
            break
        added[next_id] = session.add_mask(next_id, frame, detections.masks[i])
        log.info("frame %d: new person %d (score %.3f)", frame, next_id, float(detections.scores[i]))
        next_id += 1
    return added


class _Counter:
    """Progress bookkeeping and cancellation for `segment_video`."""

    def __init__(self, total: int, job: Job | None) -> None:
        self.done = 0
        self.total = total
        self._job = job

    def check(self) -> None:
        if self._job is not None:
            self._job.check()

    def step(self, frame: int, phase: str) -> None:
        self.done += 1
        if self._job is not None:
            self._job.report(self.done / max(self.total, 1), f"{phase} frame {frame}")
