"""BVH motion export of a skeleton given by global joint positions and orientations (pure math).

The BVH reproduces the input joint positions exactly under forward kinematics (FK): every
joint's local rotation is ``G_parentᵀ G_joint``, and a joint whose local translation
``G_parentᵀ (p_joint - p_parent)`` moves over the clip (a translation DoF, a varying bone scale)
gets position channels carrying that translation on every frame. The others keep it as a
constant OFFSET, exact to ``pos_tol`` (default 10 µm, so < 1 mm even over 15 chained joints).

Conventions of the written file:
    * Units: ``units`` per metre (centimetres by default, MHR's native unit).
    * Axes: the input frame mapped by ``axes``. The default maps the OpenCV camera frame
      (x right, y down, z forward) to a Y-up frame (x right, y up, z towards the camera), the
      frame of BVH viewers and of the MHR body model itself.
    * Rotation channels are intrinsic Euler angles in degrees in the listed order
      (``Zrotation Xrotation Yrotation`` = Rz @ Rx @ Ry on column vectors), as Blender reads them.
    * Position channels hold the full local position and *replace* the OFFSET (Blender's
      reading). The root's OFFSET is zero and every other OFFSET is the clip's median, so readers
      that add channels to OFFSETs are off only on the few joints with position channels.
    * With ``rest_rotations`` (the bind-pose global orientations) the joint frames are
      rest-aligned: all channels at zero show the bind pose with world-aligned joint frames.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence

import numpy as np
from scipy.spatial.transform import Rotation

# OpenCV camera axes (y down, z forward) -> Y-up axes (y up, z backward): 180 degrees about x.
Y_UP_FROM_CAMERA = np.diag([1.0, -1.0, -1.0])
# Local translation variation (metres) above which a joint gets position channels.
POS_TOL = 1e-5
# Leaf End Sites point along the incoming bone, this fraction of its length (a visible tip).
END_SITE_FRACTION = 0.5


def write_bvh(
    parents: Sequence[int],
    names: Sequence[str],
    positions: np.ndarray,
    rotations: np.ndarray,
    fps: float,
    *,
    rest_rotations: np.ndarray | None = None,
    axes: np.ndarray = Y_UP_FROM_CAMERA,
    units: float = 100.0,
    order: str = "ZXY",
    pos_tol: float = POS_TOL,
    all_positions: bool = False,
) -> str:
    """BVH text of a ``T``-frame motion of a ``J``-joint skeleton.

    Args:
        parents: ``[J]`` parent index per joint, -1 for roots; ``parents[j] < j``.
        names: ``[J]`` unique joint names without whitespace.
        positions: ``[T, J, 3]`` global joint positions, metres, input frame.
        rotations: ``[T, J, 4]`` global joint orientations as quaternions xyzw, or ``[T, J, 3, 3]``
            rotation matrices, input frame.
        fps: frames per second (> 0).
        rest_rotations: ``[J, 4]`` or ``[J, 3, 3]`` bind-pose global orientations, input frame;
            None uses the input orientations as the joint frames (equally exact, but the
            all-zero pose is then not the bind pose).
        axes: ``[3, 3]`` proper rotation from the input frame to the file's frame.
        units: file units per metre.
        order: Euler channel order, a permutation of ``"XYZ"``.
        pos_tol: metres; a non-root joint gets position channels when its local translation
            strays further than this from its median.
        all_positions: position channels on every joint (bit-exact, about twice the size).

    Returns:
        The BVH text (``HIERARCHY`` then ``MOTION``, one line per frame).

    Raises:
        ValueError: inconsistent shapes, no frame, an unsorted or out-of-range parent, bad or duplicate
            names, non-finite values, ``fps <= 0`` or an invalid ``order``.
    """
    par = np.asarray(parents, dtype=np.int64)
    n_joints = len(par)
    pos = np.asarray(positions, dtype=np.float64)
    _check_inputs(par, names, pos, fps, order)
    glob = _as_matrices(rotations, pos.shape[:2], "rotations")
    ax = np.asarray(axes, dtype=np.float64)
    if ax.shape != (3, 3) or not np.allclose(ax @ ax.T, np.eye(3), atol=1e-9) or np.linalg.det(ax) < 0:
        raise ValueError(f"axes must be a 3x3 proper rotation matrix, got {ax.tolist()}")

    # Into the file's frame; joint frames G = R Rrᵀ (rest-aligned) or R.
    p = pos @ ax.T
    frames = ax @ glob @ ax.T
    if rest_rotations is not None:
        rest = ax @ _as_matrices(rest_rotations, (n_joints,), "rest_rotations") @ ax.T
        frames = frames @ np.swapaxes(rest, -1, -2)
    roots = par < 0
    safe = np.where(roots, 0, par)
    parent_frames = np.where(roots[None, :, None, None], np.eye(3), frames[:, safe])
    local_rot = np.swapaxes(parent_frames, -1, -2) @ frames
    rel = np.where(roots[None, :, None], p, p - p[:, safe])
    local_t = np.einsum("tjki,tjk->tji", parent_frames, rel)

    offsets = np.median(local_t, axis=0)
    offsets[roots] = 0.0
    moving = np.linalg.norm(local_t - offsets, axis=-1).max(axis=0) > pos_tol
    has_pos = roots | moving | all_positions

    with warnings.catch_warnings():
        # Gimbal lock makes single angles ambiguous, not their composition: FK stays exact.
        warnings.filterwarnings("ignore", "Gimbal lock", UserWarning)
        euler = Rotation.from_matrix(local_rot.reshape(-1, 3, 3)).as_euler(order.upper(), degrees=True)
    euler = euler.reshape(len(p), n_joints, 3)

    children: list[list[int]] = [[] for _ in range(n_joints)]
    for j in np.flatnonzero(~roots):
        children[par[j]].append(int(j))
    rot_channels = " ".join(f"{a}rotation" for a in order.upper())
    lines = ["HIERARCHY"]
    emitted: list[int] = []

    def emit(j: int, depth: int) -> None:
        pad = "\t" * depth
        lines.append(f"{pad}{'ROOT' if roots[j] else 'JOINT'} {names[j]}")
        lines.append(f"{pad}{{")
        lines.append(f"{pad}\tOFFSET {_vec(offsets[j] * units)}")
        pos_channels = "CHANNELS 6 Xposition Yposition Zposition " if has_pos[j] else "CHANNELS 3 "
        lines.append(f"{pad}\t{pos_channels}{rot_channels}")
        emitted.append(j)
        for c in children[j]:
            emit(c, depth + 1)
        if not children[j]:
            tip = 0.0 if roots[j] else END_SITE_FRACTION * offsets[j] * units
            lines.extend([f"{pad}\tEnd Site", f"{pad}\t{{", f"{pad}\t\tOFFSET {_vec(tip)}", f"{pad}\t}}"])
        lines.append(f"{pad}}}")

    for r in np.flatnonzero(roots):
        emit(int(r), 0)
    lines += ["MOTION", f"Frames: {len(p)}", f"Frame Time: {1.0 / fps:.8f}"]
    columns = []
    for j in emitted:
        if has_pos[j]:
            columns.append(local_t[:, j] * units)
        columns.append(euler[:, j])
    buf = io.StringIO()
    buf.write("\n".join(lines) + "\n")
    np.savetxt(buf, np.concatenate(columns, axis=1), fmt="%.6f", delimiter=" ")
    return buf.getvalue()


def _check_inputs(par: np.ndarray, names: Sequence[str], pos: np.ndarray, fps: float, order: str) -> None:
    n_joints = len(par)
    if n_joints == 0:
        raise ValueError("the skeleton has no joints")
    bad = [j for j in range(n_joints) if not -1 <= par[j] < j]
    if bad:
        raise ValueError(
            f"parents must satisfy -1 <= parents[j] < j (topological order); joints {bad[:5]} do not"
        )
    if len(names) != n_joints or len(set(names)) != n_joints:
        raise ValueError(f"need {n_joints} unique joint names, got {len(names)} ({len(set(names))} unique)")
    spaced = [n for n in names if not n or any(c.isspace() for c in n)]
    if spaced:
        raise ValueError(f"joint names must be non-empty without whitespace, got {spaced[:5]}")
    if pos.ndim != 3 or pos.shape[1:] != (n_joints, 3):
        raise ValueError(f"positions must be [T, {n_joints}, 3], got shape {pos.shape}")
    if len(pos) == 0:
        raise ValueError("positions hold no frame: a BVH needs at least one")
    if not np.isfinite(pos).all():
        raise ValueError("positions hold NaN or inf: pass only the frames that have a pose")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    if sorted(order.upper()) != ["X", "Y", "Z"]:
        raise ValueError(f"order must be a permutation of 'XYZ', got {order!r}")


def _as_matrices(rot: np.ndarray, lead: tuple[int, ...], what: str) -> np.ndarray:
    """Quaternions xyzw ``[*lead, 4]`` or matrices ``[*lead, 3, 3]`` -> float64 ``[*lead, 3, 3]``."""
    r = np.asarray(rot, dtype=np.float64)
    if r.shape == (*lead, 4):
        out = Rotation.from_quat(r.reshape(-1, 4)).as_matrix().reshape(*lead, 3, 3)
    elif r.shape == (*lead, 3, 3):
        out = r
    else:
        raise ValueError(
            f"{what} must be [{', '.join(map(str, lead))}, 4] (xyzw) or [..., 3, 3], got {r.shape}"
        )
    if not np.isfinite(out).all():
        raise ValueError(f"{what} hold NaN or inf: pass only the frames that have a pose")
    return out


def _vec(v: np.ndarray | float) -> str:
    x, y, z = np.broadcast_to(np.asarray(v, dtype=np.float64), (3,))
    return f"{x:.6f} {y:.6f} {z:.6f}"
