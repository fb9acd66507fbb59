"""Temporal consistency of MHR body tracks: MHR parameters <-> `PoseSequence`, then `smooth_track`.

The MHR body pose vector (133) holds 23 three-DoF joints as Euler angles (x, y, z with
R = Rz Ry Rx, scipy's extrinsic ``"xyz"``), 58 one-DoF joint angles and 6 translations; the
root rotation (3) uses the same convention. Three-DoF joints and the root become rotation
matrices (smoothed as quaternions), one-DoF angles are smoothed wrap-aware, translations and
hand PCA linearly; shape and scale are locked per identity. Everything runs per identity over
the whole sequence, never per batch.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from body4d.config import SmoothingConfig
from body4d.stages.smooth import PoseSequence, euler_to_matrix, matrix_to_euler, smooth_track
from body4d.types import BodyTrack
from models.sam_3d_body.mhr_layout import BODY_1DOF_IDXS, BODY_3DOF_IDXS, BODY_TRANS_IDXS

EULER_ORDER = "xyz"
_IDX3 = BODY_3DOF_IDXS
_IDX1 = BODY_1DOF_IDXS
_IDXT = BODY_TRANS_IDXS


def track_to_sequence(track: BodyTrack) -> PoseSequence:
    """A `BodyTrack`'s parameters as a `PoseSequence` (invalid rows become identity / zeros)."""
    valid = track.valid
    n = len(track.frames)

    def clean(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a, dtype=np.float64).copy()
        a[~valid] = 0.0
        return a

    body = clean(track.body_pose)
    return PoseSequence.create(
        frames=track.frames,
        valid=valid,
        global_rot=euler_to_matrix(clean(track.global_rot), EULER_ORDER),
        cam_t=clean(track.cam_t),
        body_pose=euler_to_matrix(body[:, _IDX3], EULER_ORDER).reshape(n, -1, 3, 3),
        joint_angles=body[:, _IDX1],
        body_linear=body[:, _IDXT],
        hand=clean(track.hand_pose),
        shape=clean(track.shape),
        scale=clean(track.scale),
        expr=clean(track.expression),
        filled=track.filled,
    )


def sequence_to_track(seq: PoseSequence, like: BodyTrack) -> BodyTrack:
    """Write a smoothed `PoseSequence` back into the layout of ``like`` (rows still invalid stay NaN)."""
    n = len(seq.frames)
    body = np.zeros((n, like.body_pose.shape[1]), dtype=np.float64)
    body[:, _IDX3] = matrix_to_euler(seq.body_pose, EULER_ORDER)
    body[:, _IDX1] = seq.joint_angles
    body[:, _IDXT] = seq.body_linear
    # Entries that are neither joints nor translations (none in MHR today) keep their input values.
    rest = np.setdiff1d(np.arange(body.shape[1]), np.concatenate([_IDX3.ravel(), _IDX1, _IDXT]))
    body[:, rest] = np.nan_to_num(like.body_pose[:, rest])
    fields = {
        "global_rot": matrix_to_euler(seq.global_rot, EULER_ORDER),
        "body_pose": body,
        "hand_pose": seq.hand,
        "shape": seq.shape,
        "scale": seq.scale,
        "expression": seq.expr,
        "cam_t": seq.cam_t,
    }
    out = {}
    for name, value in fields.items():
        arr = np.asarray(value, dtype=np.float32).copy()
        arr[~seq.valid] = np.nan
        out[name] = arr
    focal = _fill_nearest(like.focal, seq.valid)
    box = _fill_nearest(like.box, seq.valid)
    return replace(like, valid=seq.valid.copy(), filled=seq.filled.copy(), focal=focal, box=box, **out)


def make_consistent(track: BodyTrack, cfg: SmoothingConfig, fps: float) -> BodyTrack:
    """Smooth, gap-fill and shape-lock one identity (see `body4d.stages.smooth.smooth_track`)."""
    if not track.valid.any():
        return track
    return sequence_to_track(smooth_track(track_to_sequence(track), cfg, fps), track)


def _fill_nearest(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Rows that became valid by filling take the nearest observed row's value (focal, box)."""
    values = np.asarray(values, dtype=np.float32).copy()
    observed = np.flatnonzero(np.isfinite(values.reshape(len(values), -1)).all(axis=1))
    if observed.size == 0:
        return values
    for row in np.flatnonzero(valid & ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)):
        values[row] = values[observed[np.argmin(np.abs(observed - row))]]
    return values
