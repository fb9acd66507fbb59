"""Camera intrinsics of a whole video: one pinhole K, estimated once (not per frame).

Policy:
- ``camera.num_frames`` frames evenly spread over the video (the centres of equal segments, so
  the first and last frames, often fades or black, are avoided) go through the estimator (MoGe-2);
- per frame the focal is ``sqrt(fx * fy)`` (square pixels; for MoGe ``fx == fy`` already, so this
  equals the original's choice of fy) and the principal point is MoGe's;
- the result is the median over frames of focal, cx and cy; frames whose estimate is non-finite or
  non-positive are dropped;
- without an estimator (``model is None``: disabled or not loaded), or if every estimate was
  dropped, the documented default is used: focal = image diagonal in pixels (about 53
  degrees diagonal field of view), principal point = image centre ``(W/2, H/2)`` (pixel-edge
  convention, the same as MoGe's normalised 0.5).
"""

from __future__ import annotations

import logging
import math
from typing import Protocol

import numpy as np

from body4d.config import CameraConfig
from body4d.types import Intrinsics
from models.frames import FrameSource
from models.sam_3d_body.mhr_layout import default_intrinsics

log = logging.getLogger(__name__)

SOURCE_MOGE = "moge"
SOURCE_DEFAULT = "default"


class IntrinsicsEstimator(Protocol):
    """A single-image intrinsics model (e.g. `models.moge.MoGe`)."""

    def estimate_intrinsics(self, image: np.ndarray) -> np.ndarray: ...


def select_frames(n_frames: int, num: int) -> list[int]:
    """Indices of ``num`` frames evenly spread over ``n_frames``: the centre of each of ``num`` equal segments.

    All frames when ``n_frames <= num``; the middle frame when ``num == 1``.

    Raises:
        ValueError: ``n_frames < 1`` or ``num < 1``.
    """
    if n_frames < 1:
        raise ValueError(f"the video has no frames (n_frames={n_frames})")
    if num < 1:
        raise ValueError(f"camera.num_frames must be at least 1, got {num}")
    if n_frames <= num:
        return list(range(n_frames))
    return [int((2 * k + 1) * n_frames // (2 * num)) for k in range(num)]


def fallback_intrinsics(width: int, height: int) -> Intrinsics:
    """Fallback K: focal = image diagonal (px), principal point = ``(W/2, H/2)``, source ``"default"``."""
    return Intrinsics(K=default_intrinsics(height, width), width=width, height=height, source=SOURCE_DEFAULT)


def estimate_camera(
    video: FrameSource, model: IntrinsicsEstimator | None, section: CameraConfig
) -> Intrinsics:
    """One set of intrinsics for the whole video (median over evenly spread frames).

    Args:
        video: ``len(video)`` frames, ``video.frame(i)`` → RGB ``uint8[H, W, 3]`` (all the same size).
        model: the intrinsics estimator, or None when disabled.
        section: the ``camera`` config section (``num_frames``).

    Returns:
        `Intrinsics` with ``K`` ``float64[3, 3]`` in pixels, ``fx == fy``; source ``"moge"`` or ``"default"``.

    Raises:
        ValueError: empty video, a frame that is not ``uint8[H, W, 3]`` or frames of different sizes.
    """
    indices = select_frames(len(video), section.num_frames)
    first = _checked_frame(video, indices[0])
    height, width = first.shape[:2]
    if model is None:
        log.info("Camera: no intrinsics model, using the default intrinsics (focal = image diagonal)")
        return fallback_intrinsics(width, height)

    focals, centres = [], []
    for i in indices:
        image = first if i == indices[0] else _checked_frame(video, i)
        if image.shape[:2] != (height, width):
            raise ValueError(
                f"frame {i} is {image.shape[1]}x{image.shape[0]} but frame {indices[0]} is {width}x{height}: "
                "all frames of a video must have the same size"
            )
        k = np.asarray(model.estimate_intrinsics(image), dtype=np.float64)
        focal = math.sqrt(k[0, 0] * k[1, 1]) if k[0, 0] > 0 and k[1, 1] > 0 else math.nan
        if not (np.isfinite(k).all() and np.isfinite(focal)):
            log.warning(
                "Camera: frame %d gave an unusable estimate (fx=%s, fy=%s); ignored", i, k[0, 0], k[1, 1]
            )
            continue
        focals.append(focal)
        centres.append((k[0, 2], k[1, 2]))
    if not focals:
        log.warning("Camera: no usable estimate on frames %s, using the default intrinsics", indices)
        return fallback_intrinsics(width, height)
    focal = float(np.median(focals))
    cx, cy = (float(v) for v in np.median(np.asarray(centres), axis=0))
    log.info(
        "Camera: focal %.1f px, principal point (%.1f, %.1f) from %d frame(s)", focal, cx, cy, len(focals)
    )
    k = np.array([[focal, 0.0, cx], [0.0, focal, cy], [0.0, 0.0, 1.0]])
    return Intrinsics(K=k, width=width, height=height, source=SOURCE_MOGE)


def _checked_frame(video: FrameSource, index: int) -> np.ndarray:
    image = video.frame(index)
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"video.frame({index}) must be an RGB uint8[H, W, 3] array, got {got}")
    return image
