from __future__ import annotations

import io
import json

import numpy as np
import pytest
import trimesh

from body4d.export import POOL_MIN_MESHES, ObjWriter, camera_json, obj_meshes, obj_workers
from body4d.run_dir import bodies_arrays


def obj_bytes(v: np.ndarray, f: np.ndarray, color: tuple[int, int, int] | None = None) -> bytes:
    return ObjWriter(f).mesh(v, color)


def _tetra() -> tuple[np.ndarray, np.ndarray]:
    v = np.array([[0, 0, 2], [0.1, 0, 2], [0, 0.1, 2], [0, 0, 2.1]], dtype=np.float32)
    f = np.array([[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]])
    return v, f


def test_obj_loads_in_trimesh_with_same_geometry_and_colour() -> None:
    v, f = _tetra()
    mesh = trimesh.load(io.BytesIO(obj_bytes(v, f, color=(216, 82, 24))), file_type="obj", process=False)
    assert np.allclose(mesh.vertices, v, atol=1e-6)
    assert np.array_equal(mesh.faces, f)
    assert tuple(mesh.visual.vertex_colors[0, :3]) == (216, 82, 24)


def test_obj_rejects_bad_meshes() -> None:
    v, f = _tetra()
    with pytest.raises(ValueError, match="Vx3"):
        obj_bytes(v[:, :2], f)
    with pytest.raises(ValueError, match="face indices"):
        obj_bytes(v, f + 4)
    bad = v.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        obj_bytes(bad, f)


def test_camera_json_schema() -> None:
    rec = camera_json(1234.5, (640.0, 360.0), np.array([0.1, -0.2, 3.0]))
    assert json.loads(json.dumps(rec)) == {
        "focal_length": 1234.5,
        "principal_point": [640.0, 360.0],
        "camera": [0.1, -0.2, 3.0],
    }


def test_bodies_arrays_keys_and_validation() -> None:
    arrays = bodies_arrays(
        {2: {"frames": np.arange(3), "cam_t": np.zeros((3, 3))}, 1: {"frames": np.arange(1)}}
    )
    assert list(arrays["obj_ids"]) == [1, 2]
    assert arrays["id2/cam_t"].shape == (3, 3)
    with pytest.raises(ValueError, match="expected 3"):
        bodies_arrays({1: {"frames": np.arange(3), "cam_t": np.zeros((2, 3))}})


def test_obj_writer_reuses_faces() -> None:
    v, f = _tetra()
    writer = ObjWriter(f)
    assert writer.mesh(v, (1, 2, 3)) == writer.mesh(v, (1, 2, 3))
    with pytest.raises(ValueError, match="non-negative"):
        ObjWriter(f - 1)
    with pytest.raises(ValueError, match="face indices"):
        writer.mesh(v[:3])


def test_obj_pool_gives_the_same_bytes_in_order_and_reports_errors() -> None:
    rng = np.random.default_rng(0)
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    items = [(k, rng.normal(size=(4, 3)), (k % 255, 10, 20)) for k in range(POOL_MIN_MESHES + 5)]
    writer = ObjWriter(faces)
    expected = [(k, writer.mesh(v, c)) for k, v, c in items]
    pooled = list(obj_meshes(iter(items), faces, workers=2, expected=len(items)))
    assert pooled == expected
    assert (
        list(obj_meshes(iter(items[:3]), faces, workers=2, expected=3)) == expected[:3]
    )  # small: in process
    bad = [*items[:POOL_MIN_MESHES], (999, np.full((4, 3), np.nan), (1, 2, 3))]
    with pytest.raises(ValueError, match="NaN or inf"):
        list(obj_meshes(iter(bad), faces, workers=2, expected=len(bad)))
    assert obj_workers(3) == 3 and 1 <= obj_workers(0) <= 4


CTRL_C_HARNESS = """
import sys
import numpy as np
from body4d.export import obj_meshes

faces = np.array([[0, 1, 2]] * 20000, np.int32)
vertices = np.random.default_rng(0).random((20000, 3)).astype(np.float32)
items = (((i,), vertices, (200, 100, 50)) for i in range(100000))
try:
    for n, _ in enumerate(obj_meshes(items, faces, workers=2, expected=100000)):
        if n == 0:
            print("pool running", flush=True)
except KeyboardInterrupt:
    print("interrupted", file=sys.stderr, flush=True)
    sys.exit(4)
"""


def test_ctrl_c_at_a_terminal_stops_the_obj_pool_without_worker_tracebacks(tmp_path) -> None:
    """A terminal's Ctrl-C goes to the whole process group: only the parent may answer it."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, "-c", CTRL_C_HARNESS],
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "pool running"
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 4
    assert err.strip() == "interrupted", err
