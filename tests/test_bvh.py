"""BVH export: an independent parser + FK reproduces the exported joints (synthetic and via the port)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from body4d.bvh import Y_UP_FROM_CAMERA, write_bvh
from body4d.testing.tiny_sam3dbody import TINY_TRANSLATED_JOINTS
from models.sam_3d_body import SAM3DBody
from models.sam_3d_body.heads import mhr_skeleton

F = Y_UP_FROM_CAMERA
MM = 1e-3


@dataclass
class ParsedBVH:
    """A parsed BVH: joints in file order (End Sites dropped) and the motion table."""

    names: list[str]
    parents: list[int]  # index into ``names``, -1 for roots
    offsets: np.ndarray  # [J, 3] file units
    channels: list[list[str]]
    end_sites: list[int]  # joints that carry an End Site
    frame_time: float
    motion: np.ndarray  # [T, C]


def parse_bvh(text: str) -> ParsedBVH:
    """Parse BVH text (any whitespace layout)."""
    tok = text.split()
    assert tok[0] == "HIERARCHY"
    names: list[str] = []
    parents: list[int] = []
    offsets: list[list[float]] = []
    channels: list[list[str]] = []
    end_sites: list[int] = []
    stack: list[int | None] = []  # joint index per open brace (None: an End Site)
    pending: str | None = None
    i = 1
    while tok[i] != "MOTION":
        t = tok[i]
        if t in ("ROOT", "JOINT"):
            pending, i = tok[i + 1], i + 2
        elif t == "End":
            assert tok[i + 1] == "Site"
            pending, i = None, i + 2
            end_sites.append(stack[-1])  # type: ignore[arg-type]
        elif t == "{":
            if pending is None:
                stack.append(None)
            else:
                parent = next((s for s in reversed(stack) if s is not None), -1)
                names.append(pending)
                parents.append(parent)
                offsets.append([0.0, 0.0, 0.0])
                channels.append([])
                stack.append(len(names) - 1)
                pending = None
            i += 1
        elif t == "}":
            stack.pop()
            i += 1
        elif t == "OFFSET":
            if stack[-1] is not None:
                offsets[stack[-1]] = [float(v) for v in tok[i + 1 : i + 4]]
            i += 4
        elif t == "CHANNELS":
            n = int(tok[i + 1])
            channels[stack[-1]] = tok[i + 2 : i + 2 + n]  # type: ignore[index]
            i += 2 + n
        else:
            raise AssertionError(f"unexpected token {t!r}")
    assert not stack
    assert tok[i + 1] == "Frames:" and tok[i + 3] == "Frame" and tok[i + 4] == "Time:"
    n_frames, frame_time = int(tok[i + 2]), float(tok[i + 5])
    values = np.array(tok[i + 6 :], dtype=np.float64)
    n_channels = sum(len(c) for c in channels)
    assert values.size == n_frames * n_channels
    return ParsedBVH(
        names,
        parents,
        np.array(offsets),
        channels,
        end_sites,
        frame_time,
        values.reshape(n_frames, n_channels),
    )


def bvh_forward_kinematics(bvh: ParsedBVH) -> tuple[np.ndarray, np.ndarray]:
    """Global joint positions [T, J, 3] (file units) and frames [T, J, 3, 3] of every frame.

    Position channels replace the OFFSET; rotation channels are intrinsic in the listed order.
    """
    n_frames, n_joints = len(bvh.motion), len(bvh.names)
    pos = np.zeros((n_frames, n_joints, 3))
    rot = np.zeros((n_frames, n_joints, 3, 3))
    col = 0
    for j in range(n_joints):
        local_t = np.broadcast_to(bvh.offsets[j], (n_frames, 3)).copy()
        axes, angles = "", []
        for ch in bvh.channels[j]:
            if ch.endswith("position"):
                local_t[:, "XYZ".index(ch[0])] = bvh.motion[:, col]
            else:
                axes += ch[0]
                angles.append(bvh.motion[:, col])
            col += 1
        local_r = Rotation.from_euler(axes, np.stack(angles, -1), degrees=True).as_matrix()
        p = bvh.parents[j]
        if p < 0:
            pos[:, j], rot[:, j] = local_t, local_r
        else:
            pos[:, j] = pos[:, p] + np.einsum("tik,tk->ti", rot[:, p], local_t)
            rot[:, j] = rot[:, p] @ local_r
    return pos, rot


def _tree(n: int, rng: np.random.Generator) -> np.ndarray:
    """A sorted random tree: a chain 0..15 (depth 15), then joints under any earlier joint."""
    parents = [-1] + list(range(15))
    parents += [int(rng.integers(0, j)) for j in range(16, n)]
    return np.array(parents)


def _momentum_fk(
    parents: np.ndarray,
    prerot: Rotation,
    offsets: np.ndarray,
    dt: np.ndarray,
    euler: np.ndarray,
    log2s: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """pymomentum's FK of one frame: t_j = t_p + s_p R_p (off_j + dt_j), R_j = R_p Pre_j E_xyz,
    s_j = s_p 2^l_j. Returns positions [J, 3] (cm) and rotations [J, 3, 3] (MHR axes)."""
    n = len(parents)
    t, r, s = np.zeros((n, 3)), np.zeros((n, 3, 3)), np.zeros(n)
    local_r = (prerot * Rotation.from_euler("xyz", euler)).as_matrix()
    for j, p in enumerate(parents):
        lt, ls = offsets[j] + dt[j], 2.0 ** log2s[j]
        if p < 0:
            t[j], r[j], s[j] = lt, local_r[j], ls
        else:
            t[j], r[j], s[j] = t[p] + s[p] * r[p] @ lt, r[p] @ local_r[j], s[p] * ls
    return t, r


def _synthetic(
    n_frames: int = 20, vary_scale_of: int | None = None, seed: int = 0
) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray, set[int]]:
    """A moving synthetic 127-joint body in the camera frame, like the port's output.

    Returns parents, names, positions [T, J, 3] (m, camera frame, cam_t added), rotations
    [T, J, 4] xyzw (camera axes), rest rotations [J, 3, 3] (camera axes), MHR-axis rotations
    [T, J, 3, 3] and the translated joints.
    """
    rng = np.random.default_rng(seed)
    n = 127
    parents = _tree(n, rng)
    names = [f"j{j:03d}" for j in range(n)]
    prerot = Rotation.random(n, random_state=seed)
    offsets = rng.normal(0, 8, (n, 3))  # cm
    log2s = rng.normal(0, 0.1, n)  # a locked identity: constant scales
    translated = {20, 40, 77}
    rest_t, rest_r = _momentum_fk(parents, prerot, offsets, np.zeros((n, 3)), np.zeros((n, 3)), np.zeros(n))
    pos, quat, mhr_rots = [], [], []
    for k in range(n_frames):
        dt = np.zeros((n, 3))
        dt[sorted(translated)] = rng.normal(0, 2.0, (len(translated), 3))
        scales = log2s.copy()
        if vary_scale_of is not None:
            scales[vary_scale_of] += 0.2 * np.sin(k)
        t, r = _momentum_fk(parents, prerot, offsets, dt, rng.normal(0, 0.7, (n, 3)), scales)
        cam_t = np.array([0.1, -0.2, 3.0]) + 0.02 * k
        pos.append((t / 100.0) @ F.T + cam_t)
        quat.append(Rotation.from_matrix(F @ r @ F).as_quat())
        mhr_rots.append(r)
    return parents, names, np.array(pos), np.array(quat), F @ rest_r @ F, np.array(mhr_rots), translated


def _position_joints(bvh: ParsedBVH) -> set[int]:
    return {int(bvh.names[k][1:]) for k, ch in enumerate(bvh.channels) if "Xposition" in ch}


def _descendants_of_children(parents: np.ndarray, k: int) -> set[int]:
    out: set[int] = set()
    for j, p in enumerate(parents):
        if p == k or p in out:
            out.add(j)
    return out


@pytest.mark.parametrize("order", ["ZXY", "ZYX", "XYZ"])
def test_fk_of_the_bvh_reproduces_positions_and_rotations(order: str) -> None:
    parents, names, pos, quat, rest, mhr_rots, translated = _synthetic()
    text = write_bvh(parents, names, pos, quat, 30.0, rest_rotations=rest, order=order)
    bvh = parse_bvh(text)
    fk_pos, fk_rot = bvh_forward_kinematics(bvh)
    idx = [int(n[1:]) for n in bvh.names]
    err = np.linalg.norm(fk_pos / 100.0 - (pos @ F.T)[:, idx], axis=-1)
    assert err.max() < 1e-3 * MM  # exact up to float formatting (tolerance: 1 mm)
    # Rest-aligned frames times the bind pose are the model's global rotations (Y-up = MHR axes).
    rest_w = (F @ rest @ F)[idx]
    assert np.abs(fk_rot @ rest_w - mhr_rots[:, idx]).max() < 1e-6
    # Position channels only where a local translation moves: the root and the translated joints.
    assert _position_joints(bvh) == {0} | translated
    assert bvh.channels[0][:3] == ["Xposition", "Yposition", "Zposition"]
    assert not bvh.offsets[0].any()
    assert [c[-3][0] + c[-2][0] + c[-1][0] for c in bvh.channels] == [order] * len(names)


def test_without_rest_rotations_the_joint_frames_are_the_model_rotations() -> None:
    parents, names, pos, quat, _, mhr_rots, translated = _synthetic(n_frames=5)
    bvh = parse_bvh(write_bvh(parents, names, pos, quat, 30.0))
    fk_pos, fk_rot = bvh_forward_kinematics(bvh)
    idx = [int(n[1:]) for n in bvh.names]
    assert np.linalg.norm(fk_pos / 100.0 - (pos @ F.T)[:, idx], axis=-1).max() < 1e-3 * MM
    assert np.abs(fk_rot - mhr_rots[:, idx]).max() < 1e-6
    assert _position_joints(bvh) == {0} | translated


def test_a_varying_bone_scale_moves_position_channels_below_it_and_stays_exact() -> None:
    parents, names, pos, quat, rest, _, translated = _synthetic(vary_scale_of=5)
    bvh = parse_bvh(write_bvh(parents, names, pos, quat, 25.0, rest_rotations=rest))
    fk_pos, _ = bvh_forward_kinematics(bvh)
    idx = [int(n[1:]) for n in bvh.names]
    assert np.linalg.norm(fk_pos / 100.0 - (pos @ F.T)[:, idx], axis=-1).max() < 1e-3 * MM
    assert _position_joints(bvh) == {0} | translated | _descendants_of_children(parents, 5)


def test_bvh_layout_round_trips() -> None:
    parents, names, pos, quat, rest, _, _ = _synthetic(n_frames=7)
    text = write_bvh(parents, names, pos, quat, 24.0, rest_rotations=rest, all_positions=True)
    bvh = parse_bvh(text)
    assert sorted(bvh.names) == names and len(bvh.motion) == 7
    assert bvh.frame_time == pytest.approx(1 / 24.0, abs=1e-8)
    assert all(len(c) == 6 for c in bvh.channels)
    # Parents survive (in file order) and every leaf, and only a leaf, ends in an End Site.
    idx = [int(n[1:]) for n in bvh.names]
    assert [-1 if p < 0 else idx[p] for p in bvh.parents] == [int(parents[j]) for j in idx]
    leaves = {j for j in range(len(names)) if j not in set(parents.tolist())}
    assert {idx[k] for k in bvh.end_sites} == leaves
    # All channels at zero with rest-aligned frames is the bind pose: world-aligned joint frames.
    _, rot = bvh_forward_kinematics(ParsedBVH(**{**bvh.__dict__, "motion": np.zeros_like(bvh.motion)}))
    assert np.allclose(rot, np.eye(3))


def test_write_bvh_rejects_bad_input() -> None:
    parents, names, pos, quat, _, _, _ = _synthetic(n_frames=2)
    with pytest.raises(ValueError, match="topological"):
        write_bvh(parents[::-1], names, pos, quat, 30.0)
    with pytest.raises(ValueError, match="unique"):
        write_bvh(parents, ["a"] * len(names), pos, quat, 30.0)
    with pytest.raises(ValueError, match="whitespace"):
        write_bvh(parents, [f"j {j}" for j in range(len(names))], pos, quat, 30.0)
    bad = pos.copy()
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        write_bvh(parents, names, bad, quat, 30.0)
    with pytest.raises(ValueError, match=r"\[2, 127, 4\]"):
        write_bvh(parents, names, pos, quat[:, :, :3], 30.0)
    with pytest.raises(ValueError, match="no frame"):
        write_bvh(parents, names, pos[:0], quat[:0], 30.0)
    with pytest.raises(ValueError, match="fps"):
        write_bvh(parents, names, pos, quat, 0.0)


def _tiny_params(n: int, translate: bool, seed: int = 0) -> list[np.ndarray]:
    """A track of body-model parameters with one locked identity (shape and scale constant)."""
    rng = np.random.default_rng(seed)
    body_pose = rng.normal(0, 0.3, (n, 133))
    if not translate:
        body_pose[:, 124:130] = 0.0  # MHR's six body-pose translation DoFs
    return [
        rng.normal(0, 0.5, (n, 3)),
        body_pose,
        rng.normal(0, 0.3, (n, 108)),
        np.repeat(rng.normal(0, 0.5, (1, 45)), n, axis=0),
        np.repeat(rng.normal(0, 0.5, (1, 28)), n, axis=0),
        np.zeros((n, 72)),
    ]


@pytest.mark.parametrize("translate", [True, False])
def test_the_bvh_of_the_port_skeleton_reproduces_its_joints(port: SAM3DBody, translate: bool) -> None:
    skel = port.skeleton
    assert skel.parents.shape == (127,) and skel.parents[0] == -1 and len(skel.names) == 127
    n = 12
    params = _tiny_params(n, translate)
    joints, rots = port.skeleton_from_params(*params)
    assert joints.shape == (n, 127, 3) and rots.shape == (n, 127, 3, 3)
    cam_t = np.random.default_rng(1).normal(0, 0.3, (n, 3)) + [0, 0, 4.0]
    positions = joints + cam_t[:, None]
    text = write_bvh(skel.parents, skel.names, positions, rots, 30.0, rest_rotations=skel.rest_rotations)
    bvh = parse_bvh(text)
    assert len(bvh.names) == 127 and len(bvh.motion) == n
    fk_pos, fk_rot = bvh_forward_kinematics(bvh)
    idx = [skel.names.index(name) for name in bvh.names]
    err = np.linalg.norm(fk_pos / 100.0 - (positions @ F.T)[:, idx], axis=-1)
    assert err.max() < MM
    rest_w = (F @ skel.rest_rotations.astype(np.float64) @ F)[idx]
    assert np.abs(fk_rot @ rest_w - (F @ rots.astype(np.float64) @ F)[:, idx]).max() < 1e-4
    moving = {skel.names.index(bvh.names[k]) for k, ch in enumerate(bvh.channels) if "Xposition" in ch}
    assert moving == ({0} | set(TINY_TRANSLATED_JOINTS) if translate else {0})


def test_skeleton_from_params_matches_predict_and_the_mesh_call(port: SAM3DBody) -> None:
    from models.sam_3d_body import BodyItem

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (128, 160, 3), dtype=np.uint8)
    est = port.predict([BodyItem(image, np.array([20.0, 10.0, 120.0, 120.0]))], inference_type="body")[0]
    fields = (est.global_rot, est.body_pose, est.hand_pose, est.shape, est.scale, est.expression)
    joints, rots = port.skeleton_from_params(*(f[None] for f in fields))
    assert np.abs(joints[0] - est.joint_coords).max() < 1e-5
    assert np.abs(rots[0] - F @ est.joint_rotations @ F).max() < 1e-5
    empty = port.skeleton_from_params(*(f[None][:0] for f in fields))
    assert empty[0].shape == (0, 127, 3) and empty[1].shape == (0, 127, 3, 3)


def test_a_body_model_without_a_skeleton_is_refused() -> None:
    class Bare(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    with pytest.raises(
        ValueError, match=r"character_torch\.skeleton\.joint_parents.*released assets/mhr_model\.pt"
    ):
        mhr_skeleton(torch.jit.script(Bare()))
