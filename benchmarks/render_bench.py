"""Mesh rendering benchmark: ms per 1280x720 frame, 5 people of MHR size, ours (EGL, software) vs pyrender.

Usage: .venv/bin/python benchmarks/render_bench.py [--frames 50] [--people 5] [--json out.json]

Every frame draws 5 bodies of 18,439 vertices / 36,874 faces (the MHR mesh's counts: a stretched
179 x 103 UV sphere is a closed mesh with exactly those counts) at depths 2-6 m, with vertices
changing every frame, composited over a background frame. Rows:

* ``body4d egl``: `body4d.render.MeshRenderer("egl")` (Mesa llvmpipe on a CPU-only machine).
* ``body4d egl, 4x MSAA``: the same with ``samples=4``.
* ``body4d software``: the numpy fallback rasteriser.
* ``pyrender ...``: the original's renderer, drawn the way the original draws (one mesh of all
  people with vertex colours, ambient 0.3 + three directional lights, RGBA, alpha-composited on
  the frame), once with one reused ``OffscreenRenderer`` and once with a new one per frame (what
  the original does). pyrender is not a body4d dependency; install it for the run and remove it
  afterwards so that the venv matches pyproject.toml::

      .venv/bin/pip freeze > /tmp/before.txt
      .venv/bin/pip install pyrender==0.1.45      # pins PyOpenGL==3.1.0, which works with EGL
      .venv/bin/python benchmarks/render_bench.py
      .venv/bin/pip uninstall -y pyrender PyOpenGL pyglet freetype-py imageio six
      .venv/bin/pip freeze | diff /tmp/before.txt -   # must print nothing

  (the uninstall list is what the install added to this venv; ``pip install pyrender==0.1.45
  PyOpenGL==3.1.10`` is refused by pip's resolver because of that pin).
  pyrender 0.1.45 uses ``np.infty``, gone in numpy 2; the script sets ``np.infty = np.inf``
  before importing it (``pyrender-maintained`` does not need that). Without pyrender the rows
  are reported as skipped.

Times are wall-clock per frame after 2 warm-up frames: mean, median and min (the machine may be
shared, so min is the least noisy figure).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report import headline  # noqa: E402

from body4d.masks import color_for  # noqa: E402
from body4d.render import MeshRenderer  # noqa: E402

WIDTH, HEIGHT = 1280, 720
# ~60 degrees horizontal field of view at 1280 px, a typical phone/action camera.
K = np.array([[1100.0, 0.0, 640.0], [0.0, 1100.0, 360.0], [0.0, 0.0, 1.0]])
# UV sphere: 179 vertex rings x 103 segments + 2 poles = 18,439 vertices, 36,874 faces (MHR's counts).
RINGS, SEGMENTS = 179, 103
# Body-sized ellipsoid semi-axes in metres (half width, half height, half depth).
BODY_AXES = (0.22, 0.85, 0.14)
WARMUP = 2
PYRENDER_REUSED = "pyrender 0.1.45, renderer reused"


def body_mesh() -> tuple[np.ndarray, np.ndarray]:
    """A closed, body-sized stretched UV sphere: float32[18439, 3] vertices, int32[36874, 3] faces."""
    theta = np.linspace(0, np.pi, RINGS + 2)[1:-1]
    phi = np.linspace(0, 2 * np.pi, SEGMENTS, endpoint=False)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    ring = np.stack([np.sin(t) * np.cos(p), np.cos(t), np.sin(t) * np.sin(p)], -1).reshape(-1, 3)
    verts = np.concatenate([[[0, 1, 0]], ring, [[0, -1, 0]]]) * BODY_AXES
    idx = np.arange(RINGS * SEGMENTS).reshape(RINGS, SEGMENTS) + 1
    nxt = np.roll(idx, -1, axis=1)
    top = np.stack([np.zeros(SEGMENTS, int), nxt[0], idx[0]], 1)
    bottom = np.stack([np.full(SEGMENTS, len(verts) - 1), idx[-1], nxt[-1]], 1)
    quads_a = np.stack([idx[:-1], nxt[:-1], nxt[1:]], -1).reshape(-1, 3)
    quads_b = np.stack([idx[:-1], nxt[1:], idx[1:]], -1).reshape(-1, 3)
    faces = np.concatenate([top, quads_a, quads_b, bottom]).astype(np.int32)
    return verts.astype(np.float32), faces


def sequence(n_frames: int, n_people: int) -> list[list[np.ndarray]]:
    """Per frame, per person: swaying, breathing copies of the body at depths 2-6 m.

    The people stand across the middle of the view, nearer ones partly hiding farther ones; the
    nearest (935 px tall at 2 m) is cut by the bottom of the frame, as in real footage.
    """
    verts, _ = body_mesh()
    depths = np.linspace(2.0, 6.0, n_people)
    columns = np.resize([560.0, 780.0, 400.0, 920.0, 250.0], n_people)  # image column of each body's axis
    xs = (columns - K[0, 2]) * depths / K[0, 0]
    ys = (400.0 - K[1, 2]) * depths / K[1, 1]  # body centres on image row 400
    frames = []
    for f in range(n_frames):
        people = []
        for i in range(n_people):
            sway = 0.05 * np.sin(0.2 * f + i)
            scale = np.array([1.0 + 0.03 * np.sin(0.3 * f + i), 1.0, 1.0], np.float32)
            people.append((verts * scale + [xs[i] + sway, ys[i], depths[i]]).astype(np.float32))
        frames.append(people)
    return frames


def background() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)


def time_frames(
    draw: Callable[[list[np.ndarray]], np.ndarray], frames: list[list[np.ndarray]]
) -> dict[str, float]:
    times = []
    for i, people in enumerate(frames):
        t0 = time.perf_counter()
        draw(people)
        if i >= WARMUP:
            times.append((time.perf_counter() - t0) * 1000)
    return {"mean_ms": statistics.fmean(times), "median_ms": statistics.median(times), "min_ms": min(times)}


def bench_ours(backend: str, samples: int, frames: list[list[np.ndarray]]) -> tuple[dict[str, float], str]:
    _, faces = body_mesh()
    frame = background()
    colors = [color_for(i + 1) for i in range(len(frames[0]))]
    with MeshRenderer(backend, samples=samples) as renderer:

        def draw(people: list[np.ndarray]) -> np.ndarray:
            return renderer.render(
                frame, list(zip(people, colors, strict=True)), K, faces, width=WIDTH, height=HEIGHT
            )

        return time_frames(draw, frames), renderer.info()


def bench_pyrender(frames: list[list[np.ndarray]], reuse: bool) -> tuple[dict[str, float], str]:
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")  # before anything imports OpenGL
    if not hasattr(np, "infty"):
        np.infty = np.inf  # type: ignore[attr-defined]  # pyrender 0.1.45 on numpy 2
    import pyrender
    import trimesh
    from OpenGL import GL

    _, faces = body_mesh()
    frame = background().astype(np.float32) / 255
    n_people = len(frames[0])
    colors = np.concatenate(
        [np.tile([*np.array(color_for(i + 1)) / 255, 1.0], (len(frames[0][0]), 1)) for i in range(n_people)]
    )
    all_faces = np.concatenate([faces + i * len(frames[0][0]) for i in range(n_people)])
    to_gl = np.array([1.0, -1.0, -1.0], np.float32)  # OpenCV camera frame -> OpenGL (180 deg about x)
    light_poses = []
    for theta, phi in ((np.pi / 6, 0.0), (np.pi / 6, 2 * np.pi / 3), (np.pi / 6, 4 * np.pi / 3)):
        z = np.array([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)])
        x = np.cross([0.0, 0.0, 1.0], z) if abs(z[2]) < 1 else np.array([1.0, 0.0, 0.0])
        x /= np.linalg.norm(x)
        pose = np.eye(4)
        pose[:3, :3] = np.stack([x, np.cross(z, x), z], 1)
        light_poses.append(pose)
    renderer = pyrender.OffscreenRenderer(WIDTH, HEIGHT) if reuse else None
    renderer_string = ""

    def draw(people: list[np.ndarray]) -> np.ndarray:
        nonlocal renderer, renderer_string
        verts = np.concatenate(people) * to_gl
        mesh = trimesh.Trimesh(verts, all_faces, vertex_colors=colors, process=False)
        scene = pyrender.Scene(bg_color=[0, 0, 0, 0], ambient_light=(0.3, 0.3, 0.3))
        scene.add(pyrender.Mesh.from_trimesh(mesh))
        cam = pyrender.IntrinsicsCamera(K[0, 0], K[1, 1], K[0, 2], K[1, 2], zfar=1e12)
        scene.add(cam, pose=np.eye(4))
        for pose in light_poses:
            scene.add(pyrender.DirectionalLight(color=np.ones(3), intensity=1.0), pose=pose)
        r = renderer or pyrender.OffscreenRenderer(WIDTH, HEIGHT)
        try:
            rgba, _ = r.render(scene, flags=pyrender.RenderFlags.RGBA)
            renderer_string = renderer_string or GL.glGetString(GL.GL_RENDERER).decode()
        finally:
            if not reuse:
                r.delete()
        a = rgba[..., 3:].astype(np.float32) / 255
        out = rgba[..., :3].astype(np.float32) / 255 * a + frame * (1 - a)
        return (out * 255).astype(np.uint8)

    try:
        return time_frames(draw, frames), renderer_string
    finally:
        if renderer is not None:
            renderer.delete()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=50, help="frames per backend (2 more are warm-up)")
    parser.add_argument("--people", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    frames = sequence(args.frames + WARMUP, args.people)
    rows: list[dict[str, object]] = []

    def run(name: str, fn: Callable[[], tuple[dict[str, float], str]]) -> None:
        try:
            stats, info = fn()
        except ImportError as exc:
            rows.append({"backend": name, "skipped": f"{exc} (see the docstring to install it)"})
            print(f"{name}: skipped ({exc})", flush=True)
            return
        rows.append({"backend": name, "renderer": info, **stats})
        print(f"{name}: {stats} [{info}]", flush=True)

    run("body4d egl", lambda: bench_ours("egl", 0, frames))
    run("body4d egl, 4x MSAA", lambda: bench_ours("egl", 4, frames))
    run("body4d software", lambda: bench_ours("software", 0, frames))
    run(PYRENDER_REUSED, lambda: bench_pyrender(frames, reuse=True))
    run("pyrender 0.1.45, new renderer per frame (the original)", lambda: bench_pyrender(frames, reuse=False))

    print(f"\n{args.people} people x 18,439 vertices / 36,874 faces, {WIDTH}x{HEIGHT}, {args.frames} frames")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    reference = next((r for r in rows if r["backend"] == PYRENDER_REUSED and "median_ms" in r), None)
    print("| backend | GL renderer | mean ms | median ms | min ms | speed-up vs pyrender reused (median) |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        if "skipped" in row:
            print(f"| {row['backend']} | skipped: {row['skipped']} | | | | |")
            continue
        speedup = f"{reference['median_ms'] / row['median_ms']:.1f}x" if reference else "-"
        print(
            f"| {row['backend']} | {row['renderer']} | {row['mean_ms']:.1f} | {row['median_ms']:.1f} "
            f"| {row['min_ms']:.1f} | {speedup} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    measured = {str(r["backend"]): float(r["median_ms"]) for r in rows if "median_ms" in r}
    figures = {f"{name} median ms": ms for name, ms in measured.items()}
    original = measured.get("pyrender 0.1.45, new renderer per frame (the original)")
    for name in ("body4d egl", "body4d egl, 4x MSAA"):
        if reference and name in measured:
            figures[f"{name} speed-up vs pyrender reused"] = reference["median_ms"] / measured[name]
        if original and name in measured:
            figures[f"{name} speed-up vs the original"] = original / measured[name]
    skipped = [str(r["backend"]) for r in rows if "skipped" in r]
    headline("render_bench", figures, note=f"skipped: {'; '.join(skipped)}" if skipped else "")


if __name__ == "__main__":
    main()
