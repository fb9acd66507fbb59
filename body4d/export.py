"""Mesh and camera exports as bytes: OBJ meshes and per-frame camera JSON.

Writers return bytes (or a dict for JSON); `RunDir` puts them on disk atomically. Meshes are in
metres in the OpenCV camera frame (x right, y down, z forward), already translated by ``cam_t``,
so every person's OBJ of one frame lines up in the same camera space.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

import numpy as np

OBJ_FLOAT_FORMAT = "%.6f"
# Most processes formatting OBJ text in parallel (``export.obj_workers: 0``), and meshes in flight
# per worker (the queue bound: memory stays at a few meshes per worker).
MAX_OBJ_WORKERS = 4
IN_FLIGHT_PER_WORKER = 2
# Fewer meshes than this are formatted in this process (starting workers costs ~1 s).
POOL_MIN_MESHES = 64
Key = TypeVar("Key")
OBJ_HEADER = b"# body4d mesh: metres, OpenCV camera frame (x right, y down, z forward)\n"


class ObjWriter:
    """Wavefront OBJ writer for many meshes sharing one face list (the face block is built once).

    Args:
        faces: ``int[F, 3]`` 0-based vertex indices.
    """

    def __init__(self, faces: np.ndarray) -> None:
        faces = np.asarray(faces)
        if faces.ndim != 2 or faces.shape[1] != 3:
            raise ValueError(f"faces must be Fx3, got {faces.shape}")
        if faces.size and faces.min() < 0:
            raise ValueError(f"face indices must be non-negative, got {faces.min()}")
        self.n_max = int(faces.max()) + 1 if faces.size else 0
        self._faces = _rows("f %d %d %d\n", faces.astype(np.int64) + 1).encode("ascii")

    def mesh(self, vertices: np.ndarray, color: tuple[int, int, int] | None = None) -> bytes:
        """OBJ bytes of one mesh.

        Args:
            vertices: ``float[V, 3]`` in metres (camera frame).
            color: optional RGB 0..255 written as per-vertex colour (``v x y z r g b``, read by
                trimesh, Blender and MeshLab).

        Raises:
            ValueError: wrong shape, non-finite vertices, or faces indexing past the vertices.
        """
        vertices = np.asarray(vertices, dtype=np.float64)
        if vertices.ndim != 2 or vertices.shape[1] != 3:
            raise ValueError(f"vertices must be Vx3, got {vertices.shape}")
        if not np.isfinite(vertices).all():
            raise ValueError("vertices contain NaN or inf: the mesh of this frame is invalid")
        if self.n_max > len(vertices):
            raise ValueError(f"face indices must be in 0..{len(vertices) - 1}, got up to {self.n_max - 1}")
        if color is None:
            body = _rows(f"v {OBJ_FLOAT_FORMAT} {OBJ_FLOAT_FORMAT} {OBJ_FLOAT_FORMAT}\n", vertices)
        else:
            r, g, b = (float(c) / 255.0 for c in color)  # the same on every row: formatted once
            f = OBJ_FLOAT_FORMAT
            body = _rows(f"v {f} {f} {f} {r:.4f} {g:.4f} {b:.4f}\n", vertices)
        return OBJ_HEADER + body.encode("ascii") + self._faces


def _rows(row_format: str, values: np.ndarray) -> str:
    """Format every row of a 2-D array with one %-format (C-speed, no per-row Python loop)."""
    return (row_format * len(values)) % tuple(values.ravel().tolist())


def camera_json(focal: float, principal_point: tuple[float, float], cam_t: np.ndarray) -> dict[str, object]:
    """Per-frame camera record: ``{focal_length, principal_point, camera}`` (camera = cam_t in metres)."""
    cam_t = np.asarray(cam_t, dtype=np.float64).reshape(3)
    return {
        "focal_length": float(focal),
        "principal_point": [float(principal_point[0]), float(principal_point[1])],
        "camera": [float(v) for v in cam_t],
    }


def obj_workers(setting: int) -> int:
    """Worker processes for ``export.obj_workers`` (0 = one per spare core, at most 4)."""
    if setting > 0:
        return setting
    return max(1, min(MAX_OBJ_WORKERS, (os.cpu_count() or 1) - 1))


def obj_meshes(
    items: Iterable[tuple[Key, np.ndarray, tuple[int, int, int]]],
    faces: np.ndarray,
    *,
    workers: int,
    expected: int,
) -> Iterator[tuple[Key, bytes]]:
    """``(key, OBJ bytes)`` for ``(key, vertices, colour)`` items, in order.

    OBJ formatting is CPU-bound Python (~20 ms per 18,439-vertex mesh); with ``workers > 1`` and
    at least `POOL_MIN_MESHES` ``expected`` meshes it runs in a pool of processes, with at most
    ``IN_FLIGHT_PER_WORKER x workers`` meshes queued, while this process keeps producing vertices.
    """
    if workers <= 1 or expected < POOL_MIN_MESHES:
        writer = ObjWriter(faces)
        for key, vertices, color in items:
            yield key, writer.mesh(vertices, color)
        return
    context = multiprocessing.get_context("spawn")  # never fork a process holding CUDA state
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_init_worker, initargs=(faces,)
    ) as pool:
        _start_workers(pool, workers)
        pending: deque = deque()
        for key, vertices, color in items:
            pending.append((key, pool.submit(_worker_mesh, vertices, color)))
            if len(pending) >= IN_FLIGHT_PER_WORKER * workers:
                done_key, future = pending.popleft()
                yield done_key, future.result()
        while pending:
            done_key, future = pending.popleft()
            yield done_key, future.result()


def _start_workers(pool: ProcessPoolExecutor, workers: int) -> None:
    """Start the pool's ``workers`` processes now, ignoring SIGINT while they are made.

    They inherit the ignored disposition (Python keeps an inherited SIG_IGN; a blocked signal
    mask is not inherited by spawned processes), so a Ctrl-C at a terminal (sent to the whole
    process group) reaches only this process, which stops the pool and reports the interrupt
    once, instead of every worker printing a ``KeyboardInterrupt`` traceback. This process
    ignores SIGINT only while the processes are forked (the submits, milliseconds), not while they
    start up. Signal dispositions belong to the main thread: from another thread (the app's
    jobs, never a terminal's foreground process) the workers keep the default.
    """
    in_main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGINT, signal.SIG_IGN) if in_main else None
    try:
        # Submitted back to back, before any worker is up and idle, each task starts a process.
        started = [pool.submit(os.getpid) for _ in range(workers)]
    finally:
        if in_main:
            signal.signal(signal.SIGINT, old)
    for future in started:
        future.result()


_WORKER_WRITER: ObjWriter | None = None


def _init_worker(faces: np.ndarray) -> None:
    global _WORKER_WRITER
    _WORKER_WRITER = ObjWriter(faces)


def _worker_mesh(vertices: np.ndarray, color: tuple[int, int, int]) -> bytes:
    assert _WORKER_WRITER is not None
    return _WORKER_WRITER.mesh(vertices, color)
