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
    *,
    on_device: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, CropBatch]:
    """Warp crops, masks and rays.

    Args:
        images: RGB uint8 (H, W, 3) source images.
        specs: one entry per crop.
        crop_size: S.
        device: where the tensors go.
        mask_value: person pixels of a mask are this value before the (bilinear) warp.
        on_device: cut the crops on ``device`` (one batched `grid_sample` per image size: the
            source images and masks are copied there, not the crops), as with a GPU; else per
            crop with OpenCV on the host (bit-identical to the released preprocessing). Both
            sample bilinearly with a black border at the same points; they differ by OpenCV's
            fixed-point weights and uint8 rounding (at most 2/255 per crop pixel).
    Returns:
        images [B, 3, S, S] in [0, 1], masks [B, 1, S, S] in [0, mask_value], has_mask [B]
        bool, crop geometry.
    """
    affines = np.stack([warp_matrix(s.center, s.size, crop_size) for s in specs])
    has_mask = np.array([s.mask is not None for s in specs], dtype=bool)
    if on_device:
        img, mask = _warp_on_device(images, specs, affines, crop_size, device, mask_value)
    else:
        img, mask = _warp_on_host(images, specs, affines, crop_size, device, mask_value)
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
    return img, mask, torch.as_tensor(has_mask, device=device), geometry


def _warp_on_host(
    images: list[np.ndarray],
    specs: list[CropSpec],
    affines: np.ndarray,
    crop_size: int,
    device: torch.device,
    mask_value: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    n = len(specs)
    crops = np.empty((n, crop_size, crop_size, 3), dtype=np.uint8)
    masks = np.zeros((n, crop_size, crop_size), dtype=np.uint8)
    size = (crop_size, crop_size)
    for i, spec in enumerate(specs):
        crops[i] = cv2.warpAffine(images[spec.image], affines[i], size, flags=cv2.INTER_LINEAR)
        if spec.mask is not None:
            person = spec.mask.astype(np.uint8) * np.uint8(mask_value)
            masks[i] = cv2.warpAffine(person, affines[i], size, flags=cv2.INTER_LINEAR)
    img = torch.as_tensor(crops, device=device).permute(0, 3, 1, 2).float() / 255.0
    mask = torch.as_tensor(masks, device=device).float()[:, None]
    return img, mask


def _warp_on_device(
    images: list[np.ndarray],
    specs: list[CropSpec],
    affines: np.ndarray,
    crop_size: int,
    device: torch.device,
    mask_value: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every crop sampled on ``device``: crop pixel (u, v) takes the source pixel at the inverse
    warp of (u, v), as `cv2.warpAffine` does (pixel centres at integer coordinates)."""
    n = len(specs)
    img = torch.empty(n, 3, crop_size, crop_size, device=device)
    mask = torch.zeros(n, 1, crop_size, crop_size, device=device)
    uv = torch.arange(crop_size, dtype=torch.float64, device=device)
    v, u = torch.meshgrid(uv, uv, indexing="ij")
    crop_pixels = torch.stack([u, v, torch.ones_like(u)], dim=-1)  # [S, S, 3]
    sources = {}
    for i, spec in enumerate(specs):
        sources.setdefault(spec.image, []).append(i)
    for image_index, rows in sources.items():
        source = images[image_index]
        h, w = source.shape[:2]
        inverse = torch.as_tensor(
            np.stack([cv2.invertAffineTransform(affines[i]) for i in rows]), device=device
        )
        full = torch.einsum("sti,nji->nstj", crop_pixels, inverse)  # [k, S, S, 2] source (x, y)
        scale = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], dtype=torch.float64, device=device)
        grid = (full * scale - 1.0).float()
        colour = torch.as_tensor(source, device=device).permute(2, 0, 1)[None].float() / 255.0
        img[rows] = _sample(colour.expand(len(rows), -1, -1, -1), grid)
        masked = [k for k, i in enumerate(rows) if specs[i].mask is not None]
        if masked:
            person = torch.as_tensor(np.stack([specs[rows[k]].mask for k in masked]), device=device)
            mask[[rows[k] for k in masked]] = _sample(
                person[:, None].float() * float(mask_value), grid[masked]
            )
    return img, mask


def _sample(planes: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of ``planes`` [k, C, H, W] at ``grid`` [k, S, S, 2] (-1..1 = first..last
    pixel centre), zero outside."""
    return torch.nn.functional.grid_sample(
        planes, grid, mode="bilinear", padding_mode="zeros", align_corners=True
    )


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
