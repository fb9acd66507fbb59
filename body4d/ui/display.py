"""A frame of the session's video as the browser shows it: time labels, display scale, click mapping.

Pixel coordinates: the frame on screen may be downscaled (`DISPLAY_MAX_SIDE`); masks and click
markers are drawn at that size, and clicks are converted back (`display_to_video`) and stored in
the video's own pixel coordinates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from fractions import Fraction

import cv2
import numpy as np

from body4d.masks import draw_clicks, masks_to_labels, overlay, read_palette_png
from body4d.session import Session
from body4d.types import VideoInfo

# Frames wider or taller than this are downscaled for the browser (clicks are mapped back).
DISPLAY_MAX_SIDE = 1280
CENTISECONDS_PER_SECOND = 100
SECONDS_PER_MINUTE = 60


def format_time(seconds: Fraction) -> str:
    """``mm:ss.ff`` (ff = hundredths, truncated) of an exact time in seconds."""
    total_cs = math.floor(seconds * CENTISECONDS_PER_SECOND)
    minutes, rest = divmod(total_cs, SECONDS_PER_MINUTE * CENTISECONDS_PER_SECOND)
    secs, cs = divmod(rest, CENTISECONDS_PER_SECOND)
    return f"{minutes:02d}:{secs:02d}.{cs:02d}"


def time_label(index: int, info: VideoInfo) -> str:
    """``"<time of frame index> / <duration>"`` at the video's exact frame rate."""
    return f"{format_time(Fraction(index) / info.fps)} / {format_time(Fraction(info.n_frames) / info.fps)}"


def format_fps(fps: Fraction) -> str:
    """``10``, ``29.97``, ``23.98``: the frame rate with at most two decimals."""
    return f"{float(fps):.2f}".rstrip("0").rstrip(".")


def display_scale(width: int, height: int, max_side: int = DISPLAY_MAX_SIDE) -> float:
    """Display pixels per video pixel (1.0 unless the frame is larger than ``max_side``)."""
    return min(1.0, max_side / max(width, height))


def to_display(rgb: np.ndarray, scale: float) -> np.ndarray:
    """Downscale ``rgb`` by ``scale`` for the browser by pixel-area averaging (as is at ``scale == 1``)."""
    if scale >= 1.0:
        return rgb
    h, w = rgb.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def labels_to_display(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A label map (or a boolean mask viewed as ``uint8``) resized to ``size`` ``(w, h)``.

    Nearest neighbour keeps ids whole; the EXACT variant samples each display pixel's centre, so
    the masks line up with the area-averaged frame of `to_display`.
    """
    if labels.shape == (size[1], size[0]):
        return labels
    return cv2.resize(labels, size, interpolation=cv2.INTER_NEAREST_EXACT)


def display_to_video(x: float, y: float, scale: float, info: VideoInfo) -> tuple[float, float]:
    """Map a click on the displayed frame to video pixels, clamped inside the frame."""
    vx = min(max(x / scale, 0.0), info.width - 1.0)
    vy = min(max(y / scale, 0.0), info.height - 1.0)
    return vx, vy


@dataclass(frozen=True)
class FrameView:
    """A frame ready for the browser.

    Attributes:
        image: RGB ``uint8[h, w, 3]`` at display size, with click markers drawn.
        index: 0-based frame index.
        time: ``mm:ss.ff / mm:ss.ff`` label.
        scale: display pixels per video pixel.
    """

    image: np.ndarray
    index: int
    time: str
    scale: float


def frame_labels(session: Session, index: int, size: tuple[int, int]) -> np.ndarray | None:
    """The label map to draw on frame ``index`` at ``size`` ``(w, h)``: ``uint8[h, w]`` (pixel =
    target id) or None.

    Once Mask Generation is done, every frame shows the tracked masks of the run, except the
    frames whose live click masks are newer (the clicks changed since: a correction under way).
    Before it, the frames clicked on show their live click masks.
    """
    live = session.masks.get(index)
    run = session.run
    tracked = run is not None and run.is_done("masks") and run.mask_path(index).is_file()
    edited = session.prompts() != session.mask_prompts
    if live and (edited or not tracked):
        return masks_to_labels(_masks_to_display(live, size), (size[1], size[0]))
    if tracked:
        assert run is not None
        return labels_to_display(read_palette_png(run.mask_path(index)), size)
    return None


def _masks_to_display(masks: Mapping[int, np.ndarray], size: tuple[int, int]) -> dict[int, np.ndarray]:
    """Each ``bool[H, W]`` mask resized to ``size`` ``(w, h)`` (merging them after the resize gives
    the resized label map, without building it at full resolution)."""
    out = {}
    for obj_id, mask in masks.items():
        small = labels_to_display(np.ascontiguousarray(mask, dtype=bool).view(np.uint8), size)
        out[obj_id] = small.view(bool)
    return out


def display_frame(session: Session, index: int, scale: float) -> np.ndarray:
    """Frame ``index`` downscaled by ``scale`` (`to_display`), cached in the session for redraws."""
    cached = session.display_cache
    if cached is not None and cached[0] == index:
        return cached[1]
    rgb = to_display(session.frame(index), scale)
    session.display_cache = (index, rgb)
    return rgb


def show_frame(session: Session, index: int) -> FrameView:
    """Make ``index`` the current frame and render it at display size with its masks
    (`frame_labels`) and click markers (at the clicks' display pixels).

    Args:
        session: the caller's session.
        index: 0-based frame index (clamped to the video).

    Raises:
        InputError: no video loaded.
    """
    info = session.require_info()
    index = min(max(int(index), 0), info.n_frames - 1)
    session.current_frame = index
    scale = display_scale(info.width, info.height)
    rgb = display_frame(session, index, scale)
    labels = frame_labels(session, index, (rgb.shape[1], rgb.shape[0]))
    if labels is not None and labels.any():
        rgb = overlay(rgb, labels)
    clicks = [replace(click, x=click.x * scale, y=click.y * scale) for _, click in session.clicks_on(index)]
    if clicks:
        rgb = draw_clicks(rgb, clicks)
    return FrameView(rgb, index, time_label(index, info), scale)
