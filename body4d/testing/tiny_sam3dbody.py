"""Tiny random SAM-3D-Body checkpoint folder for CPU tests (no real weights involved).

``write_tiny_sam3dbody(root)`` writes ``root/sam-3d-body-dinov3/`` in the released layout:
``model.ckpt`` in the inventory of the real file (:func:`release_inventory`: a flat dict, bf16
encoder, fp32 heads, int64 indices, zero qkv bias masks, bf16 RoPE periods, three keys absent,
shared head buffers), ``model_config.yaml`` (the released flags at tiny widths, plus a
``BODY4D_BACKBONE`` section giving the tiny encoder shape), ``assets/mhr_model.pt`` (a
TorchScript stand-in with MHR's call interface) and the empty marker
``BODY4D_TINY_TEST_CHECKPOINT``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from models.sam_3d_body.backbone import HUB_PREFIX
from models.sam_3d_body.checkpoint import to_released_state_dict
from models.sam_3d_body.config import BackboneConfig, parse_model_config, swiglu_hidden_size
from models.sam_3d_body.geometry import rot6d_to_rotmat
from models.sam_3d_body.heads import MHRHead
from models.sam_3d_body.mhr_layout import NUM_JOINTS, NUM_KP_ROWS, NUM_VERTS
from models.sam_3d_body.network import SAM3DBodyNet

FOLDER = "sam-3d-body-dinov3"
MARKER = "BODY4D_TINY_TEST_CHECKPOINT"
TINY_CROP = 64
TINY_BACKBONE = BackboneConfig(
    hidden_size=64,
    num_layers=2,
    num_heads=4,
    gated_mlp=True,
    num_registers=4,
    intermediate_size=swiglu_hidden_size(64, 6.0),
)

# Keys of Meta's model class that the released model.ckpt does not contain.
ABSENT_FROM_RELEASE = (
    "backbone.encoder.mask_token",
    "head_pose.hand_pose_comps_ori",
    "head_pose_hand.hand_pose_comps_ori",
)
# The release stores eight head buffers once for head_pose and head_pose_hand (one storage).
# Which eight is not published; these are constants of the MHR model that both heads hold.
SHARED_HEAD_BUFFERS = (
    "joint_rotation",
    "scale_mean",
    "scale_comps",
    "faces",
    "hand_pose_mean",
    "hand_joint_idxs_left",
    "hand_joint_idxs_right",
    "nonhand_param_idxs",
)

# The released model_config.yaml with tiny widths; flags identical to the release.
_CONFIG: dict[str, Any] = {
    "TRAIN": {"USE_FP16": False, "FP16_TYPE": "float16"},
    "MODEL": {
        "IMAGE_SIZE": [TINY_CROP, TINY_CROP],
        "IMAGE_MEAN": [0.485, 0.456, 0.406],
        "IMAGE_STD": [0.229, 0.224, 0.225],
        "BACKBONE": {
            "TYPE": "dinov3_vith16plus",
            "PRETRAINED_WEIGHTS": "",
            "FROZEN_STAGES": -1,
            "DROP_PATH_RATE": 0.0,
        },
        "DECODER": {
            "TYPE": "sam",
            "DIM": 32,
            "DEPTH": 2,
            "HEADS": 2,
            "MLP_DIM": 64,
            "DIM_HEAD": 16,
            "LAYER_SCALE_INIT": 0.0,
            "DROP_RATE": 0.0,
            "ATTN_DROP_RATE": 0.0,
            "DROP_PATH_RATE": 0.0,
            "FFN_TYPE": "origin",
            "ENABLE_TWOWAY": False,
            "REPEAT_PE": True,
            "FROZEN": False,
            "CONDITION_TYPE": "cliff",
            "USE_INTRIN_CENTER": True,
            "DO_INTERM_PREDS": True,
            "DO_INTERM_SUP": True,
            "DO_KEYPOINT_TOKENS": True,
            "DO_HAND_DETECT_TOKENS": True,
            "KEYPOINT_TOKEN_UPDATE": "v2",
            "KEYPOINT_TOKEN_UPDATE_COORD_EMB_USE_MLP": True,
            "DO_KEYPOINT3D_TOKENS": True,
        },
        "PROMPT_ENCODER": {
            "ENABLE": True,
            "MAX_NUM_CLICKS": 2,
            "PROMPT_KEYPOINTS": "mhr70",
            "FROZEN": False,
            "KEYPOINT_SAMPLER": {
                "TYPE": "v1",
                "WORST_RATIO": 0.8,
                "KEYBODY_RATIO": 0.8,
                "NEGATIVE_RATIO": 0.1,
                "DUMMY_RATIO": 0.1,
                "DISTANCE_THRESH": 0.0001,
            },
            "MASK_EMBED_TYPE": "v2",
            "MASK_PROMPT": "v1",
        },
        "PERSON_HEAD": {
            "POSE_TYPE": "mhr",
            "CAMERA_ENABLE": True,
            "CAMERA_TYPE": "perspective",
            "ZERO_POSE_INIT": True,
            "ZERO_POSE_INIT_BODY_FACTOR": 1,
        },
        "MHR_HEAD": {"MLP_DEPTH": 2, "MLP_CHANNEL_DIV_FACTOR": 1},
        "CAMERA_HEAD": {"MLP_DEPTH": 2, "MLP_CHANNEL_DIV_FACTOR": 1, "DEFAULT_SCALE_FACTOR_HAND": 10},
        "ENABLE_BODY": True,
        "ENABLE_HAND": True,
    },
}


def tiny_model_config() -> dict[str, Any]:
    """The tiny ``model_config.yaml`` content (a fresh copy)."""
    cfg = copy.deepcopy(_CONFIG)
    cfg["BODY4D_BACKBONE"] = {k: getattr(TINY_BACKBONE, k) for k in TINY_BACKBONE.__dataclass_fields__}
    return cfg


# TinyMHR skeleton: joints driven by translation DoFs (two joints x 3 model params, like MHR's six
# body-pose translations, model params 130..135), and the log2 scale range of every joint.
TINY_TRANSLATED_JOINTS = (30, 90)
TRANSLATION_PARAMS = (130, 136)
SCALE_PARAMS = (136, 204)
LOG2_SCALE_RANGE = 0.1


def tiny_skeleton_tree(n_joints: int, g: torch.Generator) -> list[int]:
    """Parents of a random topologically sorted tree: 0 ``body_world`` (root), 1 ``root``, then
    each joint hangs from one of the 8 joints before it (depth ~25, like MHR's chains)."""
    parents = [-1, 0]
    for j in range(2, n_joints):
        parents.append(int(torch.randint(max(1, j - 8), j, (1,), generator=g)))
    return parents


def _quat_mul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product of xyzw quaternions [..., 4]."""
    ax, ay, az, aw = a.unbind(-1)
    bx, by, bz, bw = b.unbind(-1)
    return torch.stack(
        [
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
            aw * bw - ax * bx - ay * by - az * bz,
        ],
        dim=-1,
    )


def _quat_rotate(q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Rotate vectors [..., 3] by unit xyzw quaternions [..., 4]."""
    u, w = q[..., :3], q[..., 3:]
    t = 2.0 * torch.linalg.cross(u, v, dim=-1)
    return v + w * t + torch.linalg.cross(u, t, dim=-1)


def _euler_xyz_to_quat(e: torch.Tensor) -> torch.Tensor:
    """Extrinsic xyz Euler angles [..., 3] (R = Rz Ry Rx, pymomentum's joint rotation) -> xyzw."""
    h = 0.5 * e
    c, s = torch.cos(h), torch.sin(h)
    zero = torch.zeros_like(h[..., 0])
    qx = torch.stack([s[..., 0], zero, zero, c[..., 0]], dim=-1)
    qy = torch.stack([zero, s[..., 1], zero, c[..., 1]], dim=-1)
    qz = torch.stack([zero, zero, s[..., 2], c[..., 2]], dim=-1)
    return _quat_mul(qz, _quat_mul(qy, qx))


class TinySkeleton(nn.Module):
    """``character_torch.skeleton`` of :class:`TinyMHR`: the buffers and attributes of
    pymomentum's ``Skeleton`` (parents int32, names, rest offsets cm, pre-rotations xyzw) and its
    forward kinematics (float64, like momentum)."""

    def __init__(self, g: torch.Generator) -> None:
        super().__init__()
        parents = tiny_skeleton_tree(NUM_JOINTS, g)
        names = ["body_world", "root"] + [f"joint_{j:03d}" for j in range(2, NUM_JOINTS)]
        self.joint_names: list[str] = names
        self.register_buffer("joint_parents", torch.tensor(parents, dtype=torch.int32))
        offsets = torch.randn(NUM_JOINTS, 3, generator=g) * 4.0
        offsets[0] = 0.0
        self.register_buffer("joint_translation_offsets", offsets)
        self.register_buffer(
            "joint_prerotations",
            torch.nn.functional.normalize(torch.randn(NUM_JOINTS, 4, generator=g), dim=-1),
        )

    def joint_parameters_to_skeleton_state(self, joint_params: torch.Tensor) -> torch.Tensor:
        """Joint parameters [B, J, 7] (translation cm, xyz Euler rad, log2 scale) -> global
        skeleton state [B, J, 8] (translation cm, quaternion xyzw, scale)."""
        jp = joint_params.double()
        parents: list[int] = self.joint_parents.long().tolist()
        t_local = jp[..., 0:3] + self.joint_translation_offsets.double()
        pre = self.joint_prerotations.double().expand(jp.shape[0], -1, -1)
        q_local = _quat_mul(pre, _euler_xyz_to_quat(jp[..., 3:6]))
        s_local = torch.exp2(jp[..., 6:7])
        ts: list[torch.Tensor] = []
        qs: list[torch.Tensor] = []
        ss: list[torch.Tensor] = []
        for j, p in enumerate(parents):
            if p < 0:
                ts.append(t_local[:, j])
                qs.append(q_local[:, j])
                ss.append(s_local[:, j])
            else:
                ts.append(ts[p] + ss[p] * _quat_rotate(qs[p], t_local[:, j]))
                qs.append(_quat_mul(qs[p], q_local[:, j]))
                ss.append(ss[p] * s_local[:, j])
        state = torch.cat([torch.stack(ts, 1), torch.stack(qs, 1), torch.stack(ss, 1)], dim=-1)
        return state.to(joint_params.dtype)


class TinyCharacter(nn.Module):
    """``character_torch`` of :class:`TinyMHR` (holds the skeleton, like pymomentum's ``Character``)."""

    def __init__(self, g: torch.Generator) -> None:
        super().__init__()
        self.skeleton = TinySkeleton(g)


class TinyMHR(nn.Module):
    """Stand-in for ``mhr_model.pt`` with MHR's interface, output sizes and skeleton layout, seeded.

    ``forward(shape[B, 45], model_params[B, 204], expr[B, 72] | None, apply_correctives=True)``
    returns vertices in cm ``[B, 18439, 3]`` and a skeleton ``[B, 127, 8]`` per joint
    (translation cm, unit quaternion xyzw, scale). Vertices are smooth, bounded functions of
    every input. The skeleton is real forward kinematics of ``character_torch.skeleton``: the
    root moves with model params 0..2 (decimetres) and turns with 3..5, every joint turns with
    every input, :data:`TINY_TRANSLATED_JOINTS` translate with :data:`TRANSLATION_PARAMS`, and
    bone scales depend on the scale params and the shape only (constant for a locked identity).
    """

    def __init__(self, seed: int = 0, rank: int = 8) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        n_in = 45 + 204 + 72
        self.register_buffer("rest_verts", torch.randn(NUM_VERTS, 3, generator=g) * 30.0)
        self.register_buffer("vert_basis", torch.randn(rank, NUM_VERTS * 3, generator=g) * 2.0)
        self.register_buffer("to_latent", torch.randn(n_in, rank, generator=g) * 0.2)
        self.register_buffer("to_euler", torch.randn(n_in, NUM_JOINTS * 3, generator=g) * 0.2)
        self.register_buffer("to_log2_scale", torch.randn(45 + 68, NUM_JOINTS, generator=g) * 0.2)
        self.register_buffer("translated_joints", torch.tensor(TINY_TRANSLATED_JOINTS))
        self.character_torch = TinyCharacter(g)
        # Plain ints: TorchScript compiles them as constants (module globals are not visible).
        self.n_joints, self.trans_params, self.scale_params = NUM_JOINTS, TRANSLATION_PARAMS, SCALE_PARAMS
        self.log2_scale_range = LOG2_SCALE_RANGE

    def forward(
        self,
        shape: torch.Tensor,
        model_params: torch.Tensor,
        expr: torch.Tensor | None = None,
        apply_correctives: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b = model_params.shape[0]
        if expr is None:
            expr = torch.zeros(b, 72, dtype=model_params.dtype, device=model_params.device)
        shape = shape.expand(b, -1)
        x = torch.cat([shape, model_params, expr], dim=1)
        z = torch.tanh(x @ self.to_latent)
        verts = self.rest_verts.unsqueeze(0) + (z @ self.vert_basis).view(b, -1, 3)
        trans = torch.zeros(b, self.n_joints, 3, dtype=x.dtype, device=x.device)
        trans[:, 0] = 10.0 * model_params[:, 0:3]
        t_lo, t_hi = self.trans_params
        trans[:, self.translated_joints] = 5.0 * torch.tanh(model_params[:, t_lo:t_hi]).view(b, -1, 3)
        euler = (0.5 * torch.tanh(x @ self.to_euler)).view(b, -1, 3).clone()
        euler[:, 0] = euler[:, 0] + model_params[:, 3:6]
        s_lo, s_hi = self.scale_params
        scale_in = torch.cat([shape, model_params[:, s_lo:s_hi]], dim=1)
        log2_scale = self.log2_scale_range * torch.tanh(scale_in @ self.to_log2_scale).unsqueeze(-1)
        joint_params = torch.cat([trans, euler, log2_scale], dim=-1)
        return verts, self.character_torch.skeleton.joint_parameters_to_skeleton_state(joint_params)


def write_tiny_mhr(path: Path, seed: int = 0) -> None:
    """Script and save :class:`TinyMHR` to ``path`` (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.script(TinyMHR(seed).eval()).save(str(path))


def _random_rotations(n: int, g: torch.Generator) -> torch.Tensor:
    return rot6d_to_rotmat(torch.randn(n, 6, generator=g))


def _fill_mhr_constants(head: MHRHead, g: torch.Generator) -> None:
    """Plausible MHR constants: rotations are rotations, indices are valid and disjoint."""
    n_params = 204
    hand_idxs = torch.arange(68, 122)  # the 54 hand entries of the 136 pose parameters
    others = torch.tensor(
        [i for i in range(n_params) if i not in set(hand_idxs.tolist()) and i not in (1, 2, 3, 4, 5)]
    )
    km = torch.zeros(NUM_KP_ROWS, NUM_VERTS + NUM_JOINTS)
    km[torch.arange(NUM_KP_ROWS), torch.randint(0, NUM_VERTS + NUM_JOINTS, (NUM_KP_ROWS,), generator=g)] = 1.0
    values = {
        "joint_rotation": _random_rotations(NUM_JOINTS, g),
        "scale_mean": torch.randn(68, generator=g) * 0.1,
        "scale_comps": torch.randn(28, 68, generator=g) * 0.05 + torch.eye(28, 68),
        # A triangle strip over the vertex list: every vertex is used, like the real MHR mesh.
        "faces": (torch.arange(36874)[:, None] + torch.arange(3)[None, :]) % NUM_VERTS,
        "hand_pose_mean": torch.randn(54, generator=g) * 0.1,
        "hand_pose_comps": torch.eye(54) + torch.randn(54, 54, generator=g) * 0.05,
        "hand_joint_idxs_left": hand_idxs[:27],
        "hand_joint_idxs_right": hand_idxs[27:],
        "keypoint_mapping": km,
        "right_wrist_coords": torch.randn(3, generator=g) * 0.3,
        "root_coords": torch.randn(3, generator=g) * 0.1,
        "local_to_world_wrist": _random_rotations(1, g)[0],
        "nonhand_param_idxs": others[:145],
    }
    for name, value in values.items():
        getattr(head, name).copy_(value)


def tiny_state_dict(seed: int = 0, accept_hands: bool = False) -> dict[str, torch.Tensor]:
    """Random tiny weights in the released key layout (float32, as this port writes them).

    Like the release, the attention q/k/v biases are zero and the heads share their MHR
    constants (:data:`SHARED_HEAD_BUFFERS`).

    Args:
        seed: weight seed.
        accept_hands: make "full" mode accept the hand decoder's estimates (except for the
            wrist-angle check): hand boxes centred on the person, hand keypoints and body
            wrists at the model origin, so the hand checks pass and the splice path runs.
    """
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed + 1)
    cfg = parse_model_config(tiny_model_config(), TINY_BACKBONE)
    net = SAM3DBodyNet(cfg)
    with torch.no_grad():
        for name, p in net.backbone.named_parameters():
            if "layer_scale" in name:
                p.fill_(0.1)  # the hub init (1e-5) would make the tiny encoder almost an identity
            elif name.endswith(("q_proj.bias", "v_proj.bias")):
                p.zero_()
        for branch in (net.body, net.hand):
            branch.init_camera.weight.copy_(torch.tensor([[-1.0, 0.0, 0.0]]))  # scale s = 1 (s = -cam[0])
            last = branch.camera_head.proj.layers[-1]
            last.weight.mul_(0.01)
            last.bias.zero_()
            _fill_mhr_constants(branch.pose_head, g)
        for name in SHARED_HEAD_BUFFERS:
            getattr(net.hand.pose_head, name).copy_(getattr(net.body.pose_head, name))
        if accept_hands:
            net.bbox_embed.layers[-1].weight.zero_()
            net.bbox_embed.layers[-1].bias.zero_()
            net.hand.pose_head.keypoint_mapping[21:42] = 0.0
            net.body.pose_head.keypoint_mapping[[41, 62]] = 0.0
    return to_released_state_dict(net)


def release_inventory(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A checkpoint in the released key layout -> the inventory of the real ``model.ckpt``.

    As in ../shared/research/real-checkpoints.md: the three :data:`ABSENT_FROM_RELEASE` keys
    dropped; every encoder tensor bf16 (RoPE periods included, so they are bf16-rounded); every
    other float tensor fp32 and index tensors int64; all-zero ``qkv.bias_mask`` buffers; the
    :data:`SHARED_HEAD_BUFFERS` stored once for both heads.

    Raises:
        ValueError: the heads' shared buffers differ (they could not share one storage).
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key in ABSENT_FROM_RELEASE:
            continue
        if key.endswith("attn.qkv.bias_mask"):
            value = torch.zeros_like(value)
        out[key] = value.to(release_dtype(key, value))
    for name in SHARED_HEAD_BUFFERS:
        body, hand = out[f"head_pose.{name}"], out[f"head_pose_hand.{name}"]
        if not torch.equal(body, hand):
            raise ValueError(f"head_pose.{name} and head_pose_hand.{name} differ: they cannot be shared")
        out[f"head_pose_hand.{name}"] = body
    return out


def release_dtype(key: str, value: torch.Tensor) -> torch.dtype:
    """The dtype of ``key`` in the released file: bf16 encoder, int64 indices, fp32 otherwise."""
    if not value.is_floating_point():
        return torch.int64
    return torch.bfloat16 if key.startswith(HUB_PREFIX) else torch.float32


def write_tiny_sam3dbody(root: Path, seed: int = 0, accept_hands: bool = False) -> None:
    """Write ``root/sam-3d-body-dinov3/{model.ckpt, model_config.yaml, assets/mhr_model.pt}``
    (``model.ckpt`` in the real file's inventory) and the empty ``BODY4D_TINY_TEST_CHECKPOINT``
    marker (``accept_hands``: see :func:`tiny_state_dict`)."""
    folder = Path(root) / FOLDER
    (folder / "assets").mkdir(parents=True, exist_ok=True)
    (folder / "model_config.yaml").write_text(yaml.safe_dump(tiny_model_config()))
    torch.save(release_inventory(tiny_state_dict(seed, accept_hands)), folder / "model.ckpt")
    write_tiny_mhr(folder / "assets" / "mhr_model.pt", seed)
    (folder / MARKER).touch()
