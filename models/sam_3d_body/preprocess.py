"""Crops of people and hands: box -> isotropic affine warp, masks and camera rays.

Part of the body4d port of SAM 3D Body (Meta Platforms, Inc.), covered by the SAM License
(see LICENSE-SAM).

A crop is a similarity transform (uniform scale + translation, no rotation, never an
anisotropic squash): the box is padded, then widened to the training aspect prior and to the
square crop, so the whole padded box is visible at its true aspect ratio.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from .network import CropBatch

# The released model was trained on boxes first expanded to width/height = 0.75 (the
# HMR2.0/Sapiens person prior), then to the crop aspect.
ASPECT_PRIOR = 0.75
HAND_PADDING = 0.9  # hand crops: the predicted hand box is shrunk slightly


@dataclass(frozen=True)
class CropSpec:
    """One crop of one image.

    Attributes:
        image: index into the list of source images.
        center: (2,) crop box centre, pixels.
        size: side of the square crop box, pixels.
        K: (3, 3) intrinsics of the source image, pixels.
        mask: (H, W) bool person mask of the source image, or None.
    """

    image: int
    center: np.ndarray
    size: float
    K: np.ndarray
    mask: np.ndarray | None = None


def crop_box(box_xyxy: np.ndarray, padding: float) -> tuple[np.ndarray, float]:
    """Box (4,) xyxy pixels -> (centre (2,), side) of the square crop box.

    The box is scaled by ``padding``, widened to the aspect prior, then to a square. Computed
    in float32 like the released preprocessing, so that crops are pixel-identical to it.
    """
    x1, y1, x2, y2 = np.asarray(box_xyxy, dtype=np.float32)
    pad = np.float32(padding)
    w, h = (x2 - x1) * pad, (y2 - y1) * pad
    prior = np.float32(ASPECT_PRIOR)
    w, h = (w, w / prior) if w > h * prior else (h * prior, h)
    center = np.array([x1 + x2, y1 + y2], dtype=np.float32) * np.float32(0.5)
    return center, float(max(w, h))


def warp_matrix(center: np.ndarray, size: float, crop_size: int) -> np.ndarray:
    """Full-image pixels -> crop pixels, (2, 3) float64: the box of side ``size`` fills the crop.

    Solved from three float32 point pairs (centre, top-middle, top-left) like the released
    preprocessing, which keeps the crops bit-identical to it.
    """
    cx, cy, half = float(center[0]), float(center[1]), size / 2
    src = np.array([[cx, cy], [cx, cy - half], [cx - half, cy - half]], dtype=np.float32)
    c = crop_size / 2
    dst = np.array([[c, c], [c, 0.0], [0.0, 0.0]], dtype=np.float32)
    return cv2.getAffineTransform(src, dst)


def build_crops(
    images: list[np.ndarray],
    specs: list[CropSpec],
    crop_size: int,
    device: torch.device,
    mask_value: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, CropBatch]:
    """Warp crops, masks and rays.

    Args:
        images: RGB uint8 (H, W, 3) source images.
        specs: one entry per crop.
        crop_size: S.
        device: where the tensors go.
        mask_value: person pixels of a mask are this value before the (bilinear) warp.
    Returns:
        images [B, 3, S, S] in [0, 1], masks [B, 1, S, S] in [0, mask_value], has_mask [B]
        bool, crop geometry.
    """
    n = len(specs)
    crops = np.empty((n, crop_size, crop_size, 3), dtype=np.uint8)
    masks = np.zeros((n, crop_size, crop_size), dtype=np.uint8)
    has_mask = np.zeros(n, dtype=bool)
    affines = np.empty((n, 2, 3))
    for i, spec in enumerate(specs):
        m = warp_matrix(spec.center, spec.size, crop_size)
        affines[i] = m
        crops[i] = cv2.warpAffine(images[spec.image], m, (crop_size, crop_size), flags=cv2.INTER_LINEAR)
        if spec.mask is not None:
            masks[i] = cv2.warpAffine(
                spec.mask.astype(np.uint8) * np.uint8(mask_value),
                m,
                (crop_size, crop_size),
                flags=cv2.INTER_LINEAR,
            )
            has_mask[i] = True
    affine = torch.as_tensor(affines, dtype=torch.float32, device=device)
    K = torch.as_tensor(np.stack([s.K for s in specs]), dtype=torch.float32, device=device)
    geometry = CropBatch(
        box_center=torch.as_tensor(np.stack([s.center for s in specs]), dtype=torch.float32, device=device),
        box_size=torch.tensor([s.size for s in specs], dtype=torch.float32, device=device),
        K=K,
        affine=affine,
        rays=crop_rays(affine, K, crop_size),
        crop_size=crop_size,
    )
    img = torch.as_tensor(crops, device=device).permute(0, 3, 1, 2).float() / 255.0
    mask = torch.as_tensor(masks, device=device).float()[:, None]
    return img, mask, torch.as_tensor(has_mask, device=device), geometry


def crop_rays(affine: torch.Tensor, K: torch.Tensor, crop_size: int) -> torch.Tensor:
    """Normalised camera rays of every crop pixel: [B, 2, S, S] = ((x - cx) / fx, (y - cy) / fy).

    (x, y) are the full-image coordinates of crop pixel index (u, v) under the inverse warp.
    """
    idx = torch.arange(crop_size, device=affine.device, dtype=torch.float32)
    grid = torch.stack(torch.meshgrid(idx, idx, indexing="xy"), dim=-1)[None]  # [1, S, S, 2] (u, v)
    scale = affine[:, None, None, [0, 1], [0, 1]]
    full = grid / scale - affine[:, None, None, [0, 1], [2, 2]] / scale
    rays = (full - K[:, None, None, [0, 1], [2, 2]]) / K[:, None, None, [0, 1], [0, 1]]
    return rays.permute(0, 3, 1, 2)
