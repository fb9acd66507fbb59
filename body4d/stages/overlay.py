"""The 4D result frames: every person's mesh drawn over the footage (or white), and each person alone.

Colours are the mask colours (`body4d.masks.color_for`), so the result video matches the
segmentation video. The renderer is `body4d.render.get_renderer` (one per process).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from body4d.masks import color_for

WHITE = (255, 255, 255)


def render_frames(
    frames: Iterable[np.ndarray],
    meshes: Iterable[list[tuple[int, np.ndarray]]],
    renderer: Any,
    K: np.ndarray,
    faces: np.ndarray,
    *,
    background: str,
    individual: bool,
) -> Iterator[tuple[int, np.ndarray, np.ndarray, dict[int, np.ndarray]]]:
    """``(index, background image, all people drawn, {obj_id: the person drawn alone})`` per frame."""
    for index, (frame, people) in enumerate(zip(frames, meshes, strict=True)):
        height, width = frame.shape[:2]
        base = frame if background == "video" else None
        drawn = [(verts, color_for(obj_id)) for obj_id, verts in people]
        kw = {"width": width, "height": height, "background": None if base is not None else WHITE}
        scene = renderer.render(base, drawn, K, faces, **kw)
        alone = (
            {
                obj_id: renderer.render(base, [d], K, faces, **kw)
                for (obj_id, _), d in zip(people, drawn, strict=True)
            }
            if individual
            else {}
        )
        plain = frame if base is not None else np.full_like(frame, 255)
        yield index, plain, scene, alone
