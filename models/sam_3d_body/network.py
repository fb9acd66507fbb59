"""The SAM-3D-Body network: DINOv3 encoder, prompt encoder and two promptable decoder branches.

Part of the body4d port of SAM 3D Body (Meta Platforms, Inc.), covered by the SAM License
(see LICENSE-SAM). The released model duplicates every decoder-side module for the hand
decoder (``decoder`` / ``decoder_hand``, ``head_pose`` / ``head_pose_hand`` ...); here both are
instances of one :class:`Branch`, and :mod:`.checkpoint` maps the released names onto
``body.*`` / ``hand.*``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import DINOv3Backbone
from .config import ModelConfig
from .heads import NCAM, NPOSE, CameraHead, MHRHead, PoseOutput, flip_yz, project
from .layers import FFN, MLP, PromptableDecoder
from .prompt import NUM_KEYPOINTS, CameraRayEncoder, PromptEncoder, RandomFourierPE

CLIFF_DIM = 3  # (box cx - cx) / f, (box cy - cy) / f, box size / f
PELVIS_KPS = (9, 10)  # MHR70 left/right hip: the 3D keypoint tokens are pelvis-centred
# A keypoint token stops being updated from the image when its projection leaves the crop or
# lies behind the camera (depth below this, metres).
MIN_KEYPOINT_DEPTH = 1e-5


@dataclass(frozen=True)
class CropBatch:
    """Geometry of B crops, all tensors on the model device, float32.

    Attributes:
        box_center: [B, 2] centre of the (padded, squared) crop box in full-image pixels.
        box_size: [B] side of that box in full-image pixels.
        K: [B, 3, 3] intrinsics of each crop's full image, pixels.
        affine: [B, 2, 3] full-image pixels -> crop pixels.
        rays: [B, 2, S, S] per crop pixel ((x - cx) / fx, (y - cy) / fy) in the full image.
        crop_size: S, the crop side in pixels.
    """

    box_center: torch.Tensor
    box_size: torch.Tensor
    K: torch.Tensor
    affine: torch.Tensor
    rays: torch.Tensor
    crop_size: int

    def condition(self) -> torch.Tensor:
        """CLIFF condition [B, 3]: box centre offset from the principal point and box size, over fx."""
        f = self.K[:, 0, 0]
        return torch.stack(
            [
                (self.box_center[:, 0] - self.K[:, 0, 2]) / f,
                (self.box_center[:, 1] - self.K[:, 1, 2]) / f,
                self.box_size / f,
            ],
            dim=-1,
        )

    def to_crop(self, pts: torch.Tensor) -> torch.Tensor:
        """Full-image pixels [B, N, 2] -> crop coordinates normalised to [-0.5, 0.5]."""
        homog = torch.cat([pts, torch.ones_like(pts[..., :1])], dim=-1)
        return (homog @ self.affine.mT) / self.crop_size - 0.5


class Branch(nn.Module):
    """Decoder-side modules of one branch (body or hand).

    Args:
        cfg: architecture.
        hand: build the hand variant (wrist-centric MHR head, 10x camera box scale).
    """

    def __init__(self, cfg: ModelConfig, hand: bool) -> None:
        super().__init__()
        d, c = cfg.decoder_dim, cfg.backbone.hidden_size
        self.init_pose = nn.Embedding(1, NPOSE)
        self.init_camera = nn.Embedding(1, NCAM)
        self.init_to_token = nn.Linear(CLIFF_DIM + NPOSE + NCAM, d)
        self.prev_to_token = nn.Linear(NPOSE + NCAM, d)
        self.ray_encoder = CameraRayEncoder(c, cfg.backbone.patch_size)
        self.decoder = PromptableDecoder(
            d, c, cfg.decoder_depth, cfg.decoder_heads, cfg.decoder_head_dim, cfg.decoder_mlp_dim
        )
        self.keypoint2d_tokens = nn.Embedding(NUM_KEYPOINTS, d)
        self.keypoint3d_tokens = nn.Embedding(NUM_KEYPOINTS, d)
        self.keypoint2d_pe = FFN(2, d, d, 2)
        self.keypoint3d_pe = FFN(3, d, d, 2)
        self.keypoint_feat = nn.Linear(c, d)
        self.pose_head = MHRHead(d, cfg.head_mlp_depth, cfg.head_mlp_div, hand_mode=hand)
        self.camera_head = CameraHead(
            d, cfg.head_mlp_depth, cfg.head_mlp_div, cfg.hand_camera_scale if hand else 1.0
        )

    def init_estimate(self, batch: int) -> torch.Tensor:
        """Learned initial pose + camera [B, 522]."""
        return torch.cat([self.init_pose.weight, self.init_camera.weight], dim=-1).expand(batch, -1)

    def predict(self, token: torch.Tensor, crops: CropBatch, mhr: torch.jit.ScriptModule) -> PoseOutput:
        """Normalised pose token [B, D] -> pose, mesh and projections."""
        p = self.pose_head.decode(token, self.init_pose.weight)
        res = self.pose_head.run_mhr(
            mhr, p["global_rot"], p["body_pose"], p["hand"], p["scale"], p["shape"], p["face"]
        )
        kps = flip_yz(res.keypoints_3d)
        cam = self.camera_head.proj(token) + self.init_camera.weight
        cam_t = self.camera_head.translation(cam, crops.box_center, crops.box_size, crops.K)
        kp_cam = kps + cam_t[:, None]
        kp2d = project(kp_cam, crops.K)
        return PoseOutput(
            vertices=flip_yz(res.vertices),
            keypoints_3d=kps,
            joint_coords=flip_yz(res.joint_coords),
            joint_rots=res.joint_rots,
            model_params=res.model_params,
            cam=cam,
            cam_t=cam_t,
            focal=crops.K[:, 0, 0],
            keypoints_2d=kp2d,
            keypoints_depth=kp_cam[..., 2],
            keypoints_crop=crops.to_crop(kp2d),
            **p,
        )


class SAM3DBodyNet(nn.Module):
    """All weights of SAM-3D-Body (the TorchScript MHR body model is held by the caller).

    Args:
        cfg: architecture.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c, d = cfg.backbone.hidden_size, cfg.decoder_dim
        self.register_buffer("image_mean", torch.tensor(cfg.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(cfg.image_std).view(1, 3, 1, 1), persistent=False)
        self.backbone = DINOv3Backbone(cfg.backbone)
        self.prompt_encoder = PromptEncoder(c)
        self.prompt_to_token = nn.Linear(c, d)
        self.hand_pe_layer = RandomFourierPE(c // 2)
        self.hand_box_embedding = nn.Embedding(2, d)
        self.bbox_embed = MLP(d, d, 4, 3)
        self.body = Branch(cfg, hand=False)
        self.hand = Branch(cfg, hand=True)

    def encode(self, images: torch.Tensor, masks: torch.Tensor, has_mask: torch.Tensor) -> torch.Tensor:
        """Crops -> image features with the mask prompt added.

        Args:
            images: [B, 3, S, S] RGB in [0, 1].
            masks: [B, 1, S, S] 0/1 person masks (ignored where ``has_mask`` is False).
            has_mask: [B] bool.
        Returns:
            [B, C, S/p, S/p] float32.
        """
        x = (images - self.image_mean) / self.image_std
        dtype = next(self.backbone.parameters()).dtype
        feats = self.backbone(x.to(dtype)).float()
        return feats + self.prompt_encoder.embed_masks(masks, has_mask, feats.shape[-2:])

    def decode(
        self,
        branch: Branch,
        feats: torch.Tensor,
        crops: CropBatch,
        prompts: torch.Tensor,
        prev: torch.Tensor | None,
        mhr: torch.jit.ScriptModule,
    ) -> tuple[PoseOutput, torch.Tensor]:
        """One promptable decoder pass, with an MHR prediction after every layer.

        Token order: pose, previous estimate, P prompts, 2 hand boxes, 70 2D keypoints,
        70 3D keypoints. After each layer but the last, the keypoint tokens are refreshed from
        that layer's prediction (2D: position encoding + features sampled at the projected
        keypoints; 3D: encoding of the pelvis-centred keypoints).

        Args:
            branch: ``self.body`` or ``self.hand``.
            feats: [B, C, h, w] from :meth:`encode`.
            crops: crop geometry.
            prompts: [B, P, 3] keypoint prompts (x, y in [0, 1] of the crop, label).
            prev: [B, 522] previous estimate, or None for the learned initial estimate.
            mhr: the TorchScript body model.
        Returns:
            the final prediction and the hand-box boxes [B, 2, 4] (cx, cy, w, h in [0, 1] of the crop,
            left hand first).
        """
        b = feats.shape[0]
        init = branch.init_estimate(b)
        token = branch.init_to_token(torch.cat([crops.condition(), init], dim=-1))[:, None]
        prev_tok = branch.prev_to_token(init if prev is None else prev)[:, None]
        prompt_tok = self.prompt_to_token(self.prompt_encoder.embed_points(prompts))
        d = token.shape[-1]
        fixed = [
            self.hand_box_embedding.weight,
            branch.keypoint2d_tokens.weight,
            branch.keypoint3d_tokens.weight,
        ]
        tokens = torch.cat([token, prev_tok, prompt_tok, *(w.expand(b, -1, -1) for w in fixed)], dim=1)
        n_fixed = sum(w.shape[0] for w in fixed)
        augment = torch.cat(
            [torch.zeros_like(token), prev_tok, prompt_tok, tokens.new_zeros(b, n_fixed, d)], dim=1
        )
        kp2 = 2 + prompts.shape[1] + self.hand_box_embedding.weight.shape[0]
        kp3 = kp2 + NUM_KEYPOINTS

        feats = branch.ray_encoder(feats, crops.rays)
        pe_layer = self.prompt_encoder.pe_layer if branch is self.body else self.hand_pe_layer
        context_pe = pe_layer.dense(*feats.shape[-2:]).flatten(2).transpose(1, 2)
        context = feats.flatten(2).transpose(1, 2)
        layers = branch.decoder.layers
        for i, layer in enumerate(layers):
            tokens = layer(tokens, context, augment, context_pe)
            if i == len(layers) - 1:
                break
            out = branch.predict(branch.decoder.norm_final(tokens)[:, 0], crops, mhr)
            kp = out.keypoints_crop
            inside = ((kp + 0.5 >= 0) & (kp + 0.5 <= 1)).all(-1)
            valid = (inside & (out.keypoints_depth >= MIN_KEYPOINT_DEPTH))[..., None]
            sampled = F.grid_sample(
                feats, (kp * 2)[:, :, None, :], mode="bilinear", padding_mode="zeros", align_corners=False
            )
            sampled = sampled.squeeze(3).permute(0, 2, 1) * valid
            kp3d = out.keypoints_3d
            kp3d = kp3d - (kp3d[:, [PELVIS_KPS[0]]] + kp3d[:, [PELVIS_KPS[1]]]) / 2
            tokens = torch.cat(
                [tokens[:, :kp2], tokens[:, kp2:kp3] + branch.keypoint_feat(sampled), tokens[:, kp3:]], dim=1
            )
            augment = torch.cat(
                [augment[:, :kp2], branch.keypoint2d_pe(kp) * valid, branch.keypoint3d_pe(kp3d)], dim=1
            )
        normed = branch.decoder.norm_final(tokens)
        out = branch.predict(normed[:, 0], crops, mhr)
        hand_boxes = self.bbox_embed(normed[:, kp2 - 2 : kp2]).sigmoid()
        return out, hand_boxes
