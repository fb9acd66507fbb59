"""Rotation conversions and the MHR pose-parameter encodings used by SAM-3D-Body.

Part of the body4d port of SAM 3D Body (Meta Platforms, Inc.), covered by the SAM License
(see LICENSE-SAM). Written for torch only (no roma): Euler conventions follow the usual
naming, upper case = intrinsic (``"XZY"``: R = Rx(a) Rz(b) Ry(c)), lower case = extrinsic
(``"xyz"``: R = Rz(c) Ry(b) Rx(a)); all angles are radians.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import mhr_layout

_AXIS = {"X": 0, "Y": 1, "Z": 2}

# MHR body pose (133 Euler/translation parameters) <-> 260-d continuous encoding: 23 three-DoF
# joints (6D each), 58 one-DoF joints (sin, cos each), 6 translations; the layout tables say where
# each decoded value lands among the 133 model parameters.
BODY_3DOF_IDXS = torch.from_numpy(mhr_layout.BODY_3DOF_IDXS).flatten()
BODY_1DOF_IDXS = torch.from_numpy(mhr_layout.BODY_1DOF_IDXS)
BODY_TRANS_IDXS = torch.from_numpy(mhr_layout.BODY_TRANS_IDXS)
BODY_CONT_DIM = 260
# Body-pose entries driven by the hand PCA instead of the body decoder (zeroed in the body head).
BODY_HAND_PARAM_IDXS = torch.arange(62, 116)
# Degrees of freedom of the 16 hand joints in MHR order (3-DoF joints use 6D, others sin/cos).
HAND_JOINT_DOFS = (3, 1, 1, 3, 1, 1, 3, 1, 1, 3, 1, 1, 2, 3, 1, 1)


def _hand_index_tables() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Index tables of the 54-d hand continuous encoding -> 27 hand model parameters."""
    cont3, cont1, par3, par1 = [], [], [], []
    c = p = 0
    for dof in HAND_JOINT_DOFS:
        if dof == 3:
            cont3 += range(c, c + 6)
            par3 += range(p, p + 3)
        else:
            cont1 += range(c, c + 2 * dof)
            par1 += range(p, p + dof)
        c += 2 * dof
        p += dof
    return tuple(torch.tensor(v) for v in (cont3, cont1, par3, par1))  # type: ignore[return-value]


HAND_CONT3, HAND_CONT1, HAND_PARAM3, HAND_PARAM1 = _hand_index_tables()


def rot6d_to_rotmat(x: torch.Tensor) -> torch.Tensor:
    """Gram-Schmidt 6D -> rotation matrix, the two 3-vectors being the first two columns.

    Args:
        x: [..., 6].
    Returns:
        [..., 3, 3].
    """
    a1, a2 = x[..., :3], x[..., 3:]
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack((b1, b2, b3), dim=-1)


def _zyx_from_6d(x: torch.Tensor) -> torch.Tensor:
    """6D (first two columns, cross-product completion) -> angles (x, y, z) with R = Rz Ry Rx.

    Args:
        x: [..., 6].
    Returns:
        [..., 3] angles ordered x, y, z; at gimbal lock (cos y < 1e-6) z is set to 0.
    """
    col0 = F.normalize(x[..., :3], dim=-1)
    col2 = F.normalize(torch.linalg.cross(col0, x[..., 3:], dim=-1), dim=-1)
    col1 = torch.linalg.cross(col2, col0, dim=-1)
    m = torch.stack((col0, col1, col2), dim=-1)
    sy = torch.sqrt(m[..., 0, 0] ** 2 + m[..., 1, 0] ** 2)
    singular = sy < 1e-6
    ang_x = torch.where(
        singular, torch.atan2(-m[..., 1, 2], m[..., 1, 1]), torch.atan2(m[..., 2, 1], m[..., 2, 2])
    )
    ang_y = torch.atan2(-m[..., 2, 0], sy)
    ang_z = torch.where(singular, torch.zeros_like(sy), torch.atan2(m[..., 1, 0], m[..., 0, 0]))
    return torch.stack((ang_x, ang_y, ang_z), dim=-1)


def _sincos_to_angle(x: torch.Tensor) -> torch.Tensor:
    """[..., 2k] interleaved (sin, cos) pairs -> [..., k] angles."""
    pairs = x.unflatten(-1, (-1, 2))
    return torch.atan2(pairs[..., 0], pairs[..., 1])


def body_cont_to_params(cont: torch.Tensor) -> torch.Tensor:
    """Continuous body pose [B, 260] -> MHR body model parameters [B, 133] (radians / translation)."""
    n3 = BODY_3DOF_IDXS.numel()
    n1 = BODY_1DOF_IDXS.numel()
    rot3 = _zyx_from_6d(cont[..., : 2 * n3].unflatten(-1, (-1, 6))).flatten(-2)
    rot1 = _sincos_to_angle(cont[..., 2 * n3 : 2 * n3 + 2 * n1])
    out = cont.new_zeros(*cont.shape[:-1], mhr_layout.NUM_BODY_PARAMS)
    out[..., BODY_3DOF_IDXS.to(cont.device)] = rot3
    out[..., BODY_1DOF_IDXS.to(cont.device)] = rot1
    out[..., BODY_TRANS_IDXS.to(cont.device)] = cont[..., 2 * n3 + 2 * n1 :]
    return out


def hand_cont_to_params(cont: torch.Tensor) -> torch.Tensor:
    """Continuous hand pose [B, 54] -> 27 MHR hand joint parameters [B, 27] (radians)."""
    dev = cont.device
    out = cont.new_zeros(*cont.shape[:-1], 27)
    out[..., HAND_PARAM3.to(dev)] = _zyx_from_6d(
        cont[..., HAND_CONT3.to(dev)].unflatten(-1, (-1, 6))
    ).flatten(-2)
    out[..., HAND_PARAM1.to(dev)] = _sincos_to_angle(cont[..., HAND_CONT1.to(dev)])
    return out


def _elementary(axis: int, angle: torch.Tensor) -> torch.Tensor:
    """Rotation about one coordinate axis: [...] -> [..., 3, 3]."""
    c, s = torch.cos(angle), torch.sin(angle)
    one, zero = torch.ones_like(angle), torch.zeros_like(angle)
    if axis == 0:
        rows = ((one, zero, zero), (zero, c, -s), (zero, s, c))
    elif axis == 1:
        rows = ((c, zero, s), (zero, one, zero), (-s, zero, c))
    else:
        rows = ((c, -s, zero), (s, c, zero), (zero, zero, one))
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


def _intrinsic(convention: str) -> tuple[str, bool]:
    """Upper-case axis order and whether the angle order must be reversed (extrinsic)."""
    if len(convention) != 3 or len({c.upper() for c in convention}) != 3:
        raise ValueError(f"unsupported Euler convention {convention!r}: need three distinct axes")
    if convention.islower():
        return convention.upper()[::-1], True
    if convention.isupper():
        return convention, False
    raise ValueError(f"Euler convention {convention!r} mixes intrinsic and extrinsic axes")


def euler_to_rotmat(convention: str, angles: torch.Tensor) -> torch.Tensor:
    """Tait-Bryan angles [..., 3] -> rotation matrices [..., 3, 3]."""
    axes, reverse = _intrinsic(convention)
    if reverse:
        angles = angles.flip(-1)
    r = _elementary(_AXIS[axes[0]], angles[..., 0])
    r = r @ _elementary(_AXIS[axes[1]], angles[..., 1])
    return r @ _elementary(_AXIS[axes[2]], angles[..., 2])


def rotmat_to_euler(convention: str, rot: torch.Tensor) -> torch.Tensor:
    """Rotation matrices [..., 3, 3] -> Tait-Bryan angles [..., 3].

    First and last angles are in (-pi, pi], the middle one in [-pi/2, pi/2].
    """
    axes, reverse = _intrinsic(convention)
    i, j, k = (_AXIS[a] for a in axes)
    sign = 1.0 if (j - i) % 3 == 1 else -1.0  # even permutation of XYZ
    middle = torch.atan2(sign * rot[..., i, k], torch.sqrt(rot[..., i, i] ** 2 + rot[..., i, j] ** 2))
    first = torch.atan2(-sign * rot[..., j, k], rot[..., k, k])
    last = torch.atan2(-sign * rot[..., i, j], rot[..., i, i])
    out = torch.stack((first, middle, last), dim=-1)
    return out.flip(-1) if reverse else out


def quat_xyzw_to_rotmat(q: torch.Tensor) -> torch.Tensor:
    """Unit quaternions [..., 4] (x, y, z, w) -> rotation matrices [..., 3, 3]."""
    x, y, z, w = q.unbind(-1)
    rows = (
        (1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)),
        (2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)),
        (2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)),
    )
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


def rotation_angle(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Geodesic angle (radians) between rotation matrices [..., 3, 3] -> [...]."""
    rel = a @ b.transpose(-2, -1)
    cos = (rel.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    return torch.acos(cos.clamp(-1.0, 1.0))


def fix_wrist_euler(xzy: torch.Tensor) -> torch.Tensor:
    """Pick, per wrist, the equivalent XZY Euler triple that better respects MHR joint limits.

    (x, z, y) and (x + pi, -(z + pi), y + pi) describe the same rotation; the one whose summed
    squared violation of the limits x in [-2.2, 1.0], z in [-2.2, 1.5], y in [-1.2, 1.5] is
    smaller wins.

    Args:
        xzy: [..., 3] angles (x, z, y).
    Returns:
        [..., 3].
    """
    limits = torch.tensor([(-2.2, 1.0), (-2.2, 1.5), (-1.2, 1.5)], dtype=xzy.dtype, device=xzy.device)
    x, z, y = xzy.unbind(-1)
    alt = torch.stack(
        (
            torch.atan2(torch.sin(x + torch.pi), torch.cos(x + torch.pi)),
            torch.atan2(torch.sin(-(z + torch.pi)), torch.cos(-(z + torch.pi))),
            torch.atan2(torch.sin(y + torch.pi), torch.cos(y + torch.pi)),
        ),
        dim=-1,
    )

    def violation(v: torch.Tensor) -> torch.Tensor:
        below = (limits[:, 0] - v).clamp(min=0.0)
        above = (v - limits[:, 1]).clamp(min=0.0)
        return (below**2 + above**2).sum(-1)

    use_alt = violation(alt) < violation(xzy)
    return torch.where(use_alt.unsqueeze(-1), alt, xzy)
