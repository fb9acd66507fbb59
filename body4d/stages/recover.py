"""Mesh-recovery stage: one SAM-3D-Body estimate per target per frame, batched across frames.

For every frame and every object id present in that frame's label map, the crop box is the
mask's tight box (the model pads it by ``sam_3d_body.bbox_padding``) and the mask is the
prompt. Items are batched over frames x targets up to ``sam_3d_body.batch_size`` per network
call; each person's result is independent of who else is in the batch (the port's choice), so
a batch that runs out of GPU memory is retried at half the size (`body4d.memory.HalvingBatch`:
the size used is noted in the stage's manifest entry) and gives the same estimates.
Ids are whatever the masks hold: frames without anyone, non-contiguous ids, a person seen on a
single frame, or a lower id vanishing while a higher one stays are all ordinary cases.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from body4d.jobs import Job
from body4d.masks import mask_box
from body4d.memory import HalvingBatch
from body4d.overlap import prefetch
from body4d.types import BodyTrack, CompletedFrame, Intrinsics
from models.sam_3d_body.mhr_layout import NUM_KP

if TYPE_CHECKING:
    from models.sam_3d_body import BodyEstimate, BodyItem, SAM3DBody
    from models.sam_3d_body.predictor import PreparedCrops

log = logging.getLogger(__name__)

# Masks smaller than this many pixels are treated as absent (a few stray pixels give no body).
MIN_MASK_PIXELS = 16
# Batches cut ahead of the network. One hides the cutting whenever a batch's network time exceeds
# it (the case on a GPU: benchmarks/throughput.py), and each holds ~7 MB per person (crops, rays
# and the full-frame mask), ~450 MB at the default batch_size of 64, on the device with CUDA.
AHEAD_BATCHES = 1
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
    queue_depth: int = 0,
) -> dict[int, BodyTrack]:
    """Estimate every target on every frame where its mask is present.

    Args:
        frames: the frames in increasing index order (streamed; only one batch is held).
        n_frames: total number of frames (for progress).
        intrinsics: the video's camera (one K for all frames).
        model: the loaded SAM-3D-Body port.
        batch_size: crops per network call (halved on out-of-memory, noted on ``job``).
        inference_type: ``"full"`` or ``"body"``.
        job: progress after each batch, cancellation checked per frame.
        queue_depth: ``runtime.queue_depth``; above 0 the next batch is read and cropped in a
            thread while the network runs (`AHEAD_BATCHES`), at 0 one step after the other.

    Returns:
        ``{obj_id: BodyTrack}`` spanning each id's first to last frame; frames where the id is
        absent are invalid rows (NaN).
    """
    results = _estimates(
        frames, n_frames, intrinsics, model, None, batch_size, inference_type, job, queue_depth
    )
    return {obj_id: _track(obj_id, per_frame) for obj_id, per_frame in sorted(results.items())}


def recover_changed(
    previous: dict[int, BodyTrack],
    frames: Iterable[FrameInput],
    changed: Mapping[int, Collection[int]],
    n_frames: int,
    intrinsics: Intrinsics,
    model: SAM3DBody,
    *,
    batch_size: int,
    inference_type: str,
    job: Job | None = None,
    queue_depth: int = 0,
) -> dict[int, BodyTrack]:
    """`recover_bodies` after a mask repair: only the changed person-frames are estimated again.

    Every row of ``previous`` outside ``changed`` is kept as it is. A changed person-frame becomes
    the new estimate where the person's mask is present and an invalid row where it is not; each
    track is then cut to its first and last valid row (a person left without any is dropped), so
    the result is what `recover_bodies` gives on the repaired masks.

    Args:
        previous: the tracks recovered from the masks before the repair.
        frames: the frames holding a changed person-frame, in increasing index order.
        changed: ``{obj_id: frames}`` whose mask changed.
        n_frames, intrinsics, model, batch_size, inference_type, job, queue_depth: as
            `recover_bodies`.

    Returns:
        ``{obj_id: BodyTrack}`` on the repaired masks.
    """
    results = _estimates(
        frames, n_frames, intrinsics, model, changed, batch_size, inference_type, job, queue_depth
    )
    out: dict[int, BodyTrack] = {}
    for obj_id in sorted(set(previous) | set(results)):
        per_frame = results.get(obj_id, {})
        track = previous.get(obj_id)
        if track is not None:
            track = _without(track, changed.get(obj_id, ()))
            track = _with_estimates(track, per_frame) if per_frame else track
        elif per_frame:
            track = _track(obj_id, per_frame)
        if track is not None and track.valid.any():
            out[obj_id] = _trimmed(track)
    return out


@dataclass(frozen=True)
class _Batch:
    """One network call's worth of person-frames, cut ahead of the call.

    Attributes:
        keys: ``(frame, obj_id)`` of each item.
        items: the items.
        prepared: their crops (`SAM3DBody.prepare`).
        last_index: every person-frame up to this frame is in this batch or an earlier one.
    """

    keys: list[tuple[int, int]]
    items: list[BodyItem]
    prepared: PreparedCrops
    last_index: int


def _estimates(
    frames: Iterable[FrameInput],
    n_frames: int,
    intrinsics: Intrinsics,
    model: SAM3DBody,
    wanted: Mapping[int, Collection[int]] | None,
    batch_size: int,
    inference_type: str,
    job: Job | None,
    queue_depth: int,
) -> dict[int, dict[int, Row]]:
    """``{obj_id: {frame: estimate row}}`` of every present person-frame (only ``wanted`` ones if given).

    Reading the frames, finding the people in the label maps and cutting their crops run in a
    thread `AHEAD_BATCHES` ahead of the network calls when ``queue_depth`` > 0
    (`body4d.overlap.prefetch`; 0 = one after the other), so the device does not wait for them.
    """
    results: dict[int, dict[int, Row]] = {}
    batch = HalvingBatch(batch_size, "batch_size", job)
    last_index = -1
    made = _batches(frames, intrinsics, model, wanted, batch, job)
    for b in prefetch(made, min(queue_depth, AHEAD_BATCHES), "body4d-recover-crops"):
        if job is not None:
            job.check()

        def call(part: Sequence[BodyItem], size: int, b: _Batch = b) -> list[BodyEstimate]:
            prepared = b.prepared if len(part) == len(b.items) else None  # a halved part: cut again
            return model.predict(
                list(part), inference_type=inference_type, batch_size=size, prepared=prepared
            )

        for (frame, obj_id), est in zip(b.keys, batch.map(call, b.items), strict=True):
            results.setdefault(obj_id, {})[frame] = _row(est)
        last_index = b.last_index
        if job is not None:
            job.report((last_index + 1) / max(n_frames, 1), f"frame {last_index + 1}/{n_frames}")
    if job is not None and last_index + 1 < n_frames:  # trailing frames without anyone
        job.report(1.0, f"frame {n_frames}/{n_frames}")
    return results


def _batches(
    frames: Iterable[FrameInput],
    intrinsics: Intrinsics,
    model: SAM3DBody,
    wanted: Mapping[int, Collection[int]] | None,
    batch: HalvingBatch,
    job: Job | None,
) -> Iterator[_Batch]:
    """The present person-frames of ``frames`` in batches of ``batch.size`` items (the last one
    smaller), each with its crops cut (the size is read as each batch is made: it halves when a
    batch runs out of memory)."""
    from models.sam_3d_body import BodyItem

    K = np.asarray(intrinsics.K, dtype=np.float64)
    keys: list[tuple[int, int]] = []
    items: list[BodyItem] = []
    last_index = -1

    def made(n: int, done: int) -> _Batch:
        """The first ``n`` pending items, all frames up to ``done`` being in them or before."""
        chunk = items[:n]
        out = _Batch(keys[:n], chunk, model.prepare(chunk), done)
        del keys[:n], items[:n]
        return out

    for fi in frames:
        if job is not None:
            job.check()
        if fi.index <= last_index:
            raise ValueError(f"frames must come in increasing order; got {fi.index} after {last_index}")
        last_index = fi.index
        for obj_id in (int(i) for i in np.unique(fi.labels) if i != 0):
            if wanted is not None and fi.index not in wanted.get(obj_id, ()):
                continue
            mask = fi.labels == obj_id
            if np.count_nonzero(mask) < MIN_MASK_PIXELS:
                continue
            box = np.asarray(mask_box(mask), dtype=np.float32)
            keys.append((fi.index, obj_id))
            items.append(BodyItem(image=fi.image, box=box, mask=mask, K=K))
        while len(items) >= batch.size:
            size = batch.size
            yield made(size, fi.index if len(items) == size else keys[size][0] - 1)
    if items:
        yield made(len(items), last_index)


# BodyTrack field -> (value of one estimate, per-row shape).
_ESTIMATE_FIELDS: dict[str, tuple[Callable[[BodyEstimate], np.ndarray], tuple[int, ...]]] = {
    "box": (lambda e: e.box, (4,)),
    "focal": (lambda e: e.focal_length, ()),
    "cam_t": (lambda e: e.cam_t, (3,)),
    "global_rot": (lambda e: e.global_rot, (3,)),
    "body_pose": (lambda e: e.body_pose, (133,)),
    "hand_pose": (lambda e: e.hand_pose, (108,)),
    "shape": (lambda e: e.shape, (45,)),
    "scale": (lambda e: e.scale, (28,)),
    "expression": (lambda e: e.expression, (72,)),
    "keypoints_3d": (lambda e: e.keypoints_3d + e.cam_t, (NUM_KP, 3)),
    "keypoints_2d": (lambda e: e.keypoints_2d, (NUM_KP, 2)),
}


# The values of one estimate a track keeps (`_ESTIMATE_FIELDS`), as copies of their own.
Row = dict[str, np.ndarray]


def _row(est: BodyEstimate) -> Row:
    """What a track keeps of ``est``, copied: an estimate's arrays are views of its batch's host
    buffer, mesh vertices included (0.2 MB per person-frame), which would stay alive with them."""
    return {name: np.array(get(est), dtype=np.float32) for name, (get, _) in _ESTIMATE_FIELDS.items()}


def _track(obj_id: int, per_frame: dict[int, Row]) -> BodyTrack:
    first, last = min(per_frame), max(per_frame)
    frames = np.arange(first, last + 1, dtype=np.int64)
    n = len(frames)
    empty = {
        name: np.full((n, *shape), np.nan, dtype=np.float32) for name, (_, shape) in _ESTIMATE_FIELDS.items()
    }
    track = BodyTrack(
        obj_id=obj_id, frames=frames, valid=np.zeros(n, dtype=bool), filled=np.zeros(n, dtype=bool), **empty
    )
    return _with_estimates(track, per_frame)


def _with_estimates(track: BodyTrack, per_frame: dict[int, Row]) -> BodyTrack:
    """``track`` with the rows of ``per_frame``'s frames replaced by those estimates (made valid).

    The track is widened (invalid NaN rows) when a frame lies outside its span.
    """
    lo = min(int(track.frames[0]), *per_frame) if len(track.frames) else min(per_frame)
    hi = max(int(track.frames[-1]), *per_frame) if len(track.frames) else max(per_frame)
    frames = np.arange(lo, hi + 1, dtype=np.int64)
    offset = int(track.frames[0]) - lo if len(track.frames) else 0
    rows = slice(offset, offset + len(track.frames))

    def widen(old: np.ndarray, fill: object) -> np.ndarray:
        out = np.full((len(frames), *old.shape[1:]), fill, dtype=old.dtype)
        out[rows] = old
        return out

    arrays = {name: widen(getattr(track, name), np.nan) for name in _ESTIMATE_FIELDS}
    valid, filled = widen(track.valid, False), widen(track.filled, False)
    for f, values in per_frame.items():
        row = f - lo
        for name in _ESTIMATE_FIELDS:
            arrays[name][row] = values[name]
        valid[row], filled[row] = True, False
    return BodyTrack(obj_id=track.obj_id, frames=frames, valid=valid, filled=filled, **arrays)


def _without(track: BodyTrack, frames: Collection[int]) -> BodyTrack:
    """``track`` with the rows of ``frames`` made invalid (NaN), e.g. before they are estimated again."""
    rows = np.flatnonzero(np.isin(track.frames, list(frames)))
    if not len(rows):
        return track
    arrays = {name: getattr(track, name).copy() for name in _ESTIMATE_FIELDS}
    for arr in arrays.values():
        arr[rows] = np.nan
    valid, filled = track.valid.copy(), track.filled.copy()
    valid[rows] = filled[rows] = False
    return replace(track, valid=valid, filled=filled, **arrays)


def _trimmed(track: BodyTrack) -> BodyTrack:
    """``track`` cut to its first and last valid row (it has at least one)."""
    rows = np.flatnonzero(track.valid)
    keep = slice(int(rows[0]), int(rows[-1]) + 1)
    if keep == slice(0, len(track.frames)):
        return track
    return replace(track, **{name: arr[keep] for name, arr in track.arrays().items()})


def recover_completed(
    tracks: dict[int, BodyTrack],
    completed: Sequence[CompletedFrame],
    intrinsics: Intrinsics,
    model: SAM3DBody,
    *,
    batch_size: int,
    inference_type: str,
    job: Job | None = None,
) -> dict[int, BodyTrack]:
    """The second recovery pass: each completed person-frame again, from the completed image and
    the amodal mask (box = the amodal mask's box); every other row is kept as it is.

    Returns:
        ``tracks`` with those rows replaced (people completed but absent from ``tracks`` added).
    """
    from models.sam_3d_body import BodyItem

    if not completed:
        return dict(tracks)
    K = np.asarray(intrinsics.K, dtype=np.float64)
    results: dict[int, dict[int, Row]] = {}
    batch = HalvingBatch(batch_size, "batch_size", job)
    for start in range(0, len(completed), batch_size):
        if job is not None:
            job.check()
        chunk = completed[start : start + batch_size]
        items = []
        for c in chunk:
            image = np.asarray(Image.open(io.BytesIO(c.image)).convert("RGB"))
            mask = np.asarray(Image.open(io.BytesIO(c.mask))) == c.obj_id
            items.append(
                BodyItem(image=image, box=np.asarray(mask_box(mask), dtype=np.float32), mask=mask, K=K)
            )
        estimates = batch.map(
            lambda part, size: model.predict(part, inference_type=inference_type, batch_size=size), items
        )
        for c, est in zip(chunk, estimates, strict=True):
            results.setdefault(c.obj_id, {})[c.frame] = _row(est)
        if job is not None:
            job.report(min(start + batch_size, len(completed)) / len(completed), "completed person-frames")
    out = dict(tracks)
    for obj_id, per_frame in results.items():
        out[obj_id] = (
            _with_estimates(tracks[obj_id], per_frame) if obj_id in tracks else _track(obj_id, per_frame)
        )
    return dict(sorted(out.items()))


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
