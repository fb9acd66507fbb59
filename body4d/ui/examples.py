"""The example gallery: the clips of ``app.examples_list`` that are present, and their first-frame thumbnails."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from body4d.config import Config
from body4d.examples import ExamplesError, fetch_hint, gallery_items, missing_examples
from body4d.ui.display import display_scale, to_display
from body4d.video import VideoError, open_video

log = logging.getLogger(__name__)

# Longer side of the example-gallery thumbnails.
THUMB_MAX_SIDE = 320


def find_examples(cfg: Config) -> tuple[list[tuple[Path, str]], str]:
    """The gallery's clips (`gallery_items`) and how to fetch the ones not downloaded yet (logged too).

    A broken examples list is logged and gives an empty gallery: the app still starts.

    Args:
        cfg: the configuration (``app.examples_list``, ``app.examples_dir``).

    Returns:
        ``(clip path, caption)`` per clip present, in list order; the fetch hint ("" = none missing).
    """
    try:
        items = gallery_items(cfg)
        missing = missing_examples(cfg)
    except ExamplesError as exc:
        log.warning("no example gallery: %s", exc)
        return [], ""
    hint = fetch_hint(len(missing))
    if missing:
        log.warning("%s not downloaded yet: %s", ", ".join(e.file for e in missing), hint)
    return items, hint


def example_thumbnails(
    items: list[tuple[Path, str]],
) -> tuple[list[Path], list[tuple[np.ndarray, str]]]:
    """First-frame thumbnails of the example videos that can be read (others are logged and skipped).

    Args:
        items: ``(example video file, caption)``, in gallery order.

    Returns:
        The readable paths and, in the same order, ``(thumbnail uint8[h, w, 3], caption)``.
    """
    usable: list[Path] = []
    thumbs: list[tuple[np.ndarray, str]] = []
    for path, caption in items:
        try:
            with open_video(path) as video:
                rgb = video.frame(0)
        except VideoError as exc:
            log.warning("example %s skipped: %s", path, exc)
            continue
        h, w = rgb.shape[:2]
        usable.append(path)
        thumbs.append((to_display(rgb, display_scale(w, h, THUMB_MAX_SIDE)), caption))
    return usable, thumbs
