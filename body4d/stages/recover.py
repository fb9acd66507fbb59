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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from body4d.jobs import Job
from body4d.masks import mask_box
from body4d.types import BodyTrack, Intrinsics
from models.sam_3d_body.mhr_layout import NUM_KP

if TYPE_CHECKING:
    from models.sam_3d_body import BodyEstimate, SAM3DBody

log = logging.getLogger(__name__)

# Masks smaller than this many pixels are treated as absent (a few stray pixels give no body).
MIN_MASK_PIXELS = 16
# Bodies per call when rebuilding keypoints from (smoothed) parameters.
REFIT_BATCH = 32


@dataclass(frozen=True)
class FrameInput:
    """What the stage needs for one frame.

    Attributes:
        index: global frame index.
        image: RGB ``uint8[H, W, 3]``.
        labels: ``uint8[H, W]`` label map (pixel = object id).
    """

    index: int
    image: np.ndarray
    labels: np.ndarray


def recover_bodies(
    frames: Iterable[FrameInput],
    n_frames: int,
    intrinsics: Intrinsics,
    model: SAM3DBody,
    *,
    batch_size: int,
    inference_type: str,
    job: Job | None = None,
) -> dict[int, BodyTrack]:
    """Estimate every target on every frame where its mask is present.

    Args:
        frames: the frames in increasing index order (streamed; only one batch is held).
        n_frames: total number of frames (for progress).
        intrinsics: the video's camera (one K for all frames).
        model: the loaded SAM-3D-Body port.
        batch_size: crops per network call.
        inference_type: ``"full"`` or ``"body"``.
        job: progress after each batch, cancellation checked per frame.

    Returns:
        ``{obj_id: BodyTrack}`` spanning each id's first to last frame; frames where the id is
        absent are invalid rows (NaN).
    """
    from models.sam_3d_body import BodyItem

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
        if job is not None:
            job.report((last_index + 1) / max(n_frames, 1), f"frame {last_index + 1}/{n_frames}")

    for fi in frames:
        if job is not None:
            job.check()
        if fi.index <= last_index:
            raise ValueError(f"frames must come in increasing order; got {fi.index} after {last_index}")
        last_index = fi.index
        for obj_id in (int(i) for i in np.unique(fi.labels) if i != 0):
            mask = fi.labels == obj_id
            if np.count_nonzero(mask) < MIN_MASK_PIXELS:
                continue
            box = np.asarray(mask_box(mask), dtype=np.float32)
            pending.append((fi.index, obj_id, BodyItem(image=fi.image, box=box, mask=mask, K=K)))
        if len(pending) >= batch_size:
            flush()
    flush()
    if job is not None and last_index + 1 < n_frames:  # trailing frames without anyone
        job.report(1.0, f"frame {n_frames}/{n_frames}")
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
        keypoints_3d=stack(lambda e: e.keypoints_3d + e.cam_t, (NUM_KP, 3)),
        keypoints_2d=stack(lambda e: e.keypoints_2d, (NUM_KP, 2)),
    )


def refit_keypoints(track: BodyTrack, model: SAM3DBody, intrinsics: Intrinsics) -> BodyTrack:
    """``track`` with its keypoints rebuilt from its own parameters (e.g. after smoothing).

    3D keypoints come from the body model (``cam_t`` applied), 2D ones from projecting them with
    the run's K; rows that are not valid hold NaN.
    """
    n = len(track.frames)
    kp3d = np.full((n, NUM_KP, 3), np.nan, dtype=np.float32)
    rows = np.flatnonzero(track.valid)
    for chunk, _, kps in posed_rows(track, model, rows, REFIT_BATCH):
        kp3d[chunk] = kps + track.cam_t[chunk][:, None, :]
    return replace(track, keypoints_3d=kp3d, keypoints_2d=project(kp3d, intrinsics.K))


def posed_rows(
    track: BodyTrack, model: SAM3DBody, rows: np.ndarray, batch: int
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Evaluate the body model on ``track``'s parameters, ``batch`` rows per call.

    Yields:
        ``(rows, vertices [k, 18439, 3], keypoints [k, 70, 3])`` relative to the model origin
        (add ``cam_t``), metres, camera axes.
    """
    for start in range(0, len(rows), batch):
        chunk = rows[start : start + batch]
        verts, kps = model.mesh_from_params(*(getattr(track, name)[chunk] for name in BodyTrack.PARAM_FIELDS))
        yield chunk, verts, kps


def project(points: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pinhole projection of camera-frame points ``[..., 3]`` (metres) to pixels ``[..., 2]``."""
    K = np.asarray(K, dtype=np.float64)
    z = points[..., 2:3]
    return ((points[..., :2] * np.array([K[0, 0], K[1, 1]]) + np.array([K[0, 2], K[1, 2]]) * z) / z).astype(
        np.float32
    )
