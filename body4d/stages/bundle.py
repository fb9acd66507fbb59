"""Per-person bundles: an animated GLB, a BVH of the skeleton, the body track as npz, and a JSON that
says which frames are real.

``people/<id>/<id>.json`` states the frame range, which frames are observed (estimated from the
person's own pixels), interpolated (filled across a gap by smoothing) or completed (estimated from
a Diffusion-VAS completed image), the units and axes, the fps, and the weights used with their
licences. The GLB animates the person only over their own frames (hidden elsewhere) on the video's
timeline; a person seen on more than ``bundle.glb_max_frames`` frames is animated on every k-th
frame, at its true time. The BVH carries the MHR skeleton (127 joints, the model's hierarchy and
bind pose) on every frame of the frame range; its forward kinematics reproduces the model's joints.
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from body4d.bvh import write_bvh
from body4d.masks import color_for
from body4d.stages.meshes import MESH_BATCH, track_meshes
from body4d.types import BodyTrack, Completion, Intrinsics, PersonBundle

if TYPE_CHECKING:
    from models.sam_3d_body import SAM3DBody
    from models.sam_3d_body.heads import MHRSkeleton

AXES = "OpenCV camera frame: x right, y down, z forward (the GLB: glTF Y-up, x right, y up, z backward)"
BVH_INFO = {
    "units": "centimetres",
    "axes": "Y-up: x right, y up, z towards the camera (the OpenCV camera frame turned 180 degrees about x)",
    "frames": "one per video frame of frame_range; frames without an estimate hold the last pose",
    "channels": "intrinsic Euler degrees Z X Y; position channels (root, moving joints) replace the OFFSET",
}
# The networks whose weights every run uses, and the two that completion adds.
WEIGHTS = {
    "SAM 3 (facebook/sam3)": "SAM License",
    "SAM 3D Body (facebook/sam-3d-body-dinov3)": "SAM License",
    "MHR body model": "Apache-2.0",
    "MoGe-2 (Ruicheng/moge-2-vitl-normal)": "MIT",
}
COMPLETION_WEIGHTS = {
    "Diffusion-VAS (kaihuac/diffusion-vas-*)": "see github.com/Kaihua-Chen/diffusion-vas",
    "Depth Anything V2 Large": "CC-BY-NC-4.0 (non-commercial)",
}


def glb_rows(track: BodyTrack, max_frames: int) -> np.ndarray:
    """The valid rows a GLB animates: all of them, or every k-th so that at most ``max_frames``."""
    rows = np.flatnonzero(track.valid)
    step = max(1, math.ceil(len(rows) / max_frames))
    return rows[::step]


def person_info(
    track: BodyTrack,
    completed: set[int],
    fps: float,
    n_frames: int,
    glb_frames: list[int] | None,
    completion_on: bool,
    bvh: bool = False,
) -> dict[str, Any]:
    """The content of ``people/<id>/<id>.json``."""
    frames = track.frames
    observed = track.valid & ~track.filled
    is_completed = np.isin(frames, sorted(completed))
    weights = dict(WEIGHTS, **(COMPLETION_WEIGHTS if completion_on else {}))
    return {
        "obj_id": track.obj_id,
        "frame_range": [int(frames[0]), int(frames[-1])] if len(frames) else None,
        "n_frames_video": n_frames,
        "fps": fps,
        "observed": frames[observed & ~is_completed].tolist(),
        "interpolated": frames[track.valid & track.filled].tolist(),
        "completed": frames[observed & is_completed].tolist(),
        "missing": frames[~track.valid].tolist(),
        "glb_frames": glb_frames,
        "units": "metres",
        "axes": AXES,
        "files": {
            "glb": f"{track.obj_id}.glb" if glb_frames is not None else None,
            "npz": f"{track.obj_id}.npz",
            "bvh": f"{track.obj_id}.bvh" if bvh else None,
        },
        "bvh": BVH_INFO if bvh else None,
        "weights": weights,
    }


def person_bundles(
    tracks: dict[int, BodyTrack],
    completion: Completion,
    K: Intrinsics,
    model: SAM3DBody,
    fps: float,
    n_frames: int,
    section: Any,
) -> tuple[list[PersonBundle], bytes | None]:
    """Every person's bundle and the scene GLB (None when ``bundle.glb`` is off)."""
    from body4d.glb import AnimatedMesh, write_glb

    completed: dict[int, set[int]] = {}
    for item in completion.frames:
        completed.setdefault(item.obj_id, set()).add(item.frame)
    completion_on = bool(completion.report.get("enabled"))
    bundles, animated = [], []
    skeleton = model.skeleton if section.bvh and any(t.valid.any() for t in tracks.values()) else None
    for obj_id, track in tracks.items():
        mesh = None
        if section.glb and track.valid.any():
            rows = glb_rows(track, section.glb_max_frames)
            verts = np.stack([v for _, _, v in track_meshes(track, model, rows)]).astype(np.float32)
            mesh = AnimatedMesh(f"person_{obj_id}", track.frames[rows], verts, model.faces, color_for(obj_id))
            animated.append(mesh)
        glb = write_glb([mesh], fps, n_frames, quantize=section.quantize) if mesh is not None else None
        bvh = person_bvh(track, model, skeleton, fps) if skeleton is not None and track.valid.any() else None
        info = person_info(
            track,
            completed.get(obj_id, set()),
            fps,
            n_frames,
            None if mesh is None else mesh.frames.tolist(),
            completion_on,
            bvh is not None,
        )
        bundles.append(PersonBundle(obj_id, glb, _npz(track, K, fps), info, bvh))
    scene = write_glb(animated, fps, n_frames, quantize=section.quantize) if animated else None
    return bundles, scene


def person_bvh(track: BodyTrack, model: SAM3DBody, skeleton: MHRSkeleton, fps: float) -> str:
    """The BVH of a track with at least one valid row (see `body4d.bvh`): one frame per row, a row
    without an estimate holding the last valid pose (rows before the first one hold the first)."""
    rows = np.flatnonzero(track.valid)
    joints, rots = [], []
    for start in range(0, len(rows), MESH_BATCH):
        chunk = rows[start : start + MESH_BATCH]
        j, r = model.skeleton_from_params(*(getattr(track, name)[chunk] for name in BodyTrack.PARAM_FIELDS))
        joints.append(j + track.cam_t[chunk, None])
        rots.append(r)
    # Row -> index into ``rows`` of the last valid row at or before it (the first one if none).
    held = np.maximum(np.cumsum(track.valid) - 1, 0)
    return write_bvh(
        skeleton.parents,
        skeleton.names,
        np.concatenate(joints)[held],
        np.concatenate(rots)[held],
        fps,
        rest_rotations=skeleton.rest_rotations,
    )


def _npz(track: BodyTrack, K: Intrinsics, fps: float) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **track.arrays(), K=np.asarray(K.K), fps=np.float64(fps))
    return buf.getvalue()
