"""Mesh renderer: both backends against geometry computed independently (cv2 polygon fill, K)."""

from __future__ import annotations

import colorsys
import logging
import threading
from collections.abc import Iterator

import cv2
import numpy as np
import pytest
import trimesh

from body4d import render
from body4d.masks import color_for
from body4d.render import MeshRenderer, get_renderer

BACKENDS = ("egl", "software")
W, H = 640, 480
# Off-centre principal point and fx != fy: a sign or half-pixel error in the projection shows.
K = np.array([[700.0, 0.0, 300.3], [0.0, 720.0, 230.6], [0.0, 0.0, 1.0]])
ORANGE, SKY = color_for(1), color_for(5)
# Reference silhouettes are filled at 5x resolution (odd, so a sub-pixel sits on each pixel centre).
REF_SCALE = 5


def sphere(
    center: tuple[float, float, float], radius: float = 0.5, subdivisions: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    mesh = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    return (mesh.vertices + center).astype(np.float32), mesh.faces.astype(np.int32)


def disk(center: tuple[float, float, float], radius: float, sides: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """A flat polygon facing the camera: its image is a polygon centred on the centre's projection."""
    angles = np.linspace(0, 2 * np.pi, sides, endpoint=False)
    ring = np.stack([np.cos(angles) * radius, np.sin(angles) * radius, np.zeros(sides)], 1)
    verts = np.concatenate([[[0.0, 0.0, 0.0]], ring]) + center
    faces = np.stack([np.zeros(sides, int), 1 + np.arange(sides), 1 + (np.arange(sides) + 1) % sides], 1)
    return verts.astype(np.float32), faces.astype(np.int32)


def reference_silhouette(
    verts: np.ndarray, faces: np.ndarray, K: np.ndarray, width: int, height: int
) -> np.ndarray:
    """Every projected triangle filled by OpenCV, sampled at the pixel centres.

    cv2 fills a polygon's boundary pixels too (up to a pixel outwards), so the triangles are filled
    at `REF_SCALE` times the resolution and the mask is read at each pixel's centre sub-pixel.
    """
    uvw = verts.astype(np.float64) @ K.T
    uv = uvw[:, :2] / uvw[:, 2:] * REF_SCALE + REF_SCALE // 2  # pixel centre i -> sub-pixel S*i + S//2
    fine = np.zeros((height * REF_SCALE, width * REF_SCALE), np.uint8)
    for tri in np.round(uv[faces] * 256).astype(np.int32):
        cv2.fillConvexPoly(fine, tri, 1, lineType=cv2.LINE_8, shift=8)
    return fine[REF_SCALE // 2 :: REF_SCALE, REF_SCALE // 2 :: REF_SCALE].astype(bool)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def hue_degrees(rgb: np.ndarray | tuple[int, int, int]) -> float:
    r, g, b = (float(c) / 255 for c in rgb)
    return colorsys.rgb_to_hsv(r, g, b)[0] * 360


def random_frame(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def renderers() -> Iterator[dict[str, MeshRenderer]]:
    made = {name: MeshRenderer(name) for name in BACKENDS}
    yield made
    for r in made.values():
        r.close()


@pytest.fixture(params=BACKENDS)
def renderer(request: pytest.FixtureRequest, renderers: dict[str, MeshRenderer]) -> MeshRenderer:
    return renderers[request.param]


def test_backends_are_what_they_say(renderers: dict[str, MeshRenderer]) -> None:
    egl = renderers["egl"]
    assert egl.backend == "egl" and egl.info() and "software" not in egl.info()
    assert renderers["software"].backend == "software"


def test_silhouette_is_the_projected_triangles(renderer: MeshRenderer) -> None:
    verts, faces = sphere((0.1, -0.05, 2.5))
    sil = renderer.silhouette([(verts, ORANGE)], K, faces, width=W, height=H)
    ref = reference_silhouette(verts, faces, K, W, H)
    assert sil.shape == (H, W) and sil.dtype == bool
    assert ref.sum() > 40_000
    assert iou(sil, ref) >= 0.98


def test_backends_agree(renderers: dict[str, MeshRenderer]) -> None:
    verts, faces = sphere((-0.2, 0.1, 3.0))
    people = [(verts, ORANGE)]
    frame = random_frame()
    images = {n: r.render(frame, people, K, faces, width=W, height=H) for n, r in renderers.items()}
    sils = {n: r.silhouette(people, K, faces, width=W, height=H) for n, r in renderers.items()}
    assert iou(sils["egl"], sils["software"]) >= 0.98
    both = sils["egl"] & sils["software"]
    diff = np.abs(images["egl"].astype(int) - images["software"].astype(int))[both]
    assert diff.mean() < 1.0 and np.percentile(diff, 99) <= 2  # same shading formula


def test_a_point_lands_where_K_says(renderer: MeshRenderer) -> None:
    center = (0.5, 0.4, 3.0)
    verts, faces = disk(center, radius=0.15)
    sil = renderer.silhouette([(verts, ORANGE)], K, faces, width=W, height=H)
    ys, xs = np.nonzero(sil)
    expected_u = K[0, 0] * center[0] / center[2] + K[0, 2]
    expected_v = K[1, 1] * center[1] / center[2] + K[1, 2]
    assert len(xs) > 3000
    # The pixel lattice alone moves a disk's centroid by up to ~0.05 px; a half-pixel or
    # principal-point error would move it by >= 0.5 px.
    assert xs.mean() == pytest.approx(expected_u, abs=0.1)
    assert ys.mean() == pytest.approx(expected_v, abs=0.1)


def test_nearer_person_occludes(renderer: MeshRenderer) -> None:
    near, faces = sphere((-0.15, 0.0, 2.0), radius=0.4)
    far, _ = sphere((0.3, 0.0, 3.0), radius=0.5)
    sil_near = renderer.silhouette([(near, ORANGE)], K, faces, width=W, height=H)
    sil_far = renderer.silhouette([(far, SKY)], K, faces, width=W, height=H)
    overlap = sil_near & sil_far
    far_only = sil_far & ~sil_near
    assert overlap.sum() > 5_000 and far_only.sum() > 5_000
    for people in ([(near, ORANGE), (far, SKY)], [(far, SKY), (near, ORANGE)]):
        img = renderer.render(None, people, K, faces, width=W, height=H)
        hues = np.array([hue_degrees(p) for p in img[overlap][::50]])
        assert np.abs(hues - hue_degrees(ORANGE)).max() < 4, "the nearer (orange) person must win the overlap"
        far_hues = np.array([hue_degrees(p) for p in img[far_only][::50]])
        assert np.abs(far_hues - hue_degrees(SKY)).max() < 4


def test_each_id_shows_its_mask_colour(renderer: MeshRenderer) -> None:
    centers = [(-1.05 + 0.42 * i, 0.0, 3.0) for i in range(6)]
    meshes = [sphere(c, radius=0.18) for c in centers]
    faces = meshes[0][1]
    people = [(verts, color_for(obj_id)) for obj_id, (verts, _) in enumerate(meshes, start=1)]
    img = renderer.render(None, people, K, faces, width=W, height=H)
    for (_, color), (x, y, z) in zip(people, centers, strict=True):
        u, v = round(K[0, 0] * x / z + K[0, 2]), round(K[1, 1] * y / z + K[1, 2])
        patch = img[v - 2 : v + 3, u - 2 : u + 3].reshape(-1, 3)
        for pixel in patch:
            assert abs(hue_degrees(pixel) - hue_degrees(color)) < 4
        # Facing the headlight: shaded colour ~ the colour itself (AMBIENT + DIFFUSE = 1).
        assert np.abs(patch.astype(int) - color).max() <= 8
        # Near the outline the surface turns away: darker, same hue.
        edge = img[v, u + int(0.96 * K[0, 0] * 0.18 / z)]
        assert edge.sum() < 0.85 * sum(color)
        assert abs(hue_degrees(edge) - hue_degrees(color)) < 6


def test_background_colour_without_a_frame(renderer: MeshRenderer) -> None:
    verts, faces = sphere((0.0, 0.0, 3.0))
    sil = renderer.silhouette([(verts, ORANGE)], K, faces, width=W, height=H)
    white = renderer.render(None, [(verts, ORANGE)], K, faces, width=W, height=H)
    assert (white[~sil] == 255).all()
    assert not (white[sil] == 255).all(axis=1).any()
    navy = renderer.render(None, [(verts, ORANGE)], K, faces, width=W, height=H, background=(10, 20, 30))
    assert (navy[~sil] == (10, 20, 30)).all()
    assert (navy[sil] == white[sil]).all()
    with pytest.raises(ValueError, match="not both"):
        renderer.render(random_frame(), [(verts, ORANGE)], K, faces, width=W, height=H, background=(0, 0, 0))


def test_frame_is_kept_outside_the_meshes(renderer: MeshRenderer) -> None:
    verts, faces = sphere((0.1, 0.2, 2.8))
    frame = random_frame(1)
    original = frame.copy()
    img = renderer.render(frame, [(verts, SKY)], K, faces, width=W, height=H)
    sil = renderer.silhouette([(verts, SKY)], K, faces, width=W, height=H)
    assert img.shape == (H, W, 3) and img.dtype == np.uint8
    assert (frame == original).all(), "the caller's frame is not modified"
    assert (img[~sil] == frame[~sil]).all()
    assert (img[sil] != frame[sil]).any(axis=1).mean() > 0.95
    assert (renderer.render(frame, [], K, faces, width=W, height=H) == frame).all()


def test_alpha_blends_over_the_frame(renderer: MeshRenderer) -> None:
    verts, faces = sphere((0.0, 0.0, 2.5))
    frame = random_frame(2)
    opaque = renderer.render(frame, [(verts, ORANGE)], K, faces, width=W, height=H)
    half = renderer.render(frame, [(verts, ORANGE)], K, faces, width=W, height=H, alpha=0.5)
    sil = renderer.silhouette([(verts, ORANGE)], K, faces, width=W, height=H)
    expected = (opaque[sil].astype(float) + frame[sil]) / 2
    assert np.abs(half[sil] - expected).max() <= 1.0
    assert (half[~sil] == frame[~sil]).all()


def test_msaa_smooths_edges_and_keeps_the_shape() -> None:
    verts, faces = sphere((0.1, -0.05, 2.5))
    with MeshRenderer("egl", samples=4) as r:
        assert r.samples == 4
        sil = r.silhouette([(verts, ORANGE)], K, faces, width=W, height=H)
        assert iou(sil, reference_silhouette(verts, faces, K, W, H)) >= 0.98
        img = r.render(None, [(verts, (0, 0, 0))], K, faces, width=W, height=H).astype(int)
    # On white, a black mesh's outline pixels are grey (partly covered) with MSAA.
    ring = cv2.dilate(sil.astype(np.uint8), np.ones((3, 3))) & ~cv2.erode(
        sil.astype(np.uint8), np.ones((3, 3))
    )
    grey = (img[ring.astype(bool)].min(axis=1) > 40) & (img[ring.astype(bool)].max(axis=1) < 215)
    assert grey.sum() > 100


def test_resizes_and_reuploads_faces(renderer: MeshRenderer) -> None:
    ball, ball_faces = sphere((0.0, 0.0, 3.0))
    small_ball, _ = sphere((-0.3, -0.3, 3.0), radius=0.3)
    box = trimesh.creation.box(extents=(0.5, 0.4, 0.4))
    box_verts, box_faces = (box.vertices + (-0.43, -0.46, 3.0)).astype(np.float32), box.faces.astype(np.int32)
    for (verts, faces), (w, h) in (
        ((ball, ball_faces), (W, H)),
        ((box_verts, box_faces), (320, 200)),
        ((ball, ball_faces), (W, H)),
        ((small_ball, ball_faces), (321, 241)),  # odd sizes: rows are not 4-byte aligned
    ):
        sil = renderer.silhouette([(verts, ORANGE)], K, faces, width=w, height=h)
        img = renderer.render(None, [(verts, ORANGE)], K, faces, width=w, height=h)
        assert sil.shape == (h, w) and img.shape == (h, w, 3)
        assert iou(sil, reference_silhouette(verts, faces, K, w, h)) >= 0.98
        assert ((img != 255).any(axis=2) == sil).mean() > 0.999


def test_bad_inputs_raise(renderer: MeshRenderer) -> None:
    verts, faces = sphere((0.0, 0.0, 3.0))
    with pytest.raises(ValueError, match="frame must be uint8"):
        renderer.render(random_frame()[:100], [(verts, ORANGE)], K, faces, width=W, height=H)
    with pytest.raises(ValueError, match="K must be"):
        renderer.render(None, [(verts, ORANGE)], K[:2], faces, width=W, height=H)
    with pytest.raises(ValueError, match="faces are shared"):
        renderer.render(None, [(verts, ORANGE), (verts[:10], SKY)], K, faces, width=W, height=H)
    with pytest.raises(ValueError, match="faces index vertices"):
        renderer.render(None, [(verts[:10], ORANGE)], K, faces, width=W, height=H)
    with pytest.raises(ValueError, match="colour"):
        renderer.render(None, [(verts, (300, 0, 0))], K, faces, width=W, height=H)
    with pytest.raises(ValueError, match="alpha"):
        renderer.render(None, [(verts, ORANGE)], K, faces, width=W, height=H, alpha=2)


def test_env_var_forces_software_and_rejects_bad_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BODY4D_RENDERER", "software")
    assert MeshRenderer().backend == "software"
    assert get_renderer().backend == "software"
    monkeypatch.setenv("BODY4D_RENDERER", "opengl")
    for make in (MeshRenderer, get_renderer):
        with pytest.raises(ValueError, match="auto, egl, software"):
            make()
    with pytest.raises(ValueError, match="auto, egl, software"):
        MeshRenderer("cuda")


def test_get_renderer_is_reused_across_calls_and_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BODY4D_RENDERER", raising=False)
    first = get_renderer()
    assert get_renderer() is first
    assert first.backend == "egl"  # this machine has EGL (Mesa llvmpipe); auto must pick it
    verts, faces = sphere((0.0, 0.0, 3.0))
    here = first.render(None, [(verts, ORANGE)], K, faces, width=W, height=H)
    seen: list[tuple[MeshRenderer, np.ndarray]] = []
    threads = [
        threading.Thread(
            target=lambda: seen.append(
                (get_renderer(), get_renderer().render(None, [(verts, ORANGE)], K, faces, width=W, height=H))
            )
        )
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 3
    for other, img in seen:
        assert other is first
        assert (img == here).all()


def test_auto_falls_back_to_software_once_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("GLCONTEXT_LINUX_LIBEGL", "/nonexistent/libEGL.so.1")  # glcontext reads it per context
    render._warn_once.cache_clear()
    with caplog.at_level(logging.WARNING, logger="body4d.render"):
        fallback = [MeshRenderer("auto") for _ in range(2)]
    assert [r.backend for r in fallback] == ["software", "software"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "/nonexistent/libEGL.so.1" in warnings[0] and "software" in warnings[0]
    with pytest.raises(RuntimeError, match="BODY4D_RENDERER=software"):
        MeshRenderer("egl")


def test_llvmpipe_with_cuda_warns_about_the_nvidia_egl_driver(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(render, "_cuda_available", lambda: True)
    render._warn_once.cache_clear()
    with caplog.at_level(logging.INFO, logger="body4d.render"), MeshRenderer("egl") as r:
        info = r.info()
    messages = " ".join(rec.getMessage() for rec in caplog.records)
    assert info in messages  # the GL renderer string is logged at start
    assert ("NVIDIA_DRIVER_CAPABILITIES" in messages) == (render.LLVMPIPE in info)
