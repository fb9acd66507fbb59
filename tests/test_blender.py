"""Blender's glTF importer opens body4d's animated GLBs: meshes, shape keys, timeline and hiding."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from body4d.glb import AnimatedMesh, write_glb
from tests.test_glb import CASES, IDS, KEYS, Glb

INSPECT = Path(__file__).resolve().parent / "blender" / "inspect_glb.py"
# OpenCV camera (x right, y down, z forward) -> glTF (x, -y, -z) -> Blender Z-up (x, -z_gltf, y_gltf):
# OpenCV (x, y, z) lands at Blender (x, z, -y).
CV_TO_BLENDER = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
# Blender evaluates shape keys and the object matrix in float32: a few micrometres at 4 m depth.
FLOAT32_SLACK = 5e-6


@pytest.fixture(scope="module")
def imported(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[tuple[str, bool], tuple[Path, list[AnimatedMesh], int, dict]]:
    """Each test_glb case, quantized or not, imported in one Blender run: key -> (path, meshes, n, report)."""
    blender = shutil.which("blender")
    if blender is None:
        pytest.fail(
            "blender is not installed: run `make setup` (Debian: apt-get install blender python3-numpy)"
        )
    folder = tmp_path_factory.mktemp("blender")
    written, args = {}, []
    for case, quantize in KEYS:
        meshes, fps, n_frames = CASES[case]()
        assert fps == int(fps), "Blender's scene frame rate is an integer"
        path = folder / f"{case}_{quantize}.glb"
        path.write_bytes(write_glb(meshes, fps, n_frames, quantize=quantize))
        written[case, quantize] = (path, meshes, n_frames)
        args += [str(path), str(int(fps)), str(n_frames)]
    out = folder / "report.json"
    command = [blender, "-b", "--factory-startup", "--python-exit-code", "1", "--python", str(INSPECT)]
    start = time.perf_counter()
    proc = subprocess.run(
        [*command, "--", str(out), *args], capture_output=True, text=True, timeout=120, check=False
    )
    print(f"Blender imported {len(args) // 3} GLBs in {time.perf_counter() - start:.1f} s")
    assert proc.returncode == 0 and out.is_file(), f"blender failed ({proc.returncode}):\n{proc.stderr}"
    report = json.loads(out.read_text())
    return {key: (path, meshes, n, report[str(path)]) for key, (path, meshes, n) in written.items()}


@pytest.mark.parametrize(("case", "quantize"), KEYS, ids=IDS)
def test_blender_imports_one_mesh_object_per_person(case: str, quantize: bool, imported) -> None:
    path, meshes, n_frames, report = imported[case, quantize]
    assert report["error"] is None, report["error"]
    objects = report["objects"]
    assert sorted(objects) == sorted(p.name for p in meshes)
    doc = Glb(path).doc
    for node, person in enumerate(meshes):
        obj = objects[person.name]
        assert obj["vertices"] == person.vertices.shape[1]
        # Same vertex order and winding: the axis change is a rotation, faces still point outwards.
        np.testing.assert_array_equal(obj["faces"], person.faces)
        mesh = doc["meshes"][doc["nodes"][node]["mesh"]]
        assert obj["shape_keys"] == mesh.get("extras", {}).get("targetNames", [])
        pbr = doc["materials"][mesh["primitives"][0]["material"]]["pbrMetallicRoughness"]
        np.testing.assert_allclose(obj["base_color"], pbr["baseColorFactor"], atol=1e-6)
        # STEP keys on frames 0..n_frames-1 (Blender spans a lone key as one frame).
        assert obj["action_range"] == [0.0, float(max(n_frames - 1, 1))]
        assert obj["interpolations"] == ["CONSTANT"]
        if obj["shape_keys"]:
            assert obj["shape_key_action_range"] == [0.0, float(n_frames - 1)]
        else:
            assert obj["shape_key_action_range"] is None
    print(
        f"{case} quantize={quantize}: "
        + ", ".join(
            f"{name} {o['vertices']} vertices {len(o['shape_keys'])} shape keys action {o['action_range']}"
            for name, o in objects.items()
        )
        + f"; scene range {report['scene_range']} (not set by the importer)"
    )


@pytest.mark.parametrize(("case", "quantize"), KEYS, ids=IDS)
def test_blender_poses_match_input_and_people_vanish_outside_their_frames(
    case: str, quantize: bool, imported
) -> None:
    path, meshes, n_frames, report = imported[case, quantize]
    assert report["error"] is None, report["error"]
    doc = Glb(path).doc
    worst = 0.0
    for node, person in enumerate(meshes):
        frames = report["objects"][person.name]["frames"]
        assert [f["frame"] for f in frames] == list(range(n_frames))
        scale = doc["nodes"][node].get("scale", [1.0])[0]
        # int16 rounding is half a step of scale / 32767 (see test_glb), then float32 evaluation.
        tolerance = (scale / 65534 if quantize else 0.0) + FLOAT32_SLACK
        expected = dict(zip(person.frames.tolist(), person.vertices.astype(np.float64), strict=True))
        for f in frames:
            matrix = np.asarray(f["matrix_world"])
            linear = matrix[:3, :3]
            if f["frame"] not in expected:
                np.testing.assert_array_equal(
                    linear, 0.0, err_msg=f"{person.name} shown on frame {f['frame']}"
                )
                continue
            np.testing.assert_allclose(linear, scale * np.eye(3), rtol=1e-6)
            world = np.asarray(f["co"]).reshape(-1, 3) @ linear.T + matrix[:3, 3]
            error = np.abs(world - expected[f["frame"]] @ CV_TO_BLENDER.T).max()
            assert error <= tolerance, f"{person.name} frame {f['frame']}: {error * 1e3:.4f} mm"
            worst = max(worst, error)
    print(f"{case} quantize={quantize}: max Blender pose error {worst * 1e3:.4f} mm")
