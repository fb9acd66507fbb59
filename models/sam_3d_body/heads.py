"""MHR pose head and perspective camera head of SAM-3D-Body.

Part of the body4d port of SAM 3D Body (Meta Platforms, Inc.), covered by the SAM License
(see LICENSE-SAM). Buffer names follow the released checkpoint (the MHR constants live there).

The MHR body model itself is the TorchScript ``assets/mhr_model.pt``: a callable
``mhr(shape[B, 45], model_params[B, 204], expr[B, 72]) -> (vertices cm [B, 18439, 3],
skeleton [B, 127, 8] = translation cm, quaternion xyzw, scale)``. It is passed in at call time,
so it is loaded once and shared by the body and hand heads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .geometry import (
    BODY_CONT_DIM,
    BODY_HAND_PARAM_IDXS,
    body_cont_to_params,
    euler_to_rotmat,
    hand_cont_to_params,
    quat_xyzw_to_rotmat,
    rot6d_to_rotmat,
    rotmat_to_euler,
)
from .layers import FFN
from .mhr_layout import (
    NUM_EXPR,
    NUM_FACES,
    NUM_HAND,
    NUM_JOINTS,
    NUM_KP,
    NUM_KP_ROWS,
    NUM_SCALE,
    NUM_SHAPE,
    NUM_VERTS,
)

# Pose vector predicted by the head: 6D global rotation, continuous body pose, shape, scale,
# both hands, expression.
NPOSE = 6 + BODY_CONT_DIM + NUM_SHAPE + NUM_SCALE + 2 * NUM_HAND + NUM_EXPR
NCAM = 3  # (s, tx, ty) weak-perspective style camera, converted to a translation
# MHR's global translation parameter is in decimetres ("more stable to optimise").
TRANS_PARAM_SCALE = 10.0
CM_TO_M = 0.01
RIGHT_HAND_KPS = slice(21, 42)  # MHR70 right-hand keypoints (41 = right wrist)


@dataclass
class PoseOutput:
    """One head evaluation for B crops (camera axes: x right, y down, z forward; metres).

    Attributes:
        pose_raw: [B, 266] 6D global rotation + continuous body pose (the decoder's raw output).
        global_rot: [B, 3] global rotation, intrinsic ZYX Euler angles (radians), MHR order.
        body_pose: [B, 133] MHR body model parameters (hand and jaw entries zero).
        shape: [B, 45] identity coefficients.
        scale: [B, 28] skeleton scale coefficients.
        hand: [B, 108] left then right hand pose in the hand PCA space.
        face: [B, 72] expression coefficients (always zero at inference).
        vertices: [B, 18439, 3] mesh relative to the model origin.
        keypoints_3d: [B, 70, 3] MHR70 keypoints relative to the model origin.
        joint_coords: [B, 127, 3] skeleton joints relative to the model origin.
        joint_rots: [B, 127, 3, 3] global joint rotations (MHR frame, not axis-flipped).
        model_params: [B, 204] the vector passed to MHR.
        cam: [B, 3] raw camera prediction (s, tx, ty).
        cam_t: [B, 3] model-origin translation in the camera frame.
        focal: [B] fx in pixels.
        keypoints_2d: [B, 70, 2] projection in full-image pixels.
        keypoints_depth: [B, 70] camera-frame depth of the keypoints.
        keypoints_crop: [B, 70, 2] projection in crop coordinates normalised to [-0.5, 0.5].
    """

    pose_raw: torch.Tensor
    global_rot: torch.Tensor
    body_pose: torch.Tensor
    shape: torch.Tensor
    scale: torch.Tensor
    hand: torch.Tensor
    face: torch.Tensor
    vertices: torch.Tensor
    keypoints_3d: torch.Tensor
    joint_coords: torch.Tensor
    joint_rots: torch.Tensor
    model_params: torch.Tensor
    cam: torch.Tensor
    cam_t: torch.Tensor
    focal: torch.Tensor
    keypoints_2d: torch.Tensor
    keypoints_depth: torch.Tensor
    keypoints_crop: torch.Tensor


@dataclass
class MHRResult:
    """Output of :meth:`MHRHead.run_mhr` (MHR frame, metres, before the camera axis flip)."""

    vertices: torch.Tensor  # [B, 18439, 3]
    keypoints_3d: torch.Tensor  # [B, 70, 3]
    joint_coords: torch.Tensor  # [B, 127, 3]
    joint_rots: torch.Tensor  # [B, 127, 3, 3]
    model_params: torch.Tensor  # [B, 204]


@dataclass(frozen=True)
class MHRSkeleton:
    """The MHR skeleton hierarchy and bind pose (read by :func:`mhr_skeleton`).

    Attributes:
        parents: int64 (127,) parent joint index, -1 for the root; ``parents[j] < j``.
        names: the 127 joint names (``body_world``, ``root``, ``l_upleg``, ...).
        rest_rotations: float32 (127, 3, 3) global joint orientations of the bind pose (the
            pre-rotations composed down the tree), camera axes like ``skeleton_from_params``.
    """

    parents: np.ndarray
    names: tuple[str, ...]
    rest_rotations: np.ndarray


def mhr_skeleton(mhr: torch.jit.ScriptModule) -> MHRSkeleton:
    """Read the skeleton of the TorchScript body model (``character_torch.skeleton``).

    Raises:
        ValueError: the module lacks ``joint_parents``, ``joint_names`` or ``joint_prerotations``
            (e.g. a ``torch.jit.trace`` export, which drops list attributes), or they disagree.
    """
    try:
        skel = mhr.character_torch.skeleton
        parents = skel.joint_parents.long().cpu().numpy()
        names = tuple(str(n) for n in skel.joint_names)
        prerot = skel.joint_prerotations.detach().double().cpu()
    except (AttributeError, RuntimeError) as err:
        raise ValueError(
            "the MHR body model lacks character_torch.skeleton.joint_parents / joint_names / "
            f"joint_prerotations ({err}); use the released assets/mhr_model.pt (a scripted "
            "pymomentum Character), not a traced re-export"
        ) from err
    n = len(parents)
    if len(names) != n or prerot.shape != (n, 4) or any(not -1 <= p < j for j, p in enumerate(parents)):
        raise ValueError(
            f"the MHR skeleton is inconsistent: {n} parents (each must precede its joint), "
            f"{len(names)} names, pre-rotations of shape {tuple(prerot.shape)}"
        )
    local = quat_xyzw_to_rotmat(torch.nn.functional.normalize(prerot, dim=-1))
    rest = torch.empty_like(local)
    for j, p in enumerate(parents.tolist()):
        rest[j] = local[j] if p < 0 else rest[p] @ local[j]
    return MHRSkeleton(parents, names, flip_yz_rotations(rest).float().numpy())


def flip_yz(x: torch.Tensor) -> torch.Tensor:
    """MHR frame (y up, z backward) -> camera frame (y down, z forward) on [..., 3] points."""
    return x * x.new_tensor([1.0, -1.0, -1.0])


def flip_yz_rotations(rot: torch.Tensor) -> torch.Tensor:
    """MHR-frame rotations [..., 3, 3] -> camera axes: F R F with F = diag(1, -1, -1) (= flip_yz)."""
    flip = rot.new_tensor([1.0, -1.0, -1.0])
    return rot * flip[:, None] * flip[None, :]


class MHRHead(nn.Module):
    """Regresses the MHR pose vector from the pose token and evaluates the body model.

    Args:
        dim: decoder token width.
        mlp_depth: linear layers of the regressor.
        mlp_div: hidden width divisor of the regressor.
        hand_mode: wrist-centric hand variant (used by the hand decoder): the global rotation is
            expressed in the wrist frame, the right wrist is placed at the origin, non-hand
            parameters are zeroed and only right-hand keypoints are kept.
    """

    def __init__(self, dim: int, mlp_depth: int, mlp_div: int, hand_mode: bool) -> None:
        super().__init__()
        self.hand_mode = hand_mode
        self.proj = FFN(dim, dim // mlp_div, NPOSE, mlp_depth)
        # MHR constants, filled from the checkpoint.
        self.register_buffer("joint_rotation", torch.zeros(NUM_JOINTS, 3, 3))
        self.register_buffer("scale_mean", torch.zeros(68))
        self.register_buffer("scale_comps", torch.zeros(NUM_SCALE, 68))
        self.register_buffer("faces", torch.zeros(NUM_FACES, 3, dtype=torch.long))
        self.register_buffer("hand_pose_mean", torch.zeros(NUM_HAND))
        self.register_buffer("hand_pose_comps", torch.eye(NUM_HAND))
        self.register_buffer("hand_joint_idxs_left", torch.zeros(27, dtype=torch.long))
        self.register_buffer("hand_joint_idxs_right", torch.zeros(27, dtype=torch.long))
        self.register_buffer("keypoint_mapping", torch.zeros(NUM_KP_ROWS, NUM_VERTS + NUM_JOINTS))
        self.register_buffer("right_wrist_coords", torch.zeros(3))
        self.register_buffer("root_coords", torch.zeros(3))
        self.register_buffer("local_to_world_wrist", torch.zeros(3, 3))
        self.register_buffer("nonhand_param_idxs", torch.zeros(145, dtype=torch.long))

    def run_mhr(
        self,
        mhr: torch.jit.ScriptModule,
        global_rot: torch.Tensor,
        body_pose: torch.Tensor,
        hand: torch.Tensor,
        scale: torch.Tensor,
        shape: torch.Tensor,
        face: torch.Tensor,
    ) -> MHRResult:
        """Assemble the 204 MHR parameters and evaluate the body model (global translation 0).

        Args:
            mhr: the TorchScript body model.
            global_rot: [B, 3] ZYX Euler angles (radians).
            body_pose: [B, 133] body model parameters (only the first 130 are used).
            hand: [B, 108] left/right hand pose in PCA space.
            scale: [B, 28]; shape: [B, 45]; face: [B, 72].
        """
        trans = torch.zeros_like(global_rot)
        if self.hand_mode:
            rot = euler_to_rotmat("xyz", global_rot) @ self.local_to_world_wrist
            global_rot = rotmat_to_euler("xyz", rot)
            wrist = self.right_wrist_coords - self.root_coords
            trans = -(euler_to_rotmat("xyz", global_rot) @ wrist + self.root_coords) + trans
        scales = self.scale_mean[None, :] + scale @ self.scale_comps
        pose = torch.cat([trans * TRANS_PARAM_SCALE, global_rot, body_pose[:, :130]], dim=1)
        left = hand_cont_to_params(self.hand_pose_mean + hand[:, :NUM_HAND] @ self.hand_pose_comps)
        right = hand_cont_to_params(self.hand_pose_mean + hand[:, NUM_HAND:] @ self.hand_pose_comps)
        pose[:, self.hand_joint_idxs_left] = left
        pose[:, self.hand_joint_idxs_right] = right
        params = torch.cat([pose, scales], dim=1)
        if self.hand_mode:
            params[:, self.nonhand_param_idxs] = 0
        verts_cm, skel = mhr(shape, params, face)
        verts = verts_cm * CM_TO_M
        joints = skel[..., :3] * CM_TO_M
        rots = quat_xyzw_to_rotmat(skel[..., 3:7])
        both = torch.cat([verts, joints], dim=1)  # [B, V + J, 3]
        kps = torch.einsum("kn,bnc->bkc", self.keypoint_mapping[:NUM_KP], both)
        if self.hand_mode:
            keep = torch.zeros(NUM_KP, 1, dtype=kps.dtype, device=kps.device)
            keep[RIGHT_HAND_KPS] = 1.0
            kps = kps * keep
        return MHRResult(verts, kps, joints, rots, params)

    def decode(self, token: torch.Tensor, init_pose: torch.Tensor) -> dict[str, torch.Tensor]:
        """Pose token [B, D] + learned initial pose [1, 519] -> named parameter tensors."""
        pred = self.proj(token) + init_pose
        rot6d, cont = pred[:, :6], pred[:, 6 : 6 + BODY_CONT_DIM]
        rest = pred[:, 6 + BODY_CONT_DIM :].split([NUM_SHAPE, NUM_SCALE, 2 * NUM_HAND, NUM_EXPR], dim=1)
        body_pose = body_cont_to_params(cont)
        body_pose[:, BODY_HAND_PARAM_IDXS.to(body_pose.device)] = 0
        body_pose[:, -3:] = 0  # jaw: not predicted
        return {
            "pose_raw": torch.cat([rot6d, cont], dim=1),
            "global_rot": rotmat_to_euler("ZYX", rot6d_to_rotmat(rot6d)),
            "body_pose": body_pose,
            "shape": rest[0],
            "scale": rest[1],
            "hand": rest[2],
            "face": rest[3] * 0,  # expression is switched off in the released model
        }


class CameraHead(nn.Module):
    """Regresses (s, tx, ty) and turns it into a full-image perspective translation.

    Args:
        dim: decoder token width.
        mlp_depth: linear layers of the regressor.
        mlp_div: hidden width divisor of the regressor.
        box_scale: multiplier on the box size (10 for the hand head: hands are small).
    """

    def __init__(self, dim: int, mlp_depth: int, mlp_div: int, box_scale: float) -> None:
        super().__init__()
        self.box_scale = box_scale
        self.proj = FFN(dim, dim // mlp_div, NCAM, mlp_depth)

    def translation(
        self, cam: torch.Tensor, box_center: torch.Tensor, box_size: torch.Tensor, K: torch.Tensor
    ) -> torch.Tensor:
        """Camera prediction [B, 3] -> translation [B, 3] (metres, camera frame).

        Depth is 2 f / (box_size * s * box_scale); the box-centre offset from the principal
        point sets x and y (CLIFF-style full-perspective camera).

        Args:
            cam: (s, tx, ty) as predicted (sign conventions of the training code).
            box_center: [B, 2] crop box centre in pixels; box_size: [B] crop box side in pixels.
            K: [B, 3, 3] intrinsics in pixels.
        """
        s, tx, ty = -cam[:, 0], cam[:, 1], -cam[:, 2]
        bs = box_size * s * self.box_scale + 1e-8
        tz = 2 * K[:, 0, 0] / bs
        cx = 2 * (box_center[:, 0] - K[:, 0, 2]) / bs
        cy = 2 * (box_center[:, 1] - K[:, 1, 2]) / bs
        return torch.stack([tx + cx, ty + cy, tz], dim=-1)


def project(points: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Camera-frame points [B, N, 3] -> pixels [B, N, 2] with intrinsics [B, 3, 3]."""
    y = points / points[..., 2:3]
    return torch.einsum("bij,bkj->bki", K, y)[..., :2]
