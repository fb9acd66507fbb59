"""The example gallery: video files found in ``app.examples_dir`` and their first-frame thumbnails."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from body4d.ui.display import display_scale, to_display
from body4d.video import VIDEO_EXTENSIONS, VideoError, open_video

log = logging.getLogger(__name__)

# Longer side of the example-gallery thumbnails.
THUMB_MAX_SIDE = 320


def find_examples(folder: str | Path) -> list[Path]:
    """Video files directly in ``folder`` (sorted by name); none when the folder is missing."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)


def example_thumbnails(paths: list[Path]) -> tuple[list[Path], list[tuple[np.ndarray, str]]]:
    """First-frame thumbnails of the example videos that can be read (others are logged and skipped).

    Args:
        paths: example video files, in gallery order.

    Returns:
        The readable paths and, in the same order, ``(thumbnail uint8[h, w, 3], caption)``.
    """
    usable: list[Path] = []
    thumbs: list[tuple[np.ndarray, str]] = []
    for path in paths:
        try:
            with open_video(path) as video:
                rgb = video.frame(0)
        except VideoError as exc:
            log.warning("example %s skipped: %s", path, exc)
            continue
        h, w = rgb.shape[:2]
        usable.append(path)
        thumbs.append((to_display(rgb, display_scale(w, h, THUMB_MAX_SIDE)), path.stem))
    return usable, thumbs
