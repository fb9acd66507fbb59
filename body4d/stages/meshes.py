"""Per-frame meshes of the smoothed bodies, rebuilt from their parameters by the body model.

Every consumer of vertices (OBJ export, the 4D result video, the animated GLBs) goes through here,
so a mesh is always ``mesh_from_params(...) + cam_t``: metres, OpenCV camera frame.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from body4d.stages.recover import posed_rows
from body4d.types import BodyTrack

if TYPE_CHECKING:
    from models.sam_3d_body import SAM3DBody

# Person-frames per body-model call.
MESH_BATCH = 32


def track_meshes(
    track: BodyTrack, model: SAM3DBody, rows: np.ndarray | None = None
) -> Iterator[tuple[int, int, np.ndarray]]:
    """``(row, frame, vertices [V, 3])`` for ``rows`` of ``track`` (default: every valid row), in order."""
    rows = np.flatnonzero(track.valid) if rows is None else rows
    for chunk, verts, _ in posed_rows(track, model, rows, MESH_BATCH):
        for k, row in enumerate(chunk):
            yield int(row), int(track.frames[row]), verts[k] + track.cam_t[row]


def meshes_by_frame(
    tracks: dict[int, BodyTrack], model: SAM3DBody, n_frames: int
) -> Iterator[list[tuple[int, np.ndarray]]]:
    """For every frame ``0..n_frames-1`` in order, ``[(obj_id, vertices), ...]`` of the people on it.

    One batched stream per person; at most one batch of meshes per person is held.
    """
    streams = {obj_id: track_meshes(track, model) for obj_id, track in tracks.items()}
    heads = {obj_id: next(s, None) for obj_id, s in streams.items()}
    for frame in range(n_frames):
        people = []
        for obj_id, stream in streams.items():
            head = heads[obj_id]
            if head is not None and head[1] == frame:
                people.append((obj_id, head[2]))
                heads[obj_id] = next(stream, None)
        yield people
