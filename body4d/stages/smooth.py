"""Temporal consistency of one identity's body parameters over its WHOLE sequence (numpy only).

What `smooth_track` does, per identity and never per batch:

1. **Runs.** Valid (visible) frames are grouped into runs: two consecutive valid frames belong to the
   same run when at most ``max_gap`` frame indices lie between them. Filtering and filling never cross
   a longer gap (the person may have been lost), and nothing is ever extrapolated before the first or
   after the last valid frame of a run.
2. **Zero-phase One-Euro filter** over the valid frames of each run, using their true timestamps
   (``frames / fps``). Rotations (global rotation and every 3-DoF joint) are filtered as unit
   quaternions made sign-continuous along time (hemisphere alignment), then re-normalised, so
   rotations near ±pi and the ``q``/``-q`` ambiguity cause no spikes. 1-DoF joint angles are
   unwrapped first. The filter runs forward and backward in time and the two estimates are averaged:
   for the first-order low-pass inside the One-Euro filter this gives the magnitude response
   ``|H|^2`` with zero phase, i.e. no lag.
3. **Gap filling** of invalid frames inside a run, between the smoothed anchors on either side:
   ``"cubic"`` (default) = Hermite splines whose end slopes are the velocities fitted next to the gap
   (for rotations: on the rotation vector relative to the first anchor, ``R_a exp(r(u))``), so the
   fill joins the track without a velocity kink; ``"linear"`` = slerp for rotations and linear
   interpolation for the rest. Filled frames become valid and are flagged in ``filled``.
4. **Shape and scale lock**: per-component median over the valid input frames (robust to outlier
   frames; not the first frame as in the original), written to every frame.

Speeds fed to the One-Euro cutoff (``cutoff = min_cutoff + beta * speed``) are in rad/s for
rotations and joint angles, m/s for ``cam_t`` and units/s for PCA-like coefficients.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from scipy.spatial.transform import Rotation

from body4d.config import SmoothingConfig

log = logging.getLogger(__name__)

FillMode = Literal["linear", "cubic"]

# Largest |R^T R - I| entry and |det R - 1| accepted for an input rotation matrix (float32 network
# outputs are orthonormal to ~1e-6; anything beyond this is not a rotation).
ROTATION_TOLERANCE = 1e-3
# A quaternion's chord speed |dq/dt| is half the angular speed for small steps.
QUAT_SPEED_TO_RAD = 2.0
# Below this angle (rad) between two quaternions slerp degenerates: use normalised lerp instead.
SLERP_MIN_ANGLE = 1e-6

# Expected layout and fixed trailing dims of the array fields (others are [T, D]).
_LAYOUTS: dict[str, tuple[str, int, tuple[int, ...]]] = {
    "global_rot": ("[T, 3, 3]", 3, (3, 3)),
    "body_pose": ("[T, J, 3, 3]", 4, (3, 3)),
    "cam_t": ("[T, 3]", 2, (3,)),
}
_DEFAULT_LAYOUT = ("[T, D]", 2, ())
_FLOAT_FIELDS = (
    "global_rot",
    "body_pose",
    "joint_angles",
    "hand",
    "body_linear",
    "shape",
    "scale",
    "expr",
    "cam_t",
)


@dataclass(frozen=True)
class PoseSequence:
    """All body parameters of one identity over time (one row per listed frame).

    Rows whose ``valid`` is False are ignored as input (their values may be anything, even NaN) and
    are returned unchanged unless they are filled. Use `PoseSequence.create` to omit empty fields.

    Attributes:
        frames: ``int64[T]`` global frame indices, strictly increasing (need not be contiguous: a
            missing index counts as an invisible frame when measuring gaps).
        valid: ``bool[T]`` the row holds a real (visible) estimate.
        global_rot: ``float64[T, 3, 3]`` root rotation matrices (camera frame).
        body_pose: ``float64[T, J, 3, 3]`` local rotations of the 3-DoF joints (J may be 0).
        joint_angles: ``float64[T, A]`` 1-DoF joint angles in radians (A may be 0); wrap-aware.
        hand: ``float64[T, Dh]`` hand pose PCA coefficients (MHR: 108); smoothed linearly.
        body_linear: ``float64[T, L]`` other unbounded body parameters smoothed linearly (e.g. the
            6 MHR body translation entries; L may be 0).
        shape: ``float64[T, S]`` identity shape coefficients (MHR: 45).
        scale: ``float64[T, C]`` skeleton scale coefficients (MHR: 28).
        expr: ``float64[T, E]`` face expression coefficients (MHR: 72); smoothed linearly.
        cam_t: ``float64[T, 3]`` root translation in metres, OpenCV camera frame.
        filled: ``bool[T]`` the row was interpolated across a gap (then ``valid`` is True too).
    """

    frames: np.ndarray
    valid: np.ndarray
    global_rot: np.ndarray
    body_pose: np.ndarray
    joint_angles: np.ndarray
    hand: np.ndarray
    body_linear: np.ndarray
    shape: np.ndarray
    scale: np.ndarray
    expr: np.ndarray
    cam_t: np.ndarray
    filled: np.ndarray

    def __post_init__(self) -> None:
        frames = np.asarray(self.frames)
        if frames.ndim != 1:
            raise ValueError(f"PoseSequence.frames must be 1-D int[T], got shape {frames.shape}")
        if frames.size and not np.issubdtype(frames.dtype, np.integer):
            raise ValueError(f"PoseSequence.frames must hold integer frame indices, got dtype {frames.dtype}")
        frames = frames.astype(np.int64)
        if frames.size > 1 and np.any(np.diff(frames) <= 0):
            bad = int(np.flatnonzero(np.diff(frames) <= 0)[0])
            raise ValueError(
                f"PoseSequence.frames must be strictly increasing; frames[{bad}]={frames[bad]} "
                f"is followed by {frames[bad + 1]}: sort the rows and drop duplicates"
            )
        n = frames.shape[0]
        object.__setattr__(self, "frames", frames)
        for name in ("valid", "filled"):
            arr = np.asarray(getattr(self, name))
            if arr.shape != (n,):
                raise ValueError(f"PoseSequence.{name} must be bool[{n}] like frames, got shape {arr.shape}")
            object.__setattr__(self, name, arr.astype(bool))
        for name in _FLOAT_FIELDS:
            arr = np.asarray(getattr(self, name), dtype=np.float64)
            layout, ndim, trailing = _LAYOUTS.get(name, _DEFAULT_LAYOUT)
            ok = arr.ndim == ndim and arr.shape[0] == n and arr.shape[ndim - len(trailing) :] == trailing
            if not ok:
                raise ValueError(
                    f"PoseSequence.{name} must be {layout} with T={n} rows (one per frame), got shape {arr.shape}"
                )
            bad_rows = ~np.isfinite(arr).reshape(n, -1).all(axis=1) & self.valid if n else np.zeros(0, bool)
            if bad_rows.any():
                i = int(np.flatnonzero(bad_rows)[0])
                raise ValueError(
                    f"PoseSequence.{name} has non-finite values at valid row {i} (frame {frames[i]}): "
                    "mark the row invalid or fix the estimate"
                )
            object.__setattr__(self, name, arr)
        _check_rotations("global_rot", self.global_rot[:, None], self.valid, frames)
        _check_rotations("body_pose", self.body_pose, self.valid, frames)

    @property
    def n_frames(self) -> int:
        """Number of rows T."""
        return int(self.frames.shape[0])

    @classmethod
    def create(
        cls,
        frames: np.ndarray,
        valid: np.ndarray,
        global_rot: np.ndarray,
        cam_t: np.ndarray,
        *,
        body_pose: np.ndarray | None = None,
        joint_angles: np.ndarray | None = None,
        hand: np.ndarray | None = None,
        body_linear: np.ndarray | None = None,
        shape: np.ndarray | None = None,
        scale: np.ndarray | None = None,
        expr: np.ndarray | None = None,
        filled: np.ndarray | None = None,
    ) -> PoseSequence:
        """Build a sequence; omitted fields become empty (``[T, 0]``, ``[T, 0, 3, 3]``), ``filled`` all False."""
        n = int(np.asarray(frames).shape[0])

        def empty2(a: np.ndarray | None) -> np.ndarray:
            return np.zeros((n, 0)) if a is None else a

        return cls(
            frames=np.asarray(frames),
            valid=np.asarray(valid),
            global_rot=global_rot,
            body_pose=np.zeros((n, 0, 3, 3)) if body_pose is None else body_pose,
            joint_angles=empty2(joint_angles),
            hand=empty2(hand),
            body_linear=empty2(body_linear),
            shape=empty2(shape),
            scale=empty2(scale),
            expr=empty2(expr),
            cam_t=cam_t,
            filled=np.zeros(n, dtype=bool) if filled is None else filled,
        )


def smooth_track(
    seq: PoseSequence,
    cfg: SmoothingConfig,
    fps: float,
) -> PoseSequence:
    """Smooth, gap-fill and shape-lock one identity's whole sequence.

    Args:
        seq: the identity's parameters over all its frames (see `PoseSequence`).
        cfg: ``min_cutoff`` (Hz), ``beta`` (s/rad, s/m or s/unit), ``d_cutoff`` (Hz) of the One-Euro
            filter; ``max_gap`` (frames) longest gap that is interpolated; ``enable`` turns filtering
            and filling off (the input comes back unchanged apart from the shape lock);
            ``lock_shape`` replaces shape and scale by their median over valid frames;
            ``fill_mode`` gap interpolation, ``"cubic"`` (Hermite on translations, parameters and
            rotation vectors; C1 at the gap edges) or ``"linear"`` (slerp / linear);
            ``zero_phase`` averages a forward and a backward pass (no lag) instead of the causal
            forward pass alone; ``tangent_window`` smoothed valid frames next to a gap estimate
            the edge velocity for cubic filling.
        fps: frame rate of ``seq.frames`` in frames per second (time = frame index / fps).

    Returns:
        A new `PoseSequence` with the same rows: smoothed valid rows, interpolated rows in short gaps
        (``valid`` and ``filled`` True), other invalid rows unchanged (apart from the shape lock).

    Raises:
        ValueError: non-positive or non-finite ``fps``, or an unknown option value.
    """
    if not np.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a positive frame rate, got {fps!r}")
    fill, two_way, window = cfg.fill_mode, cfg.zero_phase, cfg.tangent_window
    if fill not in ("linear", "cubic"):
        raise ValueError(f"fill_mode must be 'linear' or 'cubic', got {fill!r}")
    if window < 2:
        raise ValueError(f"tangent_window must be at least 2 frames, got {window}")

    out = seq
    if cfg.enable and seq.valid.any():
        out = _smooth_and_fill(seq, cfg, float(fps), fill, two_way, window)
    if cfg.lock_shape and seq.valid.any():
        out = replace(out, shape=_locked(seq.shape, seq.valid), scale=_locked(seq.scale, seq.valid))
    return out


def euler_to_matrix(angles: np.ndarray, order: str) -> np.ndarray:
    """Euler angles (radians) → rotation matrices.

    Args:
        angles: ``float[..., 3]`` radians, in the axis order given by ``order``.
        order: scipy axis sequence: upper case (e.g. ``"XYZ"``) = intrinsic, lower case (``"xyz"``)
            = extrinsic. The caller must use the convention its model was trained with.

    Returns:
        ``float64[..., 3, 3]``.
    """
    a = np.asarray(angles, dtype=np.float64)
    if a.shape[-1:] != (3,):
        raise ValueError(f"Euler angles must be [..., 3], got shape {a.shape}")
    return Rotation.from_euler(order, a.reshape(-1, 3)).as_matrix().reshape(*a.shape[:-1], 3, 3)


def matrix_to_euler(rot: np.ndarray, order: str) -> np.ndarray:
    """Rotation matrices → Euler angles in radians (inverse of `euler_to_matrix`, angles in (-pi, pi])."""
    r = np.asarray(rot, dtype=np.float64)
    if r.shape[-2:] != (3, 3):
        raise ValueError(f"rotation matrices must be [..., 3, 3], got shape {r.shape}")
    return Rotation.from_matrix(r.reshape(-1, 3, 3)).as_euler(order).reshape(*r.shape[:-2], 3)


def axis_angle_to_matrix(rotvec: np.ndarray) -> np.ndarray:
    """Axis-angle vectors ``float[..., 3]`` (radians) → rotation matrices ``float64[..., 3, 3]``."""
    v = np.asarray(rotvec, dtype=np.float64)
    if v.shape[-1:] != (3,):
        raise ValueError(f"axis-angle vectors must be [..., 3], got shape {v.shape}")
    return Rotation.from_rotvec(v.reshape(-1, 3)).as_matrix().reshape(*v.shape[:-1], 3, 3)


def matrix_to_axis_angle(rot: np.ndarray) -> np.ndarray:
    """Rotation matrices ``float[..., 3, 3]`` → axis-angle vectors ``float64[..., 3]`` (angle in [0, pi])."""
    r = np.asarray(rot, dtype=np.float64)
    if r.shape[-2:] != (3, 3):
        raise ValueError(f"rotation matrices must be [..., 3, 3], got shape {r.shape}")
    return Rotation.from_matrix(r.reshape(-1, 3, 3)).as_rotvec().reshape(*r.shape[:-2], 3)


def one_euro(
    x: np.ndarray,
    t: np.ndarray,
    min_cutoff: float | np.ndarray,
    beta: float | np.ndarray,
    d_cutoff: float,
    speed_scale: float | np.ndarray = 1.0,
) -> np.ndarray:
    """Causal One-Euro filter (Casiez et al. 2012) on grouped vector signals with arbitrary time steps.

    The cutoff of each group adapts to its speed: ``cutoff = min_cutoff + beta * speed_scale * |dx/dt|``
    where ``|dx/dt|`` is the norm over the group's D values of the low-passed derivative.

    Args:
        x: ``float[N, G, D]`` samples (G groups of D values each).
        t: ``float[N]`` strictly increasing times in seconds.
        min_cutoff: minimum cutoff in Hz (scalar or ``float[G, 1]``).
        beta: speed coefficient (scalar or ``float[G, 1]``).
        d_cutoff: cutoff of the derivative low-pass in Hz.
        speed_scale: converts a group's norm speed to the unit ``beta`` expects (scalar or ``float[G, 1]``).

    Returns:
        ``float64[N, G, D]`` filtered samples; the first sample is passed through.
    """
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    if x.shape[0] == 0:
        return out
    two_pi = 2.0 * np.pi
    prev = x[0].copy()
    deriv = np.zeros(x.shape[1:])
    out[0] = prev
    dts = np.diff(np.asarray(t, dtype=np.float64))
    for i in range(1, x.shape[0]):
        dt = dts[i - 1]
        a_d = 1.0 / (1.0 + 1.0 / (two_pi * d_cutoff * dt))
        deriv += a_d * ((x[i] - prev) / dt - deriv)
        speed = np.sqrt(np.einsum("gd,gd->g", deriv, deriv))[:, None] * speed_scale
        cutoff = min_cutoff + beta * speed
        a = 1.0 / (1.0 + 1.0 / (two_pi * cutoff * dt))
        prev += a * (x[i] - prev)
        out[i] = prev
    return out


# ----------------------------------------------------------------------------------------------------
# internals


def _check_rotations(name: str, rot: np.ndarray, valid: np.ndarray, frames: np.ndarray) -> None:
    """Raise ValueError if a valid row of ``rot[T, K, 3, 3]`` is not a proper rotation."""
    if rot.shape[1] == 0 or not valid.any():
        return
    r = rot[valid]
    ortho = np.abs(np.einsum("tkji,tkjl->tkil", r, r) - np.eye(3)).max(axis=(2, 3))
    det = np.abs(np.linalg.det(r) - 1.0)
    err = np.maximum(ortho, det)
    if err.max() > ROTATION_TOLERANCE:
        row, joint = np.unravel_index(int(np.argmax(err)), err.shape)
        i = int(np.flatnonzero(valid)[row])
        where = f"joint {joint}, " if name == "body_pose" else ""
        raise ValueError(
            f"PoseSequence.{name} is not a rotation matrix at {where}row {i} (frame {frames[i]}): "
            f"max |R^T R - I| or |det R - 1| = {err.max():.3g} > {ROTATION_TOLERANCE}; convert Euler "
            "angles with euler_to_matrix() / axis-angle with axis_angle_to_matrix()"
        )


def _locked(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per-component median over valid rows, broadcast to every row: ``float64[T, D]``."""
    if values.shape[1] == 0:
        return values
    med = np.median(values[valid], axis=0)
    return np.broadcast_to(med, values.shape).copy()


def _runs(frames: np.ndarray, valid: np.ndarray, max_gap: int) -> list[np.ndarray]:
    """Row indices of valid frames grouped into runs (no gap longer than ``max_gap`` frames inside)."""
    idx = np.flatnonzero(valid)
    if idx.size == 0:
        return []
    missing = np.diff(frames[idx]) - 1
    cuts = np.flatnonzero(missing > max_gap) + 1
    return np.split(idx, cuts)


def _quat_continuous(rot: np.ndarray) -> np.ndarray:
    """Rotations ``[N, K, 3, 3]`` → unit quaternions ``[N, K, 4]`` (xyzw), sign-aligned along N."""
    n, k = rot.shape[:2]
    q = Rotation.from_matrix(rot.reshape(-1, 3, 3)).as_quat().reshape(n, k, 4)
    if n > 1:
        flip = np.einsum("nkd,nkd->nk", q[1:], q[:-1]) < 0
        # A sign change between neighbours flips every later sample: cumulative parity.
        parity = np.concatenate([np.zeros((1, k), dtype=bool), np.logical_xor.accumulate(flip, axis=0)])
        q = np.where(parity[..., None], -q, q)
    return q


def _quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """Quaternions ``[N, K, 4]`` (xyzw, any norm > 0) → rotation matrices ``[N, K, 3, 3]``."""
    n, k = q.shape[:2]
    return Rotation.from_quat(q.reshape(-1, 4)).as_matrix().reshape(n, k, 3, 3)


def _slerp(qa: np.ndarray, qb: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Slerp between unit quaternions ``qa, qb [K, 4]`` (same hemisphere) at fractions ``u [M]`` → ``[M, K, 4]``."""
    dot = np.clip(np.einsum("kd,kd->k", qa, qb), -1.0, 1.0)
    theta = np.arccos(dot)[None, :, None]
    uu = u[:, None, None]
    small = theta < SLERP_MIN_ANGLE
    sin_t = np.where(small, 1.0, np.sin(theta))
    wa = np.where(small, 1.0 - uu, np.sin((1.0 - uu) * theta) / sin_t)
    wb = np.where(small, uu, np.sin(uu * theta) / sin_t)
    q = wa * qa[None] + wb * qb[None]
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def _edge_slope(t: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares slope ``dy/dt`` of ``y [M, C]`` over times ``t [M]`` (M >= 2) → ``[C]``."""
    tc = t - t.mean()
    return tc @ (y - y.mean(axis=0)) / (tc @ tc)


def _edge_windows(run: np.ndarray, a: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``window`` run rows ending at anchor ``a`` and starting at the next anchor."""
    pos = int(np.searchsorted(run, a))
    return run[max(0, pos - window + 1) : pos + 1], run[pos + 1 : pos + 1 + window]


def _hermite(
    u: np.ndarray, p0: np.ndarray, p1: np.ndarray, m0: np.ndarray, m1: np.ndarray, d: float
) -> np.ndarray:
    """Cubic Hermite at fractions ``u [M, 1, ...]`` between values ``p0, p1`` with slopes ``m0, m1`` per second."""
    u2, u3 = u * u, u * u * u
    h00, h10, h01, h11 = 2 * u3 - 3 * u2 + 1, u3 - 2 * u2 + u, -2 * u3 + 3 * u2, u3 - u2
    return h00 * p0 + h10 * d * m0 + h01 * p1 + h11 * d * m1


def _fill_linear_channels(
    values: np.ndarray,
    times: np.ndarray,
    anchors: tuple[int, int],
    rows: np.ndarray,
    run: np.ndarray,
    fill: FillMode,
    window: int,
) -> np.ndarray:
    """Interpolate smoothed ``values [T, C]`` between anchor rows ``a < b`` at ``rows``; returns ``[len(rows), C]``.

    Cubic mode uses a Hermite spline whose end velocities are the least-squares slopes of up to
    ``window`` smoothed valid samples on each side (within the run), so the fill is C1 at the edges.
    """
    a, b = anchors
    d = times[b] - times[a]
    u = ((times[rows] - times[a]) / d)[:, None]
    pa, pb = values[a], values[b]
    if fill == "linear":
        return (1.0 - u) * pa + u * pb
    left, right = _edge_windows(run, a, window)
    secant = (pb - pa) / d
    ma = _edge_slope(times[left], values[left]) if left.size >= 2 else secant
    mb = _edge_slope(times[right], values[right]) if right.size >= 2 else secant
    return _hermite(u, pa, pb, ma, mb, d)


def _skew(v: np.ndarray) -> np.ndarray:
    """Cross-product matrices ``[..., 3, 3]`` of vectors ``[..., 3]``."""
    z = np.zeros(v.shape[:-1])
    x, y, w = v[..., 0], v[..., 1], v[..., 2]
    return np.stack([np.stack([z, -w, y], -1), np.stack([w, z, -x], -1), np.stack([-y, x, z], -1)], -2)


def _right_jacobian_inv(phi: np.ndarray) -> np.ndarray:
    """Inverse right Jacobian of SO(3) at rotation vectors ``phi [K, 3]``: d log(X exp(w t))/dt = J^-1 w."""
    theta = np.linalg.norm(phi, axis=-1)[:, None, None]
    small = theta < SLERP_MIN_ANGLE
    th = np.where(small, 1.0, theta)
    # 1/12 is the theta -> 0 limit of the coefficient.
    coef = np.where(small, 1.0 / 12.0, 1.0 / th**2 - (1.0 + np.cos(th)) / (2.0 * th * np.sin(th)))
    s = _skew(phi)
    return np.eye(3) + 0.5 * s + coef * (s @ s)


def _fill_rotations(
    quats: np.ndarray,
    times: np.ndarray,
    anchors: tuple[int, int],
    rows: np.ndarray,
    run: np.ndarray,
    fill: FillMode,
    window: int,
) -> np.ndarray:
    """Rotations in a gap from smoothed quaternions ``quats [T, K, 4]``; returns quaternions ``[len(rows), K, 4]``.

    Linear mode: slerp between the anchors. Cubic mode: a Hermite spline of the rotation vector
    relative to the first anchor, ``R(u) = R_a exp(r(u))``, whose end slopes are the angular velocities
    fitted on up to ``window`` smoothed frames on each side (C1 at the gap edges); it equals slerp when
    both velocities equal the constant-speed one.
    """
    a, b = anchors
    d = times[b] - times[a]
    u = (times[rows] - times[a]) / d
    qa = quats[a] / np.linalg.norm(quats[a], axis=-1, keepdims=True)
    qb = quats[b] / np.linalg.norm(quats[b], axis=-1, keepdims=True)
    if fill == "linear":
        return _slerp(qa, qb, u)
    ra, rb = _quat_to_matrix(qa[None])[0], _quat_to_matrix(qb[None])[0]
    v_ab = matrix_to_axis_angle(np.swapaxes(ra, -1, -2) @ rb)  # [K, 3]
    left, right = _edge_windows(run, a, window)
    secant = v_ab / d
    if left.size >= 2:
        rel = matrix_to_axis_angle(np.swapaxes(ra, -1, -2)[None] @ _quat_to_matrix(quats[left]))
        wa = _edge_slope(times[left], rel.reshape(left.size, -1)).reshape(-1, 3)
    else:
        wa = secant
    if right.size >= 2:
        rel = matrix_to_axis_angle(np.swapaxes(rb, -1, -2)[None] @ _quat_to_matrix(quats[right]))
        wb = _edge_slope(times[right], rel.reshape(right.size, -1)).reshape(-1, 3)
        mb = np.einsum("kij,kj->ki", _right_jacobian_inv(v_ab), wb)
    else:
        mb = secant
    r = _hermite(u[:, None, None], np.zeros_like(v_ab), v_ab, wa, mb, d)  # [M, K, 3]
    mats = ra[None] @ axis_angle_to_matrix(r)
    q = Rotation.from_matrix(mats.reshape(-1, 3, 3)).as_quat().reshape(rows.size, -1, 4)
    return np.where((np.einsum("mkd,kd->mk", q, qa) < 0)[..., None], -q, q)


@dataclass(frozen=True)
class _Group:
    """One block of the packed signal: columns [start, stop) of the group axis, D used values each."""

    name: str
    start: int
    stop: int
    dim: int


def _pack(seq: PoseSequence, rows: np.ndarray, locked: bool) -> tuple[np.ndarray, list[_Group], np.ndarray]:
    """Pack every filtered signal of ``rows`` into ``[N, G, 4]`` (zero padded) plus per-group speed scale."""
    n = rows.size
    blocks: list[tuple[str, np.ndarray]] = []
    rot = np.concatenate([seq.global_rot[rows, None], seq.body_pose[rows]], axis=1)
    blocks.append(("rot", _quat_continuous(rot)))
    blocks.append(("cam_t", seq.cam_t[rows, None, :]))
    if seq.joint_angles.shape[1]:
        blocks.append(("joint_angles", np.unwrap(seq.joint_angles[rows], axis=0)[..., None]))
    linear = ["hand", "body_linear", "expr"] + ([] if locked else ["shape", "scale"])
    for name in linear:
        arr = getattr(seq, name)
        if arr.shape[1]:
            blocks.append((name, arr[rows][..., None]))
    width = sum(b.shape[1] for _, b in blocks)
    packed = np.zeros((n, width, 4))
    groups: list[_Group] = []
    speed = np.ones((width, 1))
    col = 0
    for name, block in blocks:
        g, d = block.shape[1], block.shape[2]
        packed[:, col : col + g, :d] = block
        groups.append(_Group(name, col, col + g, d))
        if name == "rot":
            speed[col : col + g] = QUAT_SPEED_TO_RAD
        col += g
    return packed, groups, speed


def _smooth_and_fill(
    seq: PoseSequence, cfg: SmoothingConfig, fps: float, fill: FillMode, two_way: bool, window: int
) -> PoseSequence:
    """Filter each run's valid rows and interpolate its interior invalid rows (see module docstring)."""
    times = seq.frames / fps
    locked = cfg.lock_shape
    new: dict[str, np.ndarray] = {name: getattr(seq, name).copy() for name in _FLOAT_FIELDS}
    valid = seq.valid.copy()
    filled = np.zeros_like(valid)
    # Angles are unwrapped within a run; the output goes back to the branch of the input value.
    angle_ref = seq.joint_angles.copy()

    for run in _runs(seq.frames, seq.valid, cfg.max_gap):
        packed, groups, speed = _pack(seq, run, locked)
        if run.size > 1:
            t = times[run]
            smoothed = one_euro(packed, t, cfg.min_cutoff, cfg.beta, cfg.d_cutoff, speed)
            if two_way:
                # Backward pass on reversed time (negated so steps stay positive), then averaged.
                back = one_euro(packed[::-1], -t[::-1], cfg.min_cutoff, cfg.beta, cfg.d_cutoff, speed)
                smoothed = 0.5 * (smoothed + back[::-1])
        else:
            smoothed = packed
        # Dense per-row storage of this run's smoothed signals (rows outside the run are unused).
        dense = np.zeros((seq.n_frames, *packed.shape[1:]))
        dense[run] = smoothed
        for a, b in zip(run[:-1], run[1:], strict=True):
            if b - a > 1:
                gap_rows = np.arange(a + 1, b)
                dense[gap_rows] = _fill_gap(dense, times, (a, b), gap_rows, run, groups, fill, window)
                angle_ref[gap_rows] = seq.joint_angles[a]
                valid[gap_rows] = True
                filled[gap_rows] = True
        rows = np.arange(run[0], run[-1] + 1)
        _unpack(dense[rows], rows, groups, new, angle_ref)

    return replace(seq, valid=valid, filled=filled, **new)


def _fill_gap(
    dense: np.ndarray,
    times: np.ndarray,
    anchors: tuple[int, int],
    rows: np.ndarray,
    run: np.ndarray,
    groups: list[_Group],
    fill: FillMode,
    window: int,
) -> np.ndarray:
    """Interpolated packed values ``[len(rows), G, 4]`` for the invalid rows between two valid anchors."""
    out = np.zeros((rows.size, *dense.shape[1:]))
    for g in groups:
        sl = slice(g.start, g.stop)
        if g.name == "rot":
            out[:, sl] = _fill_rotations(dense[:, sl], times, anchors, rows, run, fill, window)
        else:
            flat = dense[:, sl, : g.dim].reshape(dense.shape[0], -1)
            vals = _fill_linear_channels(flat, times, anchors, rows, run, fill, window)
            out[:, sl, : g.dim] = vals.reshape(rows.size, g.stop - g.start, g.dim)
    return out


def _unpack(
    values: np.ndarray,
    rows: np.ndarray,
    groups: list[_Group],
    new: dict[str, np.ndarray],
    angle_ref: np.ndarray,
) -> None:
    """Write packed ``values [len(rows), G, 4]`` back into the output arrays ``new`` at ``rows``."""
    for g in groups:
        block = values[:, g.start : g.stop, : g.dim]
        if g.name == "rot":
            mats = _quat_to_matrix(block)
            new["global_rot"][rows] = mats[:, 0]
            new["body_pose"][rows] = mats[:, 1:]
        elif g.name == "cam_t":
            new["cam_t"][rows] = block[:, 0]
        elif g.name == "joint_angles":
            ref = angle_ref[rows]
            new["joint_angles"][rows] = ref + _wrap_pi(block[..., 0] - ref)
        else:
            new[g.name][rows] = block[..., 0]


def _wrap_pi(a: np.ndarray) -> np.ndarray:
    """Angles wrapped into [-pi, pi)."""
    return (a + np.pi) % (2.0 * np.pi) - np.pi
