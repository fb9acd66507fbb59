"""Headless mesh rendering: every person's mesh drawn over a video frame in one z-buffered pass.

One `MeshRenderer` per process, reused across frames and runs (`get_renderer`). Two backends draw
the same picture:

* ``"egl"``: OpenGL 3.3 through moderngl on a headless EGL context. On a GPU machine this is the
  NVIDIA EGL driver; on a CPU-only machine Mesa's llvmpipe (a multi-threaded CPU rasteriser).
* ``"software"``: our own numpy z-buffer rasteriser, for machines where EGL cannot start. Same
  projection, same shading, no anti-aliasing.

``BODY4D_RENDERER=auto|egl|software`` chooses (``auto``, the default, tries EGL and falls back to
software, logging why). The GL renderer string is logged when the EGL backend starts; llvmpipe
while CUDA is available means the NVIDIA EGL driver is not visible to the process (in a container:
``NVIDIA_DRIVER_CAPABILITIES`` must include ``graphics``).

Geometry: vertices are in the OpenCV camera frame, metres (x right, y down, z forward), projected
with the 3x3 pixel intrinsics ``K``: ``u = fx x/z + s y/z + cx``, ``v = fy y/z + cy``, with pixel
centres at integer coordinates and row 0 at the top of the image. Triangles with a vertex nearer
than `Z_NEAR` are not drawn by the software backend (OpenGL clips them); bodies are metres away.

Shading: smooth vertex normals (area-weighted face normals), a headlight at the camera centre and
an ambient term, ``colour * (AMBIENT + DIFFUSE * |n . v|)`` per vertex, interpolated
perspective-correctly across each triangle. Two-sided, so the winding order of the faces does not
matter.

Colours: the caller passes one RGB colour per person. Use ``body4d.masks.color_for(obj_id)`` so
that a person's mesh has the colour of their mask everywhere in body4d.

Threads: an OpenGL context is current in one thread at a time, and Gradio runs handlers in a
thread pool. The EGL backend therefore owns one private thread that creates the context and
issues every GL call; `render` and `silhouette` may be called from any thread (calls are
serialised). The software backend has no thread affinity.
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from scipy import sparse

log = logging.getLogger(__name__)

ENV_VAR = "BODY4D_RENDERER"
BACKEND_CHOICES = ("auto", "egl", "software")
# GL_RENDERER of Mesa's CPU rasteriser.
LLVMPIPE = "llvmpipe"

# Clip planes in metres. The near plane keeps the depth buffer precise (24-bit depth resolves
# ~0.2 mm at 5 m with these planes); nothing we draw is nearer than 1 cm or farther than 1 km.
Z_NEAR = 0.01
Z_FAR = 1000.0
# Lighting: a headlight at the camera plus ambient; a surface facing the camera shows its colour
# exactly (AMBIENT + DIFFUSE = 1), one seen edge-on keeps 35 % of it so that outlines stay readable.
AMBIENT = 0.35
DIFFUSE = 0.65
# Default canvas when there is no frame: white, as the original draws its mesh-only views.
WHITE = (255, 255, 255)
# Software rasteriser: candidate pixels tested per batch (~100 bytes each, so ~25 MB; batches that
# stay in cache ran 15 % faster than 1-4 M candidates at 1280x720 with 5 people).
SOFTWARE_BATCH_PIXELS = 250_000
# Software rasteriser: a pixel centre within this barycentric distance outside a triangle still
# counts, so that float rounding on an edge shared by two triangles never leaves a crack.
EDGE_EPS = 1e-5
# Software z-buffer key: quantised inverse depth in the high bits, triangle index in the low ones.
_TRI_BITS = 23
_DEPTH_LEVELS = (1 << 39) - 1

People = Sequence[tuple[np.ndarray, tuple[int, int, int]]]
_T = TypeVar("_T")


# ------------------------------------------------------------------------------ backend choice
def backend_choice(backend: str | None = None) -> str:
    """The requested backend: ``backend`` if given, else ``$BODY4D_RENDERER``, else ``"auto"``.

    Raises:
        ValueError: the value is not one of `BACKEND_CHOICES`.
    """
    source = "backend" if backend is not None else ENV_VAR
    value = backend if backend is not None else os.environ.get(ENV_VAR, "auto")
    choice = value.strip().lower()
    if choice not in BACKEND_CHOICES:
        raise ValueError(
            f"{source}={value!r} is not a mesh renderer: use one of {', '.join(BACKEND_CHOICES)}"
        )
    return choice


@functools.cache
def _warn_once(message: str) -> None:
    log.warning(message)


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


# ------------------------------------------------------------------------------- scene (numpy)
class _Topology:
    """The shared faces of every person: int32[F, 3] plus the vertex-face incidence for normals."""

    def __init__(self, faces: np.ndarray, n_vertices: int) -> None:
        self.faces = np.ascontiguousarray(faces, dtype=np.int32)
        self.n_vertices = n_vertices
        n_faces = len(self.faces)
        rows = self.faces.reshape(-1)
        cols = np.repeat(np.arange(n_faces, dtype=np.int32), 3)
        ones = np.ones(rows.shape, np.float32)
        # incidence[v, f] = 1 when vertex v is a corner of face f: normals = incidence @ face normals.
        self.incidence = sparse.csr_matrix((ones, (rows, cols)), shape=(n_vertices, n_faces))

    def matches(self, faces: np.ndarray, n_vertices: int) -> bool:
        return faces is self.faces or (
            n_vertices == self.n_vertices
            and faces.shape == self.faces.shape
            and np.array_equal(faces, self.faces)
        )


@dataclass(frozen=True)
class _Scene:
    """All people of one frame, ready to draw.

    Attributes:
        positions: float32[P*V, 3], camera frame, metres (person p owns rows p*V .. p*V+V-1).
        colors: float32[P*V, 3], shaded vertex colours in 0..1.
        n_people: P.
    """

    positions: np.ndarray
    colors: np.ndarray
    n_people: int


def vertex_normals(vertices: np.ndarray, incidence: sparse.csr_matrix, faces: np.ndarray) -> np.ndarray:
    """Smooth unit vertex normals (area-weighted face normals) of P meshes sharing ``faces``.

    Args:
        vertices: float32[P, V, 3].
        incidence: V x F vertex-face incidence matrix of ``faces``.
        faces: int32[F, 3].

    Returns:
        float32[P, V, 3]; a vertex on no face gets a zero normal.
    """
    n_people, n_vertices = vertices.shape[:2]
    n_faces = len(faces)
    # Vertex-major layout [V, P*3]: one row gather per corner serves every person at once.
    by_vertex = np.ascontiguousarray(vertices.transpose(1, 0, 2)).reshape(n_vertices, n_people * 3)
    corners = by_vertex[faces]  # [F, 3 corners, P*3]
    a = (corners[:, 1] - corners[:, 0]).reshape(n_faces, n_people, 3)
    b = (corners[:, 2] - corners[:, 0]).reshape(n_faces, n_people, 3)
    face_n = np.empty_like(a)  # cross(a, b), length = 2 * area
    face_n[..., 0] = a[..., 1] * b[..., 2] - a[..., 2] * b[..., 1]
    face_n[..., 1] = a[..., 2] * b[..., 0] - a[..., 0] * b[..., 2]
    face_n[..., 2] = a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]
    summed = np.asarray(incidence @ face_n.reshape(n_faces, n_people * 3)).reshape(n_vertices, n_people, 3)
    length = np.sqrt(np.einsum("vpc,vpc->vp", summed, summed))[..., None]
    return (summed / np.maximum(length, 1e-20)).transpose(1, 0, 2).astype(np.float32)


def shade(vertices: np.ndarray, normals: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """Headlight Lambert + ambient per vertex: ``colour * (AMBIENT + DIFFUSE * |n . v|)``.

    Args:
        vertices: float32[P, V, 3], camera frame (the light sits at the origin).
        normals: float32[P, V, 3] unit normals.
        colors: float32[P, 3] base colours in 0..1.

    Returns:
        float32[P, V, 3] shaded colours in 0..1.
    """
    distance = np.sqrt(np.einsum("pvc,pvc->pv", vertices, vertices))
    facing = np.abs(np.einsum("pvc,pvc->pv", normals, vertices)) / np.maximum(distance, 1e-20)
    return (colors[:, None, :] * (AMBIENT + DIFFUSE * facing)[..., None]).astype(np.float32)


def _check_people(people: People, n_vertices: int) -> tuple[np.ndarray, np.ndarray]:
    """Stack the people: float32[P, V, 3] vertices and float32[P, 3] colours in 0..1."""
    verts, colors = [], []
    for i, person in enumerate(people):
        try:
            v, color = person
        except (TypeError, ValueError):
            raise ValueError(
                f"people[{i}] must be a (vertices, (r, g, b)) pair, got {type(person).__name__}"
            ) from None
        v = np.asarray(v, dtype=np.float32)
        if v.shape != (n_vertices, 3):
            raise ValueError(
                f"people[{i}] has vertices of shape {v.shape}; every person needs ({n_vertices}, 3) "
                "(the faces are shared)"
            )
        if not np.isfinite(v).all():
            raise ValueError(f"people[{i}] has non-finite vertices")
        c = np.asarray(color)
        if c.shape != (3,) or not np.issubdtype(c.dtype, np.integer) or not np.all((c >= 0) & (c <= 255)):
            raise ValueError(
                f"people[{i}] colour must be integer (r, g, b) in 0..255 (body4d.masks.color_for), got {color!r}"
            )
        verts.append(v)
        colors.append(c.astype(np.float32) / 255.0)
    return np.stack(verts), np.stack(colors)


def _check_view(K: np.ndarray, width: int, height: int) -> np.ndarray:
    if int(width) != width or int(height) != height or width < 1 or height < 1:
        raise ValueError(f"width and height must be positive integers, got {width}x{height}")
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3) or not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ValueError(f"K must be a finite 3x3 pixel intrinsics matrix with fx, fy > 0, got {K.tolist()}")
    if K[1, 0] != 0 or K[2, 0] != 0 or K[2, 1] != 0 or K[2, 2] != 1:
        raise ValueError(f"K must be [[fx, s, cx], [0, fy, cy], [0, 0, 1]], got {K.tolist()}")
    return K


def _check_base(
    frame: np.ndarray | None, background: tuple[int, int, int] | None, width: int, height: int
) -> np.ndarray | tuple[int, int, int]:
    """The canvas: the frame (uint8[H, W, 3]) or a solid colour."""
    if frame is None:
        color = WHITE if background is None else background
        if len(color) != 3 or not all(0 <= int(c) <= 255 for c in color):
            raise ValueError(f"background must be (r, g, b) in 0..255, got {background!r}")
        return int(color[0]), int(color[1]), int(color[2])
    if background is not None:
        raise ValueError("give a frame or a background colour, not both")
    if frame.dtype != np.uint8 or frame.shape != (height, width, 3):
        raise ValueError(
            f"frame must be uint8[{height}, {width}, 3] (RGB at the render size), got {frame.dtype}{list(frame.shape)}"
        )
    return np.ascontiguousarray(frame)


def projection_matrix(K: np.ndarray, width: int, height: int) -> np.ndarray:
    """OpenGL clip matrix (float32[4, 4], row-major) of OpenCV intrinsics ``K``.

    Pixel (u, v) (centre at integers, row 0 at the top) lands on window pixel (u + 0.5, v + 0.5) with
    the window's row 0 first in memory, so the framebuffer reads back top row first with no flip.
    """
    fx, s, cx = K[0]
    fy, cy = K[1, 1], K[1, 2]
    proj = np.zeros((4, 4), np.float64)
    proj[0] = (2 * fx / width, 2 * s / width, (2 * cx + 1) / width - 1, 0)
    proj[1] = (0, 2 * fy / height, (2 * cy + 1) / height - 1, 0)
    proj[2] = (0, 0, (Z_FAR + Z_NEAR) / (Z_FAR - Z_NEAR), -2 * Z_FAR * Z_NEAR / (Z_FAR - Z_NEAR))
    proj[3] = (0, 0, 1, 0)
    return proj.astype(np.float32)


def composite(
    base: np.ndarray | tuple[int, int, int], rgb: np.ndarray, mask: np.ndarray, alpha: float
) -> np.ndarray:
    """Meshes over the canvas: ``alpha * mesh + (1 - alpha) * canvas`` where covered.

    Args:
        base: uint8[H, W, 3] frame, or an (r, g, b) colour.
        rgb: float32[N, 3] mesh colours in 0..1 of the N covered pixels.
        mask: bool[H, W] coverage (N pixels set).
        alpha: mesh opacity in 0..1.

    Returns:
        uint8[H, W, 3], a new array.
    """
    h, w = mask.shape
    out = base.copy() if isinstance(base, np.ndarray) else np.empty((h, w, 3), np.uint8)
    if not isinstance(base, np.ndarray):
        out[:] = base
    mesh = rgb * 255.0
    if alpha < 1.0:
        mesh = alpha * mesh + (1.0 - alpha) * out[mask]
    out[mask] = np.clip(np.rint(mesh), 0, 255).astype(np.uint8)
    return out


# ---------------------------------------------------------------------------- software backend
class _SoftwareBackend:
    """Z-buffered triangle rasteriser in numpy (pixel centres, perspective-correct colours)."""

    name = "software"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faces_all: np.ndarray | None = None

    def info(self) -> str:
        return f"software rasteriser (numpy {np.__version__})"

    def _all_faces(self, topo: _Topology, n_people: int) -> np.ndarray:
        with self._lock:
            f = self._faces_all
            if (
                f is None
                or len(f) != n_people * len(topo.faces)
                or not np.array_equal(f[: len(topo.faces)], topo.faces)
            ):
                offsets = (np.arange(n_people, dtype=np.int32) * topo.n_vertices)[:, None, None]
                f = (topo.faces[None] + offsets).reshape(-1, 3)
                self._faces_all = f
            return f

    def rasterize(
        self, scene: _Scene, topo: _Topology, K: np.ndarray, width: int, height: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Colours (float32[N, 3], 0..1) of the N covered pixels and the coverage mask bool[H, W]."""
        faces = self._all_faces(topo, scene.n_people)
        pos = scene.positions.astype(np.float64)
        z = pos[:, 2]
        safe_z = np.where(z > Z_NEAR, z, 1.0)
        u = (K[0, 0] * pos[:, 0] + K[0, 1] * pos[:, 1]) / safe_z + K[0, 2]
        v = K[1, 1] * pos[:, 1] / safe_z + K[1, 2]
        inv_z = 1.0 / safe_z

        # Per triangle: pixel bounding box (pixel centres inside the hull of the corners).
        fu, fv = u[faces], v[faces]
        x0 = np.maximum(np.ceil(fu.min(1)), 0).astype(np.int64)
        x1 = np.minimum(np.floor(fu.max(1)), width - 1).astype(np.int64)
        y0 = np.maximum(np.ceil(fv.min(1)), 0).astype(np.int64)
        y1 = np.minimum(np.floor(fv.max(1)), height - 1).astype(np.int64)
        bw, bh = x1 - x0 + 1, y1 - y0 + 1
        area2 = (fu[:, 1] - fu[:, 0]) * (fv[:, 2] - fv[:, 0]) - (fu[:, 2] - fu[:, 0]) * (fv[:, 1] - fv[:, 0])
        keep = (bw > 0) & (bh > 0) & (np.abs(area2) > 1e-12) & (z[faces] > Z_NEAR).all(1)
        tris = np.flatnonzero(keep)
        if len(tris) >= 1 << _TRI_BITS:
            raise ValueError(
                f"{len(tris)} visible triangles exceed the software rasteriser's {1 << _TRI_BITS}: "
                "draw fewer people per call"
            )

        # Barycentrics of corners 1 and 2 and the inverse depth are affine in the pixel offset
        # (dx, dy) from the box corner: l = a dx + b dy + c (local offsets keep float32 exact enough).
        lu, lv = fu[tris] - x0[tris, None], fv[tris] - y0[tris, None]
        inv_a = 1.0 / area2[tris]
        e1u, e1v = lu[:, 1] - lu[:, 0], lv[:, 1] - lv[:, 0]
        e2u, e2v = lu[:, 2] - lu[:, 0], lv[:, 2] - lv[:, 0]
        a1, b1 = e2v * inv_a, -e2u * inv_a
        c1 = -(a1 * lu[:, 0] + b1 * lv[:, 0])
        a2, b2 = -e1v * inv_a, e1u * inv_a
        c2 = -(a2 * lu[:, 0] + b2 * lv[:, 0])
        w = inv_z[faces[tris]]
        dw1, dw2 = w[:, 1] - w[:, 0], w[:, 2] - w[:, 0]
        coef = np.stack(
            [a1, b1, c1, a2, b2, c2, dw1 * a1 + dw2 * a2, dw1 * b1 + dw2 * b2, w[:, 0] + dw1 * c1 + dw2 * c2]
        )
        coef = coef.astype(np.float32)

        boxes = _Boxes(x0=x0[tris], y0=y0[tris], width=bw[tris], count=(bw[tris] * bh[tris]).astype(np.int64))
        w_lo, w_hi = (float(w.min()), float(w.max())) if len(tris) else (0.0, 1.0)
        depth_scale = _DEPTH_LEVELS / max(w_hi - w_lo, 1e-12)
        empty = np.iinfo(np.int64).max
        zbuf = np.full(width * height, empty, np.int64)
        for lo, hi in _batches(boxes.count, SOFTWARE_BATCH_PIXELS):
            _scan(zbuf, boxes, coef, lo, hi, width, w_hi, depth_scale)

        covered = np.flatnonzero(zbuf != empty)
        winner = (zbuf[covered] & ((1 << _TRI_BITS) - 1)).astype(np.int64)  # index into tris
        py, px = np.divmod(covered, width)
        dx = (px - boxes.x0[winner]).astype(np.float32)
        dy = (py - boxes.y0[winner]).astype(np.float32)
        l1 = coef[0, winner] * dx + coef[1, winner] * dy + coef[2, winner]
        l2 = coef[3, winner] * dx + coef[4, winner] * dy + coef[5, winner]
        corner_w = w[winner].astype(np.float32)
        # Perspective-correct weights: screen-space barycentrics times each corner's 1/z.
        weights = np.stack([(1 - l1 - l2) * corner_w[:, 0], l1 * corner_w[:, 1], l2 * corner_w[:, 2]], axis=1)
        weights = np.clip(weights, 0, None)
        weights /= np.maximum(weights.sum(1, keepdims=True), 1e-30)
        rgb = np.einsum("nk,nkc->nc", weights, scene.colors[faces[tris[winner]]])
        mask = np.zeros(width * height, bool)
        mask[covered] = True
        return rgb, mask.reshape(height, width)

    def close(self) -> None:
        self._faces_all = None


@dataclass(frozen=True)
class _Boxes:
    """Pixel boxes of the visible triangles: corner (x0, y0), width and pixel count, int64[T] each."""

    x0: np.ndarray
    y0: np.ndarray
    width: np.ndarray
    count: np.ndarray


def _scan(
    zbuf: np.ndarray,
    boxes: _Boxes,
    coef: np.ndarray,
    lo: int,
    hi: int,
    width: int,
    w_hi: float,
    depth_scale: float,
) -> None:
    """Test every pixel of triangles ``lo..hi-1``'s boxes; keep the nearest per pixel in ``zbuf``.

    Args:
        zbuf: int64[H*W] z-buffer keys, updated in place.
        boxes: the visible triangles' pixel boxes.
        coef: float32[9, T] affine coefficients of l1, l2 and 1/z in the box offset (dx, dy).
        lo, hi: the batch of triangles.
        width: image width in pixels.
        w_hi, depth_scale: depth quantisation (largest 1/z, levels per unit of 1/z).
    """
    count = boxes.count[lo:hi]
    tri = np.repeat(np.arange(lo, hi), count)
    first = np.repeat(np.cumsum(count) - count, count)
    dy, dx = np.divmod(np.arange(len(tri), dtype=np.int64) - first, boxes.width[tri])
    fdx, fdy = dx.astype(np.float32), dy.astype(np.float32)
    l1 = coef[0, tri] * fdx + coef[1, tri] * fdy + coef[2, tri]
    l2 = coef[3, tri] * fdx + coef[4, tri] * fdy + coef[5, tri]
    sel = np.flatnonzero((l1 >= -EDGE_EPS) & (l2 >= -EDGE_EPS) & (l1 + l2 <= 1 + EDGE_EPS))
    tri, dx, dy, fdx, fdy = tri[sel], dx[sel], dy[sel], fdx[sel], fdy[sel]
    inv_z = (coef[6, tri] * fdx + coef[7, tri] * fdy + coef[8, tri]).astype(np.float64)
    pix = (boxes.y0[tri] + dy) * width + boxes.x0[tri] + dx
    # Nearest = largest 1/z: quantise (w_hi - 1/z) so that the smallest key wins.
    q = np.clip((w_hi - inv_z) * depth_scale, 0, _DEPTH_LEVELS).astype(np.int64)
    np.minimum.at(zbuf, pix, (q << _TRI_BITS) | tri)


def _batches(counts: np.ndarray, limit: int) -> list[tuple[int, int]]:
    """Split ``counts`` into consecutive runs whose sums stay near ``limit`` (at least one item each)."""
    ends = np.cumsum(counts)
    bounds, lo = [], 0
    while lo < len(counts):
        base = ends[lo - 1] if lo else 0
        hi = int(np.searchsorted(ends, base + limit, side="right"))
        hi = max(hi, lo + 1)
        bounds.append((lo, hi))
        lo = hi
    return bounds


# --------------------------------------------------------------------------------- EGL backend
_MESH_VS = """
#version 330
uniform mat4 proj;
in vec3 in_pos;
in vec3 in_color;
out vec3 v_color;
void main() {
    v_color = in_color;
    gl_Position = proj * vec4(in_pos, 1.0);
}
"""
_MESH_FS = """
#version 330
in vec3 v_color;
out vec4 f_color;
void main() { f_color = vec4(v_color, 1.0); }
"""
# Full-screen triangle from gl_VertexID; blends the (premultiplied, MSAA-resolved) mesh layer
# over the frame or a solid colour.
_COMPOSITE_VS = """
#version 330
void main() {
    vec2 p = vec2(float((gl_VertexID << 1) & 2), float(gl_VertexID & 2));
    gl_Position = vec4(p * 2.0 - 1.0, 0.0, 1.0);
}
"""
_COMPOSITE_FS = """
#version 330
uniform sampler2D frame_tex;
uniform sampler2D mesh_tex;
uniform bool has_frame;
uniform vec3 background;
uniform float alpha;
out vec4 f_color;
void main() {
    ivec2 p = ivec2(gl_FragCoord.xy);
    vec4 mesh = texelFetch(mesh_tex, p, 0);
    vec3 base = has_frame ? texelFetch(frame_tex, p, 0).rgb : background;
    f_color = vec4(base * (1.0 - alpha * mesh.a) + alpha * mesh.rgb, 1.0);
}
"""


class _EGLBackend:
    """moderngl on a headless EGL context, driven from one private thread."""

    name = "egl"

    def __init__(self, samples: int) -> None:
        self.samples = samples
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="body4d-gl")
        self._size: tuple[int, int] | None = None
        self._faces_key: tuple[_Topology, int] | None = None
        try:
            self.call(self._init_gl)
        except BaseException:
            if hasattr(self, "ctx"):
                self.call(self.ctx.release)
            self._executor.shutdown(wait=True)
            raise

    def call(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run ``fn(*args)`` on the GL thread and return its result (every GL method goes through here)."""
        return self._executor.submit(fn, *args).result()

    def _init_gl(self) -> None:
        import moderngl

        self._mgl = moderngl
        ctx = moderngl.create_standalone_context(require=330, backend="egl")
        self.ctx = ctx
        if self.samples > ctx.max_samples:
            raise ValueError(f"samples={self.samples} exceeds this GL driver's maximum of {ctx.max_samples}")
        self._mesh_prog = ctx.program(vertex_shader=_MESH_VS, fragment_shader=_MESH_FS)
        self._comp_prog = ctx.program(vertex_shader=_COMPOSITE_VS, fragment_shader=_COMPOSITE_FS)
        self._comp_prog["frame_tex"].value = 0
        self._comp_prog["mesh_tex"].value = 1
        self._comp_vao = ctx.vertex_array(self._comp_prog, [])
        self._pos_buf = ctx.buffer(reserve=12, dynamic=True)
        self._col_buf = ctx.buffer(reserve=12, dynamic=True)
        self._idx_buf = ctx.buffer(reserve=12, dynamic=True)
        self._mesh_vao = ctx.vertex_array(
            self._mesh_prog,
            [(self._pos_buf, "3f", "in_pos"), (self._col_buf, "3f", "in_color")],
            index_buffer=self._idx_buf,
            index_element_size=4,
        )
        self._renderer = str(ctx.info["GL_RENDERER"])
        self._version = str(ctx.info["GL_VERSION"])

    def info(self) -> str:
        return self._renderer

    def version(self) -> str:
        return f"{self._version}, moderngl {self._mgl.__version__}"

    def _resize(self, width: int, height: int) -> None:
        """(Re)allocate the framebuffers for ``width x height``."""
        if self._size == (width, height):
            return
        if self._size is not None:
            for obj in self._targets:
                obj.release()
        ctx, size = self.ctx, (width, height)
        self._mesh_tex = ctx.texture(size, 4)
        self._mesh_fbo = ctx.framebuffer([self._mesh_tex])
        targets: list[Any] = [self._mesh_tex, self._mesh_fbo]
        if self.samples:
            color = ctx.renderbuffer(size, 4, samples=self.samples)
            depth = ctx.depth_renderbuffer(size, samples=self.samples)
            self._draw_fbo = ctx.framebuffer([color], depth)
            targets += [color, depth, self._draw_fbo]
        else:
            depth = ctx.depth_renderbuffer(size)
            self._draw_fbo = ctx.framebuffer([self._mesh_tex], depth)
            targets += [depth, self._draw_fbo]
        self._frame_tex = ctx.texture(size, 3, alignment=1)
        self._out_rb = ctx.renderbuffer(size, 4)
        self._out_fbo = ctx.framebuffer([self._out_rb])
        self._targets = [*targets, self._frame_tex, self._out_rb, self._out_fbo]
        self._size = size

    def _upload(self, scene: _Scene, topo: _Topology) -> int:
        """Write vertices (every call) and indices (when the faces or the person count grow)."""
        for buf, data in ((self._pos_buf, scene.positions), (self._col_buf, scene.colors)):
            if buf.size < data.nbytes:
                buf.orphan(data.nbytes)
            buf.write(data)
        if self._faces_key is None or self._faces_key[0] is not topo or self._faces_key[1] < scene.n_people:
            offsets = (np.arange(scene.n_people, dtype=np.int32) * topo.n_vertices)[:, None, None]
            indices = (topo.faces[None] + offsets).reshape(-1)
            if self._idx_buf.size < indices.nbytes:
                self._idx_buf.orphan(indices.nbytes)
            self._idx_buf.write(indices)
            self._faces_key = (topo, scene.n_people)
        return scene.n_people * len(topo.faces) * 3

    def _draw_meshes(
        self, scene: _Scene | None, topo: _Topology | None, K: np.ndarray, width: int, height: int
    ) -> None:
        """Clear the mesh layer and draw the scene into it (resolved to `_mesh_tex`)."""
        mgl = self._mgl
        self._resize(width, height)
        self._draw_fbo.use()
        self._draw_fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
        if scene is not None and topo is not None:
            n_indices = self._upload(scene, topo)
            self._mesh_prog["proj"].write(projection_matrix(K, width, height).T.tobytes())
            self.ctx.enable_only(mgl.DEPTH_TEST)
            self._mesh_vao.render(mgl.TRIANGLES, vertices=n_indices)
            self.ctx.enable_only(mgl.NOTHING)
        if self.samples:
            self.ctx.copy_framebuffer(self._mesh_fbo, self._draw_fbo)

    def render(
        self,
        scene: _Scene | None,
        topo: _Topology | None,
        K: np.ndarray,
        width: int,
        height: int,
        base: np.ndarray | tuple[int, int, int],
        alpha: float,
    ) -> np.ndarray:
        """The composited picture, uint8[H, W, 3] (GL thread only: run it through `call`)."""
        self._draw_meshes(scene, topo, K, width, height)
        prog = self._comp_prog
        has_frame = isinstance(base, np.ndarray)
        if has_frame:
            self._frame_tex.write(base)
        else:
            prog["background"].value = tuple(c / 255.0 for c in base)
        prog["has_frame"].value = has_frame
        prog["alpha"].value = alpha
        self._frame_tex.use(0)
        self._mesh_tex.use(1)
        self._out_fbo.use()
        self._comp_vao.render(self._mgl.TRIANGLES, vertices=3)
        out = np.empty((height, width, 3), np.uint8)
        self._out_fbo.read_into(out, components=3, alignment=1)
        return out

    def coverage(self, scene: _Scene, topo: _Topology, K: np.ndarray, width: int, height: int) -> np.ndarray:
        """Coverage mask bool[H, W], at least half the samples (GL thread only: run it through `call`)."""
        self._draw_meshes(scene, topo, K, width, height)
        rgba = np.empty((height, width, 4), np.uint8)
        self._mesh_fbo.read_into(rgba, components=4, alignment=1)
        return rgba[..., 3] >= 128

    def close(self) -> None:
        self.call(self.ctx.release)
        self._executor.shutdown(wait=True)


# ------------------------------------------------------------------------------------ renderer
class MeshRenderer:
    """Draws people's meshes over a frame; one instance per process (see `get_renderer`).

    Args:
        backend: ``"auto"``, ``"egl"`` or ``"software"``; None reads ``$BODY4D_RENDERER``
            (default ``"auto"``: EGL, else software with a warning saying why).
        samples: MSAA samples per pixel for anti-aliased edges (EGL only; 0 = off, 4 is typical).
        alpha: mesh opacity over the frame, 0..1 (1 = opaque, as the original draws).

    Attributes:
        backend: the backend in use, ``"egl"`` or ``"software"``.
        samples: MSAA samples (always 0 on the software backend).
        alpha: default mesh opacity of `render`.

    Raises:
        ValueError: unknown backend, bad samples or alpha.
        RuntimeError: ``backend="egl"`` and EGL cannot start (the message says why).
    """

    def __init__(self, backend: str | None = None, *, samples: int = 0, alpha: float = 1.0) -> None:
        choice = backend_choice(backend)
        if int(samples) != samples or samples < 0:
            raise ValueError(f"samples must be an integer >= 0, got {samples!r}")
        self.alpha = _check_alpha(alpha)
        self._lock = threading.Lock()
        self._topology: _Topology | None = None
        self._closed = False
        self._impl: _EGLBackend | _SoftwareBackend
        if choice == "software":
            self._impl = _SoftwareBackend()
        else:
            try:
                self._impl = _EGLBackend(int(samples))
            except ValueError:
                raise
            except Exception as exc:  # moderngl/glcontext raise plain Exception for every EGL failure
                reason = f"{type(exc).__name__}: {exc}".strip()
                if choice == "egl":
                    raise RuntimeError(
                        f"cannot start the EGL mesh renderer ({reason}); install libegl1 libgl1-mesa-dri "
                        f"libegl-mesa0 (or the NVIDIA EGL driver), or set {ENV_VAR}=software"
                    ) from exc
                _warn_once(
                    f"EGL mesh renderer unavailable ({reason}): drawing meshes with the software rasteriser"
                )
                self._impl = _SoftwareBackend()
        self.backend = self._impl.name
        self.samples = int(samples) if self.backend == "egl" else 0
        if self.backend == "egl":
            log.info("mesh renderer: EGL, %s (%s)", self.info(), self._impl.version())
            if LLVMPIPE in self.info() and _cuda_available():
                _warn_once(
                    "CUDA is available but OpenGL renders on the CPU (llvmpipe): the NVIDIA EGL driver is not "
                    "visible; in a container NVIDIA_DRIVER_CAPABILITIES must include 'graphics'"
                )
        else:
            if samples:
                log.info(
                    "mesh renderer: the software backend has no anti-aliasing (samples=%d ignored)", samples
                )
            log.info("mesh renderer: %s", self.info())

    def info(self) -> str:
        """The GL renderer string (e.g. ``"llvmpipe (LLVM 15.0.6, 256 bits)"``) or the software rasteriser's name."""
        return self._impl.info()

    def _topology_for(self, faces: np.ndarray, n_vertices: int) -> _Topology:
        faces = np.asarray(faces)
        with self._lock:
            topo = self._topology
            if topo is not None and topo.matches(faces, n_vertices):
                return topo
            if faces.ndim != 2 or faces.shape[1] != 3 or not np.issubdtype(faces.dtype, np.integer):
                raise ValueError(
                    f"faces must be an integer array [F, 3], got {faces.dtype}{list(faces.shape)}"
                )
            if len(faces) and (faces.min() < 0 or faces.max() >= n_vertices):
                raise ValueError(
                    f"faces index vertices 0..{n_vertices - 1} only, got {faces.min()}..{faces.max()}"
                )
            self._topology = _Topology(faces, n_vertices)
            return self._topology

    def _scene(self, people: People, faces: np.ndarray) -> tuple[_Scene | None, _Topology | None]:
        if self._closed:
            raise RuntimeError("this MeshRenderer is closed: use get_renderer() for a live one")
        if len(people) == 0:
            return None, None
        n_vertices = len(np.asarray(people[0][0]))
        verts, colors = _check_people(people, n_vertices)
        topo = self._topology_for(faces, n_vertices)
        normals = vertex_normals(verts, topo.incidence, topo.faces)
        shaded = shade(verts, normals, colors)
        scene = _Scene(positions=verts.reshape(-1, 3), colors=shaded.reshape(-1, 3), n_people=len(verts))
        return scene, topo

    def render(
        self,
        frame: np.ndarray | None,
        people: People,
        K: np.ndarray,
        faces: np.ndarray,
        *,
        width: int,
        height: int,
        background: tuple[int, int, int] | None = None,
        alpha: float | None = None,
    ) -> np.ndarray:
        """All people drawn over ``frame`` (or a solid ``background``) in one z-buffered pass.

        Args:
            frame: uint8[height, width, 3] RGB, the original frame; None draws on ``background``.
            people: (vertices float32[V, 3] in the OpenCV camera frame in metres, (r, g, b) colour
                in 0..255) per person; pass ``body4d.masks.color_for(obj_id)`` as the colour.
            K: float[3, 3] pixel intrinsics of the frame.
            faces: int[F, 3] triangles shared by every person (uploaded once, reused while equal).
            width, height: output size in pixels.
            background: canvas colour when ``frame`` is None (default white); not with a frame.
            alpha: mesh opacity for this call; None uses `self.alpha`.

        Returns:
            uint8[height, width, 3] RGB, a new array; pixels no mesh covers equal the canvas.
        """
        K = _check_view(K, width, height)
        base = _check_base(frame, background, width, height)
        opacity = self.alpha if alpha is None else _check_alpha(alpha)
        scene, topo = self._scene(people, faces)
        if isinstance(self._impl, _EGLBackend):
            return self._impl.call(self._impl.render, scene, topo, K, width, height, base, opacity)
        if scene is None or topo is None:
            return composite(base, np.zeros((0, 3), np.float32), np.zeros((height, width), bool), opacity)
        rgb, mask = self._impl.rasterize(scene, topo, K, width, height)
        return composite(base, rgb, mask, opacity)

    def silhouette(
        self, people: People, K: np.ndarray, faces: np.ndarray, *, width: int, height: int
    ) -> np.ndarray:
        """Coverage mask bool[height, width] of all people (colours are ignored).

        With MSAA a pixel counts when at least half of its samples are covered.
        """
        K = _check_view(K, width, height)
        scene, topo = self._scene(people, faces)
        if scene is None or topo is None:
            return np.zeros((height, width), bool)
        if isinstance(self._impl, _EGLBackend):
            return self._impl.call(self._impl.coverage, scene, topo, K, width, height)
        return self._impl.rasterize(scene, topo, K, width, height)[1]

    def close(self) -> None:
        """Release the GL context and its thread; the renderer cannot be used afterwards."""
        if not self._closed:
            self._closed = True
            self._impl.close()

    def __enter__(self) -> MeshRenderer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MeshRenderer(backend={self.backend!r}, samples={self.samples}, alpha={self.alpha}, info={self.info()!r})"


def _check_alpha(alpha: float) -> float:
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in 0..1, got {alpha!r}")
    return float(alpha)


# One renderer per requested backend choice, shared by every thread of the process (the EGL
# backend serialises calls on its own GL thread). Loaded resources only, never per-user state.
_RENDERERS: dict[str, MeshRenderer] = {}
_RENDERERS_LOCK = threading.Lock()


def get_renderer() -> MeshRenderer:
    """The process-wide `MeshRenderer` for ``$BODY4D_RENDERER`` (created on first use, any thread).

    Raises:
        ValueError: ``$BODY4D_RENDERER`` is not one of `BACKEND_CHOICES`.
    """
    choice = backend_choice()
    with _RENDERERS_LOCK:
        renderer = _RENDERERS.get(choice)
        if renderer is None or renderer._closed:
            renderer = MeshRenderer(choice)
            _RENDERERS[choice] = renderer
        return renderer
