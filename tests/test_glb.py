"""Animated GLB export: Khronos-valid files whose morph targets decode back to the input meshes."""

from __future__ import annotations

import json
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import trimesh

from body4d.glb import AnimatedMesh, write_glb

GLTF_TOOLS = Path(__file__).resolve().parent / "gltf"
VALIDATOR = GLTF_TOOLS / "validate.mjs"
# 180° about x: OpenCV camera (x right, y down, z forward) -> glTF (y up, z backward).
CV_TO_GLTF = np.array([1.0, -1.0, -1.0])
# MHR body mesh size (SAM-3D-Body's output), for the size report.
MHR_VERTICES, MHR_FACES = 18_439, 36_874


def uv_sphere(rings: int, segments: int) -> tuple[np.ndarray, np.ndarray]:
    """Closed unit UV sphere: ``2 + rings * segments`` vertices, ``2 * rings * segments`` faces."""
    theta = np.linspace(0.0, np.pi, rings + 2)[1:-1]
    phi = np.linspace(0.0, 2.0 * np.pi, segments, endpoint=False)
    ring = np.stack(
        [
            np.outer(np.sin(theta), np.cos(phi)),
            np.outer(np.cos(theta), np.ones(segments)),
            np.outer(np.sin(theta), np.sin(phi)),
        ],
        axis=-1,
    ).reshape(-1, 3)
    verts = np.vstack([[0.0, 1.0, 0.0], ring, [0.0, -1.0, 0.0]])
    south = len(verts) - 1
    s = np.arange(segments)
    faces = [np.stack([np.zeros(segments, int), 1 + (s + 1) % segments, 1 + s], axis=1)]
    for r in range(rings - 1):
        a, b = 1 + r * segments + s, 1 + r * segments + (s + 1) % segments
        c, d = a + segments, b + segments
        faces += [np.stack([a, b, d], axis=1), np.stack([a, d, c], axis=1)]
    last = 1 + (rings - 1) * segments
    faces.append(np.stack([np.full(segments, south), last + s, last + (s + 1) % segments], axis=1))
    return verts, np.concatenate(faces).astype(np.int32)


def walking_body(
    name: str,
    frames: np.ndarray,
    sphere: tuple[np.ndarray, np.ndarray],
    x0: float,
    color: tuple[int, int, int],
) -> AnimatedMesh:
    """A body-sized ellipsoid walking right at 4 m depth and breathing (every vertex moves)."""
    verts, faces = sphere
    t = frames[:, None, None].astype(np.float64)
    body = verts * [0.25, 0.85, 0.15] * (1.0 + 0.03 * np.sin(t / 3.0 + verts[:, 1:2]))
    walk = np.stack([x0 + 0.04 * t[:, 0], 0.02 * np.sin(t[:, 0]), 4.0 + 0 * t[:, 0]], axis=-1)
    return AnimatedMesh(name, frames.astype(np.int64), (body + walk).astype(np.float32), faces, color)


def one_person() -> tuple[list[AnimatedMesh], float, int]:
    """(a) one person on every frame."""
    return [walking_body("person_1", np.arange(12), uv_sphere(10, 16), 0.0, (216, 82, 24))], 30.0, 12


def two_people_with_gap() -> tuple[list[AnimatedMesh], float, int]:
    """(b) person 1 on 0-4 and 9-13 (gap 5-8), person 2 on 3-10 holding one pose on 5-7; 16 frames."""
    sphere = uv_sphere(8, 12)
    first = walking_body("person_1", np.r_[0:5, 9:14], sphere, -1.0, (216, 82, 24))
    second = walking_body("person_2", np.arange(3, 11), sphere, 1.0, (236, 176, 31))
    held = second.vertices.copy()
    held[3:5] = held[2]  # frames 6 and 7 repeat frame 5: no new targets
    second = AnimatedMesh("person_2", second.frames, held, second.faces, second.color)
    return [first, second], 10.0, 16


def single_frame() -> tuple[list[AnimatedMesh], float, int]:
    """One frame only: no morph targets, the animation is a single key."""
    return [walking_body("person_1", np.array([0]), uv_sphere(6, 8), 0.0, (125, 46, 141))], 25.0, 1


CASES: dict[str, Callable[[], tuple[list[AnimatedMesh], float, int]]] = {
    "one_person": one_person,
    "two_people_gap": two_people_with_gap,
    "single_frame": single_frame,
}
KEYS = [(case, q) for case in CASES for q in (True, False)]
IDS = [f"{case}-{'int16' if q else 'float'}" for case, q in KEYS]


def run_validator(paths: list[Path]) -> list[dict]:
    """Khronos glTF validator reports of ``paths`` (tests/gltf/validate.mjs, installed by `make setup`)."""
    if not (GLTF_TOOLS / "node_modules" / "gltf-validator").is_dir():
        pytest.fail("the glTF validator is not installed: run `make setup` (npm ci --prefix tests/gltf)")
    proc = subprocess.run(
        ["node", str(VALIDATOR), *map(str, paths)], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode in (0, 1), f"validator failed ({proc.returncode}): {proc.stderr}"
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def written(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[tuple[str, bool], tuple[Path, list[AnimatedMesh], float, int]]:
    """Every case written with and without quantization: key -> (path, meshes, fps, n_frames)."""
    folder = tmp_path_factory.mktemp("glb")
    out = {}
    for case, quantize in KEYS:
        meshes, fps, n_frames = CASES[case]()
        path = folder / f"{case}_{quantize}.glb"
        path.write_bytes(write_glb(meshes, fps, n_frames, quantize=quantize))
        out[case, quantize] = (path, meshes, fps, n_frames)
    return out


@pytest.fixture(scope="module")
def reports(written) -> dict[tuple[str, bool], dict]:
    """Validator report of every written file (one node process for all)."""
    keys = list(written)
    return dict(zip(keys, run_validator([written[k][0] for k in keys]), strict=True))


class Glb:
    """Minimal GLB reader: the JSON document and numpy views of its accessors."""

    def __init__(self, path: Path) -> None:
        data = path.read_bytes()
        magic, version, total = struct.unpack_from("<III", data)
        assert (magic, version, total) == (0x46546C67, 2, len(data))
        json_len, _ = struct.unpack_from("<II", data, 12)
        self.doc = json.loads(data[20 : 20 + json_len])
        bin_len, _ = struct.unpack_from("<II", data, 20 + json_len)
        self.bin = data[28 + json_len : 28 + json_len + bin_len]

    def accessor(self, index: int) -> np.ndarray:
        """Accessor ``index`` as float64 ``[count, components]``, normalized integers dequantized."""
        acc = self.doc["accessors"][index]
        view = self.doc["bufferViews"][acc["bufferView"]]
        dtype = np.dtype(
            {5126: np.float32, 5125: np.uint32, 5123: np.uint16, 5122: np.int16}[acc["componentType"]]
        )
        n = {"SCALAR": 1, "VEC3": 3}[acc["type"]]
        stride = view.get("byteStride", n * dtype.itemsize)
        offset = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
        assert (
            offset + (acc["count"] - 1) * stride + n * dtype.itemsize
            <= view.get("byteOffset", 0) + view["byteLength"]
        )
        raw = np.ndarray((acc["count"], n), dtype, self.bin, offset, (stride, dtype.itemsize)).astype(
            np.float64
        )
        if acc.get("normalized"):
            assert acc["componentType"] == 5122
            raw = np.maximum(raw / 32767.0, -1.0)
        return raw

    def channel(self, node: int, path: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(times, values per key) of the first animation's channel on ``node``/``path``."""
        anim = self.doc["animations"][0]
        for ch in anim["channels"]:
            if ch["target"] == {"node": node, "path": path}:
                sampler = anim["samplers"][ch["sampler"]]
                assert sampler["interpolation"] == "STEP"
                times = self.accessor(sampler["input"])[:, 0]
                return times, self.accessor(sampler["output"]).reshape(len(times), -1)
        return None

    def pose(self, node: int, key: int) -> np.ndarray:
        """World-space vertices of ``node`` at animation key ``key`` (base + weighted targets, node scale)."""
        mesh = self.doc["meshes"][self.doc["nodes"][node]["mesh"]]
        prim = mesh["primitives"][0]
        verts = self.accessor(prim["attributes"]["POSITION"])
        weights = self.channel(node, "weights")
        if weights is not None:
            for w, target in zip(weights[1][key], prim["targets"], strict=True):
                if w:
                    verts = verts + w * self.accessor(target["POSITION"])
        return verts * self.doc["nodes"][node].get("scale", [1.0, 1.0, 1.0])


@pytest.mark.parametrize(("case", "quantize"), KEYS, ids=IDS)
def test_khronos_validator_reports_no_errors(case: str, quantize: bool, reports) -> None:
    report = reports[case, quantize]
    issues = report["issues"]
    listed = [(m["code"], m["severity"], m["message"]) for m in issues["messages"] if m["severity"] <= 1]
    print(
        f"{case} quantize={quantize}: {issues['numErrors']} errors, {issues['numWarnings']} warnings {listed}"
    )
    assert issues["numErrors"] == 0, listed
    assert issues["numWarnings"] == 0, listed
    assert report["info"]["animationCount"] == 1
    assert report["info"]["hasMorphTargets"] == (case != "single_frame")
    uses_quantization = "KHR_mesh_quantization" in report["info"].get("extensionsRequired", [])
    assert uses_quantization == (quantize and case != "single_frame")


@pytest.mark.parametrize(("case", "quantize"), KEYS, ids=IDS)
def test_trimesh_loads_every_person_at_its_first_frame(case: str, quantize: bool, written) -> None:
    path, meshes, _, _ = written[case, quantize]
    scene = trimesh.load(path, force="scene")
    for person in meshes:
        transform, geometry_name = scene.graph[person.name]
        geometry = scene.geometry[geometry_name]
        assert len(geometry.vertices) == person.vertices.shape[1]
        assert len(geometry.faces) == len(person.faces)
        world = trimesh.transform_points(geometry.vertices, transform)
        np.testing.assert_allclose(world, person.vertices[0] * CV_TO_GLTF, atol=1e-5)
        # The axis change is a rotation, not a mirror: faces keep pointing outwards.
        source = trimesh.Trimesh(person.vertices[0], person.faces, process=False)
        loaded = trimesh.Trimesh(world, geometry.faces, process=False)
        assert source.volume > 0
        assert loaded.volume == pytest.approx(source.volume, rel=1e-4)


@pytest.mark.parametrize(("case", "quantize"), KEYS, ids=IDS)
def test_one_timeline_and_people_hidden_outside_their_frames(case: str, quantize: bool, written) -> None:
    path, meshes, fps, n_frames = written[case, quantize]
    glb = Glb(path)
    assert len(glb.doc["animations"]) == 1
    anim = glb.doc["animations"][0]
    for sampler in anim["samplers"]:
        times = glb.accessor(sampler["input"])[:, 0]
        np.testing.assert_allclose(times, np.arange(n_frames) / fps, rtol=1e-6)
        acc = glb.doc["accessors"][sampler["input"]]
        assert acc["min"] == [0.0]
        assert acc["max"][0] == pytest.approx((n_frames - 1) / fps)
    for node, person in enumerate(meshes):
        assert glb.doc["nodes"][node]["name"] == person.name
        _, scale = glb.channel(node, "scale")
        shown = np.zeros(n_frames, bool)
        shown[person.frames] = True
        node_scale = glb.doc["nodes"][node].get("scale", [1.0, 1.0, 1.0])
        np.testing.assert_array_equal(scale[~shown], 0.0)
        np.testing.assert_array_equal(scale[shown], np.broadcast_to(node_scale, (shown.sum(), 3)))
        weights = glb.channel(node, "weights")
        if weights is not None:
            w = weights[1]
            assert set(np.unique(w)) <= {0.0, 1.0} and (w.sum(axis=1) <= 1).all(), "weights must be one-hot"
        material = glb.doc["materials"][glb.doc["meshes"][node]["primitives"][0]["material"]]
        pbr = material["pbrMetallicRoughness"]
        srgb = np.asarray(person.color) / 255.0
        linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
        np.testing.assert_allclose(pbr["baseColorFactor"], [*linear, 1.0], atol=1e-6)
        assert (pbr["metallicFactor"], pbr["roughnessFactor"]) == (0.0, 1.0)


@pytest.mark.parametrize(("case", "quantize"), KEYS, ids=IDS)
def test_morph_targets_decode_to_the_input_vertices(case: str, quantize: bool, written) -> None:
    path, meshes, _, _ = written[case, quantize]
    glb = Glb(path)
    worst = 0.0
    for node, person in enumerate(meshes):
        scale = glb.doc["nodes"][node].get("scale", [1.0])[0]
        # int16 rounding is half a step of scale / 32767; float32 sums add a few micrometres.
        tolerance = (scale / 65534 if quantize else 0.0) + 5e-6
        for frame, expected in zip(
            person.frames, person.vertices.astype(np.float64) * CV_TO_GLTF, strict=True
        ):
            error = np.abs(glb.pose(node, int(frame)) - expected).max()
            assert error <= tolerance, f"{person.name} frame {frame}: {error * 1e3:.4f} mm"
            worst = max(worst, error)
    print(f"{case} quantize={quantize}: max decode error {worst * 1e3:.4f} mm")


def test_repeated_poses_reuse_targets(written) -> None:
    for quantize in (True, False):
        path, meshes, _, _ = written["two_people_gap", quantize]
        doc = Glb(path).doc
        first, second = (len(doc["meshes"][n]["primitives"][0]["targets"]) for n in range(2))
        assert first == len(meshes[0].frames) - 1
        assert second == len(meshes[1].frames) - 1 - 2  # frames 6 and 7 repeat frame 5
        assert doc["meshes"][1]["extras"]["targetNames"][:3] == [
            "frame_000004",
            "frame_000005",
            "frame_000008",
        ]
        # Both people have the same faces: one index accessor.
        assert doc["meshes"][0]["primitives"][0]["indices"] == doc["meshes"][1]["primitives"][0]["indices"]


def test_mhr_sized_mesh_size_per_100_frames(tmp_path: Path) -> None:
    verts, faces = uv_sphere(103, 179)
    assert (len(verts), len(faces)) == (MHR_VERTICES, MHR_FACES)
    person = walking_body("person_1", np.arange(100), (verts, faces), 0.0, (216, 82, 24))
    sizes = {}
    for quantize in (True, False):
        data = write_glb([person], 30.0, 100, quantize=quantize)
        (tmp_path / f"mhr_{quantize}.glb").write_bytes(data)
        sizes[quantize] = len(data)
    # Layout: float32 base + uint16 indices + 99 targets of 8 (int16 padded) or 12 (float32) bytes a vertex.
    fixed = MHR_VERTICES * 12 + MHR_FACES * 3 * 2
    for quantize, per_vertex in ((True, 8), (False, 12)):
        expected = fixed + 99 * MHR_VERTICES * per_vertex
        assert expected < sizes[quantize] < expected + 100_000
    print(
        f"MHR-sized mesh ({MHR_VERTICES} vertices, {MHR_FACES} faces), 100 frames: "
        f"int16 {sizes[True] / 1e6:.2f} MB, float32 {sizes[False] / 1e6:.2f} MB per 100 frames"
    )
    for report in run_validator([tmp_path / "mhr_True.glb", tmp_path / "mhr_False.glb"]):
        assert report["issues"]["numErrors"] == 0


def _person(**changes) -> AnimatedMesh:
    fields = {
        "name": "p",
        "frames": np.arange(2),
        "vertices": np.zeros((2, 3, 3), np.float32),
        "faces": np.array([[0, 1, 2]]),
        "color": (1, 2, 3),
    }
    return AnimatedMesh(**{**fields, **changes})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"frames": np.array([1, 1])}, "strictly increasing"),
        ({"frames": np.array([-1, 0])}, "strictly increasing"),
        ({"frames": np.array([0.0, 1.0])}, "integer"),
        ({"vertices": np.zeros((3, 3, 3), np.float32)}, "T = 2 frames"),
        ({"vertices": np.full((2, 3, 3), np.nan, np.float32)}, "NaN"),
        ({"faces": np.array([[0, 1, 3]])}, "face indices"),
        ({"color": (0, 0, 256)}, "0..255"),
    ],
)
def test_invalid_mesh_raises(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _person(**changes)


@pytest.mark.parametrize(
    ("meshes", "fps", "n_frames", "message"),
    [([], 30.0, 2, "no meshes"), ([_person()], 0.0, 2, "fps"), ([_person()], 30.0, 1, "past the timeline")],
)
def test_invalid_timeline_raises(meshes: list, fps: float, n_frames: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        write_glb(meshes, fps, n_frames)
