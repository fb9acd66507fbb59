"""Prompt encoder (keypoints, mask) and camera-ray conditioning of SAM-3D-Body.

Part of the body4d port of SAM 3D Body (Meta Platforms, Inc.), covered by the SAM License
(see LICENSE-SAM). Submodule names follow the released checkpoint.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .layers import LayerNorm2d

NUM_KEYPOINTS = 70  # MHR70 keypoints, also the prompt labels 0..69
LABEL_NOT_A_POINT = -1
LABEL_INVALID = -2  # placeholder prompt ("dummy"): carries no position

# Fourier encoding of camera rays: 3 inputs (x, y, 1) x 16 bands x (sin, cos) + the raw 3.
RAY_BANDS = 16
RAY_MAX_RESOLUTION = 64
RAY_CHANNELS = 3 + 3 * RAY_BANDS * 2


class RandomFourierPE(nn.Module):
    """Positional encoding with a fixed random Gaussian frequency matrix (SAM style).

    Args:
        num_feats: frequencies; the encoding has ``2 * num_feats`` channels.
    """

    def __init__(self, num_feats: int) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, num_feats))

    def encode(self, coords: torch.Tensor) -> torch.Tensor:
        """Points [..., 2] in [0, 1] (x, y) -> [..., 2 * num_feats]."""
        proj = 2 * math.pi * ((2 * coords - 1) @ self.positional_encoding_gaussian_matrix)
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)

    def dense(self, h: int, w: int) -> torch.Tensor:
        """Encoding of the cell centres of an h x w grid -> [1, C, h, w]."""
        device = self.positional_encoding_gaussian_matrix.device
        grid = torch.ones((h, w), device=device, dtype=torch.float32)
        y = (grid.cumsum(dim=0) - 0.5) / h
        x = (grid.cumsum(dim=1) - 0.5) / w
        return self.encode(torch.stack([x, y], dim=-1)).permute(2, 0, 1).unsqueeze(0)


class PromptEncoder(nn.Module):
    """Keypoint prompts -> sparse tokens; a binary person mask -> dense additive features.

    Args:
        embed_dim: backbone width (prompt tokens and mask features have this width).
    """

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.pe_layer = RandomFourierPE(embed_dim // 2)
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(NUM_KEYPOINTS))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.invalid_point_embed = nn.Embedding(1, embed_dim)
        chans = (1, 4, 16, 64, 256)
        mods: list[nn.Module] = []
        for cin, cout in zip(chans[:-1], chans[1:], strict=True):
            mods += [nn.Conv2d(cin, cout, kernel_size=2, stride=2), LayerNorm2d(cout), nn.GELU()]
        mods.append(nn.Conv2d(chans[-1], embed_dim, kernel_size=1))
        self.mask_downscaling = nn.Sequential(*mods)
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def embed_points(self, points: torch.Tensor) -> torch.Tensor:
        """Prompts [B, N, 3] = (x, y in [0, 1] of the crop, label) -> tokens [B, N, C].

        Labels: 0..69 an MHR70 keypoint, -1 "not a point", -2 invalid/dummy.
        """
        labels = points[..., 2].round().long()
        emb = self.pe_layer.encode(points[..., :2].float())
        table = torch.cat([e.weight for e in self.point_embeddings], dim=0)
        keyed = emb + table[labels.clamp(min=0)]
        invalid = self.invalid_point_embed.weight.expand_as(emb)
        not_a_point = self.not_a_point_embed.weight.expand_as(emb)
        out = torch.where((labels == LABEL_INVALID)[..., None], invalid, keyed)
        return torch.where((labels == LABEL_NOT_A_POINT)[..., None], not_a_point, out)

    def embed_masks(self, masks: torch.Tensor, has_mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Crop masks [B, 1, S, S] (0/1) -> additive features [B, C, h, w].

        Items with ``has_mask`` False get the learned "no mask" embedding instead.
        """
        dense = self.mask_downscaling(masks)
        none = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(masks.shape[0], -1, *size)
        return torch.where(has_mask.view(-1, 1, 1, 1), dense, none)


def _ray_fourier(rays: torch.Tensor) -> torch.Tensor:
    """Rays [B, N, 3] -> [B, N, 99]: raw values, then sin and cos of pi * value * band."""
    bands = torch.linspace(1.0, RAY_MAX_RESOLUTION / 2, steps=RAY_BANDS, device=rays.device)
    feats = (rays[..., None] * bands).flatten(-2)
    return torch.cat([rays, torch.sin(math.pi * feats), torch.cos(math.pi * feats)], dim=-1)


class CameraRayEncoder(nn.Module):
    """Fuses per-patch camera rays into the image features (1x1 conv + LayerNorm2d).

    Args:
        embed_dim: backbone width.
        patch_size: backbone patch size (rays are downsampled by it).
    """

    def __init__(self, embed_dim: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.conv = nn.Conv2d(embed_dim + RAY_CHANNELS, embed_dim, kernel_size=1, bias=False)
        self.norm = LayerNorm2d(embed_dim)

    def forward(self, feats: torch.Tensor, rays: torch.Tensor) -> torch.Tensor:
        """Features [B, C, h, w] and per-pixel rays [B, 2, S, S] ((x-cx)/fx, (y-cy)/fy) -> [B, C, h, w]."""
        b, _, h, w = feats.shape
        scale = 1 / self.patch_size
        small = F.interpolate(
            rays, scale_factor=(scale, scale), mode="bilinear", align_corners=False, antialias=True
        )
        small = small.permute(0, 2, 3, 1)
        small = torch.cat([small, torch.ones_like(small[..., :1])], dim=-1)
        enc = _ray_fourier(small.reshape(b, -1, 3)).reshape(b, h, w, RAY_CHANNELS).permute(0, 3, 1, 2)
        return self.norm(self.conv(torch.cat([feats, enc], dim=1)))
