"""Animated GLB (binary glTF 2.0) of per-frame body meshes, written with numpy + json only.

Layout of the file `write_glb` returns:

* one node + mesh + material per person, all in the scene's root;
* the mesh's base POSITION is the person's first frame; every later frame whose pose differs
  from the frame before it is one morph target (POSITION deltas from the base). A frame equal to
  the previous one reuses its target, a frame equal to the base uses no target;
* ONE animation (Babylon, behind Gradio's ``Model3D``, plays only the first) on the shared
  timeline ``t = frame / fps`` for ``frame`` in ``0..n_frames-1``. Per person it has a STEP
  ``weights`` channel (one-hot: the target of the frame, or none for the base) and a STEP
  ``scale`` channel that hides the person (scale 0) on every frame without a mesh, gaps included;
* root motion is in the vertices: nodes are never translated;
* coordinates are glTF's (+Y up, camera looking along -Z), in metres: OpenCV's ``(x, y, z)``
  becomes ``(x, -y, -z)``, a 180° rotation about x, so the face winding is unchanged;
* ``quantize=True`` stores the deltas as normalized int16 (``KHR_mesh_quantization``). The deltas
  are divided by the person's largest delta ``s`` so that they fit in [-1, 1]; the node carries
  the scale ``s`` (and its scale channel switches between 0 and ``s``), the base positions are
  stored divided by ``s`` as float32. The error is at most ``s / 65534`` per coordinate.
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

# glTF 2.0 enums (componentType and bufferView.target).
_FLOAT = 5126
_UNSIGNED_INT = 5125
_UNSIGNED_SHORT = 5123
_SHORT = 5122
_ARRAY_BUFFER = 34962
_ELEMENT_ARRAY_BUFFER = 34963

# OpenCV camera frame (x right, y down, z forward) -> glTF frame (x right, y up, z backward).
_CV_TO_GLTF = np.array([1.0, -1.0, -1.0], dtype=np.float32)
# Normalized int16 decodes as max(q / 32767, -1): quantize to [-32767, 32767].
_INT16_NORM = 32767
# Vertex attributes must be 4-byte aligned, so an int16 VEC3 (6 bytes) is padded to 8 bytes.
_QUANTIZED_STRIDE = 8
# Largest vertex count whose indices fit in uint16 (65535 is the primitive-restart value).
_MAX_UINT16_VERTICES = 65535
# Matte look: no metal, fully rough. Double-sided so that open mesh borders never show holes.
_METALLIC = 0.0
_ROUGHNESS = 1.0

_GLB_MAGIC = 0x46546C67  # "glTF"
_GLB_VERSION = 2
_CHUNK_JSON = 0x4E4F534A  # "JSON"
_CHUNK_BIN = 0x004E4942  # "BIN\0"


@dataclass(frozen=True)
class AnimatedMesh:
    """One person's meshes over the frames where it has one.

    Attributes:
        name: node and mesh name in the GLB (e.g. ``"person_1"``).
        frames: ``int64[T]`` global frame indices, strictly increasing, >= 0.
        vertices: ``float32[T, V, 3]`` metres, OpenCV camera frame (x right, y down, z forward),
            ``cam_t`` applied, so that all people share one camera space.
        faces: ``int32/uint32[F, 3]`` 0-based vertex indices, the same for every frame.
        color: display colour, sRGB 0..255 (e.g. `body4d.masks.color_for`).
    """

    name: str
    frames: np.ndarray
    vertices: np.ndarray
    faces: np.ndarray
    color: tuple[int, int, int]

    def __post_init__(self) -> None:
        frames, vertices, faces = np.asarray(self.frames), np.asarray(self.vertices), np.asarray(self.faces)
        who = f"AnimatedMesh {self.name!r}"
        if frames.ndim != 1 or len(frames) == 0 or not np.issubdtype(frames.dtype, np.integer):
            raise ValueError(
                f"{who}: frames must be a non-empty 1-D integer array, got {frames.dtype} {frames.shape}"
            )
        if frames[0] < 0 or np.any(np.diff(frames) <= 0):
            raise ValueError(f"{who}: frames must be >= 0 and strictly increasing, got {frames.tolist()}")
        if vertices.ndim != 3 or vertices.shape[0] != len(frames) or vertices.shape[2] != 3:
            raise ValueError(
                f"{who}: vertices must be TxVx3 with T = {len(frames)} frames, got {vertices.shape}"
            )
        if not np.isfinite(vertices).all():
            raise ValueError(f"{who}: vertices contain NaN or inf: drop the frames whose mesh is invalid")
        if faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0:
            raise ValueError(f"{who}: faces must be a non-empty Fx3 index array, got {faces.shape}")
        if faces.min() < 0 or faces.max() >= vertices.shape[1]:
            raise ValueError(
                f"{who}: face indices must be in 0..{vertices.shape[1] - 1}, got {faces.min()}..{faces.max()}"
            )
        if len(self.color) != 3 or not all(0 <= int(c) <= 255 for c in self.color):
            raise ValueError(f"{who}: color must be 3 integers in 0..255, got {self.color}")


def write_glb(meshes: Sequence[AnimatedMesh], fps: float, n_frames: int, *, quantize: bool = True) -> bytes:
    """One animated GLB holding every person of ``meshes`` on the timeline ``t = frame / fps``.

    Args:
        meshes: the people; each is shown only on its own ``frames``.
        fps: frames per second of the timeline (> 0).
        n_frames: frames of the timeline; the animation lasts ``(n_frames - 1) / fps`` seconds and
            every person's frames must be < ``n_frames``.
        quantize: store the morph deltas as normalized int16 (KHR_mesh_quantization), about 1.5x
            smaller, error below ``largest delta / 65534`` (sub-millimetre for human motion).

    Returns:
        The GLB bytes (the caller writes them to disk).

    Raises:
        ValueError: no meshes, a bad ``fps``/``n_frames``, or a person with frames past the timeline.
    """
    if not meshes:
        raise ValueError("no meshes to export: the GLB needs at least one person")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    for person in meshes:
        last = int(np.asarray(person.frames)[-1])
        if last >= n_frames:
            raise ValueError(f"{person.name!r} has frame {last}, past the timeline of {n_frames} frames")

    buf = _Buffer()
    times = (np.arange(n_frames, dtype=np.float64) / fps).astype(np.float32)
    time_input = buf.accessor(buf.view([times]), _FLOAT, "SCALAR", n_frames, bounds=times[:, None])
    gltf: dict = {
        "asset": {"version": "2.0", "generator": "body4d.glb"},
        "scene": 0,
        "scenes": [{"nodes": list(range(len(meshes)))}],
        "nodes": [],
        "meshes": [],
        "materials": [],
    }
    samplers: list[dict] = []
    channels: list[dict] = []
    index_accessors: list[tuple[np.ndarray, int]] = []
    any_quantized = False
    for p, person in enumerate(meshes):
        morph = _morph_targets(person, quantize)
        any_quantized |= quantize and bool(morph.targets)
        primitive: dict = {
            "attributes": {"POSITION": _base_accessor(buf, morph.base)},
            "indices": _index_accessor(buf, np.asarray(person.faces), len(morph.base), index_accessors),
            "material": p,
        }
        mesh: dict = {"name": person.name, "primitives": [primitive]}
        if morph.targets:
            primitive["targets"] = [{"POSITION": a} for a in _target_accessors(buf, morph.targets, quantize)]
            mesh["weights"] = [0.0] * len(morph.targets)
            mesh["extras"] = {
                "targetNames": [f"frame_{int(person.frames[k]):06d}" for k in morph.first_frame]
            }
        node: dict = {"name": person.name, "mesh": p}
        if morph.scale != 1.0:
            node["scale"] = [morph.scale] * 3
        gltf["meshes"].append(mesh)
        gltf["nodes"].append(node)
        gltf["materials"].append(_material(person))

        rows = np.asarray(person.frames)
        visible = np.zeros((n_frames, 3), dtype=np.float32)
        visible[rows] = morph.scale
        samplers.append(_step_sampler(buf, time_input, visible, "VEC3"))
        channels.append({"sampler": len(samplers) - 1, "target": {"node": p, "path": "scale"}})
        if morph.targets:
            weights = np.zeros((n_frames, len(morph.targets)), dtype=np.float32)
            shown = morph.target_of_frame >= 0
            weights[rows[shown], morph.target_of_frame[shown]] = 1.0
            samplers.append(_step_sampler(buf, time_input, weights.reshape(-1, 1), "SCALAR"))
            channels.append({"sampler": len(samplers) - 1, "target": {"node": p, "path": "weights"}})

    gltf["animations"] = [{"name": "body4d", "samplers": samplers, "channels": channels}]
    if any_quantized:
        gltf["extensionsUsed"] = ["KHR_mesh_quantization"]
        gltf["extensionsRequired"] = ["KHR_mesh_quantization"]
    glb = buf.glb(gltf)
    log.debug(
        "GLB: %d people, %d frames, %.1f MB (quantize=%s)", len(meshes), n_frames, len(glb) / 1e6, quantize
    )
    return glb


@dataclass(frozen=True)
class _Morph:
    """A person's base mesh and distinct morph targets, in the stored (glTF, divided by scale) space.

    base: ``float32[V, 3]``; targets: ``float32[V, 3]`` deltas or ``int16[V, 4]`` padded quantized
    deltas; target_of_frame: ``int[T]`` target shown on each of the person's frames (-1 = base);
    first_frame: index into the person's frames of each target's first use; scale: node scale.
    """

    base: np.ndarray
    targets: list[np.ndarray]
    target_of_frame: np.ndarray
    first_frame: list[int]
    scale: float


def _morph_targets(person: AnimatedMesh, quantize: bool) -> _Morph:
    """Split a person's frames into base + distinct morph targets (consecutive repeats reused)."""
    verts = np.asarray(person.vertices, dtype=np.float32) * _CV_TO_GLTF
    base = verts[0]
    scale = 1.0
    if quantize and len(verts) > 1:
        largest = max(float(np.abs(v - base).max()) for v in verts[1:])
        scale = largest if largest > 0 else 1.0
    target_of_frame = np.full(len(verts), -1, dtype=np.int64)
    targets: list[np.ndarray] = []
    first_frame: list[int] = []
    previous: np.ndarray | None = None
    for k in range(1, len(verts)):
        delta = (verts[k] - base) / np.float32(scale)
        if quantize:
            data = np.zeros((len(delta), 4), dtype=np.int16)
            data[:, :3] = np.clip(np.rint(delta * _INT16_NORM), -_INT16_NORM, _INT16_NORM)
        else:
            data = delta
        if previous is not None and np.array_equal(data, previous):
            target_of_frame[k] = target_of_frame[k - 1]
        elif data.any():
            target_of_frame[k] = len(targets)
            targets.append(data)
            first_frame.append(k)
        previous = data
    return _Morph(base / np.float32(scale), targets, target_of_frame, first_frame, scale)


def _base_accessor(buf: _Buffer, base: np.ndarray) -> int:
    """Float32 VEC3 POSITION accessor (min/max required by glTF)."""
    return buf.accessor(buf.view([base], target=_ARRAY_BUFFER), _FLOAT, "VEC3", len(base), bounds=base)


def _index_accessor(
    buf: _Buffer, faces: np.ndarray, n_vertices: int, cache: list[tuple[np.ndarray, int]]
) -> int:
    """Triangle index accessor (uint16 when the vertices allow it), shared by people with equal faces."""
    for known, accessor in cache:
        if np.array_equal(known, faces):
            return accessor
    small = n_vertices <= _MAX_UINT16_VERTICES
    flat = faces.reshape(-1).astype(np.uint16 if small else np.uint32)
    view = buf.view([flat], target=_ELEMENT_ARRAY_BUFFER)
    accessor = buf.accessor(view, _UNSIGNED_SHORT if small else _UNSIGNED_INT, "SCALAR", len(flat))
    cache.append((faces, accessor))
    return accessor


def _target_accessors(buf: _Buffer, targets: list[np.ndarray], quantize: bool) -> list[int]:
    """One POSITION-delta accessor per target, all in one strided buffer view."""
    n_vertices = len(targets[0])
    stride = _QUANTIZED_STRIDE if quantize else 12
    view = buf.view(targets, target=_ARRAY_BUFFER, stride=stride)
    component = _SHORT if quantize else _FLOAT
    return [
        buf.accessor(
            view,
            component,
            "VEC3",
            n_vertices,
            offset=j * n_vertices * stride,
            bounds=t[:, :3],
            normalized=quantize,
        )
        for j, t in enumerate(targets)
    ]


def _step_sampler(buf: _Buffer, time_input: int, values: np.ndarray, kind: str) -> dict:
    """STEP animation sampler over the shared timeline; ``values`` has one row per key (or per weight)."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    output = buf.accessor(buf.view([values]), _FLOAT, kind, len(values))
    return {"input": time_input, "output": output, "interpolation": "STEP"}


def _material(person: AnimatedMesh) -> dict:
    """Matte material of the person's colour (baseColorFactor is linear RGB: convert from sRGB)."""
    srgb = np.asarray(person.color, dtype=np.float64) / 255.0
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    return {
        "name": person.name,
        "pbrMetallicRoughness": {
            "baseColorFactor": [*(round(float(c), 6) for c in linear), 1.0],
            "metallicFactor": _METALLIC,
            "roughnessFactor": _ROUGHNESS,
        },
        "doubleSided": True,
    }


class _Buffer:
    """The GLB's single binary buffer with its bufferViews and accessors (views 4-byte aligned)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.length = 0
        self.views: list[dict] = []
        self.accessors: list[dict] = []

    def _pad(self) -> None:
        pad = -self.length % 4
        if pad:
            self.chunks.append(b"\0" * pad)
            self.length += pad

    def view(
        self, arrays: Sequence[np.ndarray], *, target: int | None = None, stride: int | None = None
    ) -> int:
        """Append ``arrays`` back to back as one bufferView; returns its index."""
        self._pad()
        start = self.length
        for a in arrays:
            self.chunks.append(np.ascontiguousarray(a).tobytes())
            self.length += a.nbytes
        view: dict = {"buffer": 0, "byteOffset": start, "byteLength": self.length - start}
        if stride is not None:
            view["byteStride"] = stride
        if target is not None:
            view["target"] = target
        self.views.append(view)
        return len(self.views) - 1

    def accessor(
        self,
        view: int,
        component: int,
        kind: str,
        count: int,
        *,
        offset: int = 0,
        bounds: np.ndarray | None = None,
        normalized: bool = False,
    ) -> int:
        """Add an accessor; ``bounds`` (``[count, n]``) gives min/max, raw integers for integer data."""
        acc: dict = {"bufferView": view, "componentType": component, "count": int(count), "type": kind}
        if offset:
            acc["byteOffset"] = int(offset)
        if normalized:
            acc["normalized"] = True
        if bounds is not None:
            # glTF: min/max are in the stored type, i.e. raw integers even for normalized data.
            cast = float if component == _FLOAT else int
            acc["min"] = [cast(v) for v in bounds.min(axis=0)]
            acc["max"] = [cast(v) for v in bounds.max(axis=0)]
        self.accessors.append(acc)
        return len(self.accessors) - 1

    def glb(self, gltf: dict) -> bytes:
        """The GLB container: 12-byte header, JSON chunk (space-padded), BIN chunk (zero-padded)."""
        self._pad()
        gltf = {**gltf, "buffers": [{"byteLength": self.length}], "bufferViews": self.views}
        gltf["accessors"] = self.accessors
        text = json.dumps(gltf, separators=(",", ":")).encode("utf-8")
        text += b" " * (-len(text) % 4)
        total = 12 + 8 + len(text) + 8 + self.length
        header = struct.pack("<III", _GLB_MAGIC, _GLB_VERSION, total)
        return b"".join(
            [
                header,
                struct.pack("<II", len(text), _CHUNK_JSON),
                text,
                struct.pack("<II", self.length, _CHUNK_BIN),
                *self.chunks,
            ]
        )
