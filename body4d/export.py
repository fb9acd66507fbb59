"""Mesh and camera exports as bytes: OBJ meshes, per-frame camera JSON, the per-run bodies archive.

Writers return bytes (or a dict for JSON); `RunDir` puts them on disk atomically. Meshes are in
metres in the OpenCV camera frame (x right, y down, z forward), already translated by ``cam_t``,
so every person's OBJ of one frame lines up in the same camera space.
"""

from __future__ import annotations

import io
from collections.abc import Mapping

import numpy as np

OBJ_FLOAT_FORMAT = "%.6f"


def obj_bytes(vertices: np.ndarray, faces: np.ndarray, color: tuple[int, int, int] | None = None) -> bytes:
    """Wavefront OBJ of one triangle mesh.

    Args:
        vertices: ``float[V, 3]`` in metres (camera frame).
        faces: ``int[F, 3]`` 0-based vertex indices.
        color: optional RGB 0..255 written as per-vertex colour (``v x y z r g b``, read by
            trimesh, Blender and MeshLab).

    Raises:
        ValueError: wrong shapes, non-finite vertices or face indices out of range.
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"vertices must be Vx3, got {vertices.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must be Fx3, got {faces.shape}")
    if not np.isfinite(vertices).all():
        raise ValueError("vertices contain NaN or inf: the mesh of this frame is invalid")
    if faces.size and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise ValueError(f"face indices must be in 0..{len(vertices) - 1}, got {faces.min()}..{faces.max()}")
    buf = io.BytesIO()
    buf.write(b"# body4d mesh: metres, OpenCV camera frame (x right, y down, z forward)\n")
    if color is None:
        np.savetxt(buf, vertices, fmt="v " + " ".join([OBJ_FLOAT_FORMAT] * 3))
    else:
        rgb = np.broadcast_to(np.asarray(color, dtype=np.float64) / 255.0, vertices.shape)
        np.savetxt(
            buf, np.hstack([vertices, rgb]), fmt="v " + " ".join([OBJ_FLOAT_FORMAT] * 3 + ["%.4f"] * 3)
        )
    np.savetxt(buf, faces.astype(np.int64) + 1, fmt="f %d %d %d")
    return buf.getvalue()


def camera_json(focal: float, principal_point: tuple[float, float], cam_t: np.ndarray) -> dict[str, object]:
    """Per-frame camera record: ``{focal_length, principal_point, camera}`` (camera = cam_t in metres)."""
    cam_t = np.asarray(cam_t, dtype=np.float64).reshape(3)
    return {
        "focal_length": float(focal),
        "principal_point": [float(principal_point[0]), float(principal_point[1])],
        "camera": [float(v) for v in cam_t],
    }


def bodies_arrays(tracks: Mapping[int, Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Flatten per-identity arrays into ``np.savez`` keys ``id<obj_id>/<name>`` plus ``obj_ids``.

    Args:
        tracks: ``{obj_id: {name: array with leading frame axis}}``; each must hold ``frames``.
    """
    out: dict[str, np.ndarray] = {"obj_ids": np.array(sorted(tracks), dtype=np.int32)}
    for obj_id, arrays in tracks.items():
        if "frames" not in arrays:
            raise ValueError(f"track {obj_id} has no 'frames' array")
        n = len(arrays["frames"])
        for name, arr in arrays.items():
            arr = np.asarray(arr)
            if arr.shape[:1] != (n,):
                raise ValueError(f"track {obj_id}: {name} has {arr.shape[:1]} frames, expected {n}")
            out[f"id{obj_id}/{name}"] = arr
    return out
