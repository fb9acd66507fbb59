"""Mesh-recovery stage: one SAM-3D-Body estimate per target per frame, batched across frames.

For every frame and every object id present in that frame's label map, the crop box is the
mask's tight box (the model pads it by ``sam_3d_body.bbox_padding``) and the mask is the
prompt. Items are batched over frames x targets up to ``sam_3d_body.batch_size`` per network
call; each person's result is independent of who else is in the batch (the port's choice).
Ids are whatever the masks hold: frames without anyone, non-contiguous ids, a person seen on a
single frame, or a lower id vanishing while a higher one stays are all ordinary cases.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from body4d.masks import mask_box
from body4d.types import BodyTrack, Intrinsics
from models.sam_3d_body import BodyEstimate, BodyItem, SAM3DBody

log = logging.getLogger(__name__)

# Masks smaller than this many pixels are treated as absent (a few stray pixels give no body).
MIN_MASK_PIXELS = 16


class RecoverCancelled(RuntimeError):
    """The caller asked to stop; partial results are discarded."""


@dataclass(frozen=True)
class FrameInput:
    """What the stage needs for one frame.

    Attributes:
        index: global frame index.
        image: RGB ``uint8[H, W, 3]``.
        labels: ``uint8[H, W]`` label map (pixel = object id).
        overrides: optional ``{obj_id: (image, mask)}`` replacing the frame and visible mask of
            that person (completed appearance and amodal mask from the occlusion stages).
    """

    index: int
    image: np.ndarray
    labels: np.ndarray
    overrides: dict[int, tuple[np.ndarray, np.ndarray]] | None = None


ProgressFn = Callable[[int, int], None]


def recover_bodies(
    frames: Iterable[FrameInput],
    n_frames: int,
    intrinsics: Intrinsics,
    model: SAM3DBody,
    *,
    batch_size: int = 64,
    inference_type: str = "full",
    progress: ProgressFn | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> dict[int, BodyTrack]:
    """Estimate every target on every frame where its mask is present.

    Args:
        frames: the frames in increasing index order (streamed; only one batch is held).
        n_frames: total number of frames (for progress).
        intrinsics: the video's camera (one K for all frames).
        model: the loaded SAM-3D-Body port.
        batch_size: crops per network call.
        inference_type: ``"full"`` or ``"body"``.
        progress: called as ``progress(frames_done, n_frames)`` after each batch.
        should_cancel: polled per frame; True raises `RecoverCancelled`.

    Returns:
        ``{obj_id: BodyTrack}`` spanning each id's first to last frame; frames where the id is
        absent are invalid rows (NaN).
    """
    K = np.asarray(intrinsics.K, dtype=np.float64)
    pending: list[tuple[int, int, BodyItem]] = []
    results: dict[int, dict[int, BodyEstimate]] = {}
    last_index = -1

    def flush() -> None:
        if not pending:
            return
        estimates = model.predict(
            [it for _, _, it in pending], inference_type=inference_type, batch_size=batch_size
        )
        for (frame, obj_id, _), est in zip(pending, estimates, strict=True):
            results.setdefault(obj_id, {})[frame] = est
        pending.clear()
        if progress is not None:
            progress(last_index + 1, n_frames)

    for fi in frames:
        if should_cancel is not None and should_cancel():
            raise RecoverCancelled(f"mesh recovery cancelled at frame {fi.index}")
        if fi.index <= last_index:
            raise ValueError(f"frames must come in increasing order; got {fi.index} after {last_index}")
        last_index = fi.index
        for obj_id in (int(i) for i in np.unique(fi.labels) if i != 0):
            image, mask = fi.image, fi.labels == obj_id
            if fi.overrides and obj_id in fi.overrides:
                image, mask = fi.overrides[obj_id]
            if np.count_nonzero(mask) < MIN_MASK_PIXELS:
                continue
            box = np.asarray(mask_box(mask), dtype=np.float32)
            pending.append((fi.index, obj_id, BodyItem(image=image, box=box, mask=mask, K=K)))
        if len(pending) >= batch_size:
            flush()
    flush()
    if progress is not None and last_index + 1 < n_frames:  # trailing frames without anyone
        progress(n_frames, n_frames)
    return {obj_id: _track(obj_id, per_frame) for obj_id, per_frame in sorted(results.items())}


def _track(obj_id: int, per_frame: dict[int, BodyEstimate]) -> BodyTrack:
    first, last = min(per_frame), max(per_frame)
    frames = np.arange(first, last + 1, dtype=np.int64)
    n = len(frames)
    valid = np.array([int(f) in per_frame for f in frames])

    def stack(get: Callable[[BodyEstimate], np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
        out = np.full((n, *shape), np.nan, dtype=np.float32)
        for row, f in enumerate(frames):
            est = per_frame.get(int(f))
            if est is not None:
                out[row] = get(est)
        return out

    return BodyTrack(
        obj_id=obj_id,
        frames=frames,
        valid=valid,
        filled=np.zeros(n, dtype=bool),
        box=stack(lambda e: e.box, (4,)),
        focal=stack(lambda e: e.focal_length, ()),
        cam_t=stack(lambda e: e.cam_t, (3,)),
        global_rot=stack(lambda e: e.global_rot, (3,)),
        body_pose=stack(lambda e: e.body_pose, (133,)),
        hand_pose=stack(lambda e: e.hand_pose, (108,)),
        shape=stack(lambda e: e.shape, (45,)),
        scale=stack(lambda e: e.scale, (28,)),
        expression=stack(lambda e: e.expression, (72,)),
    )
