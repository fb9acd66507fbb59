from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from body4d import masks
from body4d.types import Click


def test_palette_round_trip_all_ids(tmp_path: Path) -> None:
    labels = np.arange(256, dtype=np.uint8).reshape(16, 16)  # ids 1..255 + background
    path = tmp_path / "m.png"
    path.write_bytes(masks.encode_palette_png(labels))
    with Image.open(path) as im:
        assert im.mode == "P"
        assert im.getpalette()[: 3 * 4] == [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0]  # DAVIS
    assert np.array_equal(masks.read_palette_png(path), labels)


def test_read_rejects_rgb(tmp_path: Path) -> None:
    Image.new("RGB", (4, 4)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="not a label map"):
        masks.read_palette_png(tmp_path / "rgb.png")


def test_labels_masks_round_trip_and_overlap_rule() -> None:
    a = np.zeros((8, 8), bool)
    a[:4] = True
    b = np.zeros((8, 8), bool)
    b[2:6] = True
    labels = masks.masks_to_labels({3: a, 7: b}, (8, 8))
    assert labels[0, 0] == 3 and labels[3, 0] == 7 and labels[7, 0] == 0  # higher id wins
    assert (labels == 3).sum() == 16 and (labels == 7).sum() == 32


def test_masks_to_labels_validates() -> None:
    with pytest.raises(ValueError, match="outside 1..255"):
        masks.masks_to_labels({0: np.ones((2, 2), bool)}, (2, 2))
    with pytest.raises(ValueError, match="expected"):
        masks.masks_to_labels({1: np.ones((3, 2), bool)}, (2, 2))


def test_mask_box() -> None:
    m = np.zeros((10, 20), bool)
    assert masks.mask_box(m) is None
    m[2:5, 7:11] = True
    assert masks.mask_box(m) == (7.0, 2.0, 11.0, 5.0)


def test_colors_stable_and_distinct() -> None:
    assert masks.color_for(1) == (216, 82, 24)
    assert masks.color_for(2) == (236, 176, 31)
    colours = {masks.color_for(i) for i in range(1, 41)}
    assert len(colours) == 40
    with pytest.raises(ValueError):
        masks.color_for(0)


def test_overlay_paints_only_objects() -> None:
    frame = np.full((20, 20, 3), 100, np.uint8)
    labels = np.zeros((20, 20), np.uint8)
    labels[5:15, 5:15] = 1
    out = masks.overlay(frame, labels, alpha=0.5, contour=True)
    assert (out[0, 0] == 100).all()
    assert tuple(out[10, 10]) == (158, 91, 62)  # half-way to orange
    assert (out[5, 10] == 255).all()  # contour
    with pytest.raises(ValueError, match="differ in size"):
        masks.overlay(frame, labels[:10])


@pytest.mark.parametrize("alpha", [0.5, 0.35])
def test_overlay_blends_object_pixels_and_outlines_two_pixels_inside_each_object(alpha: float) -> None:
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)
    labels = np.zeros((90, 60), np.uint8)
    labels[:30, :25] = 4  # touches the frame's border: the border counts as outside the object
    labels[70:, :] = 200  # as wide as the frame
    labels[20:50, 30:55][rng.random((30, 25)) < 0.5] = 9  # speckle: many small pieces
    labels = labels.T  # a non-contiguous view of 60 x 90
    out = masks.overlay(frame, labels, alpha=alpha)
    assert np.array_equal(out[labels == 0], frame[labels == 0])
    for obj_id in (4, 9, 200):
        mask = labels == obj_id
        # Pixels at most CONTOUR_WIDTH steps (4-neighbour) from a pixel outside the object, or
        # from the frame's edge, are the white outline; the rest is blended with the colour.
        padded = np.pad(mask, 1)
        steps = ndimage.distance_transform_cdt(padded, metric="taxicab")[1:-1, 1:-1]
        edge = mask & (steps <= masks.CONTOUR_WIDTH)
        colour = np.array(masks.color_for(obj_id), np.float32)
        blend = np.clip(frame.astype(np.float32) * (1 - alpha) + colour * alpha + 0.5, 0, 255).astype(
            np.uint8
        )
        assert edge.any() and (obj_id == 9 or (mask & ~edge).any())  # 9: speckle is all outline
        assert (out[edge] == 255).all()
        assert np.array_equal(out[mask & ~edge], blend[mask & ~edge])
    assert np.array_equal(
        masks.overlay(frame, labels, alpha=alpha, contour=False)[labels > 0], blend_all(frame, labels, alpha)
    )


def blend_all(frame: np.ndarray, labels: np.ndarray, alpha: float) -> np.ndarray:
    """Every object pixel of ``frame`` blended with its object's colour (float32, rounded)."""
    colours = np.array([masks.color_for(int(i)) for i in labels[labels > 0]], np.float32)
    return np.clip(frame[labels > 0].astype(np.float32) * (1 - alpha) + colours * alpha + 0.5, 0, 255).astype(
        np.uint8
    )


def test_draw_clicks_marks_positive_and_negative() -> None:
    frame = np.zeros((100, 100, 3), np.uint8)
    out = masks.draw_clicks(frame, [Click(0, 20, 20, True), Click(0, 70, 70, False)])
    assert out[20, 20].tolist() == [255, 255, 255]  # plus sign centre
    assert out[22, 23][1] > out[22, 23][0]  # green fill near the positive click
    assert out[72, 73][0] > out[72, 73][1]  # red fill near the negative click
    assert (out[50, 50] == 0).all()


def test_click_markers_at_the_frame_edge_are_cut_by_it() -> None:
    frame = np.zeros((100, 120, 3), np.uint8)
    out = masks.draw_clicks(frame, [Click(0, 0, 99, True), Click(0, 119, 0, False)])
    radius = 6  # the smallest marker (1.5 % of the shorter side is less)
    yy, xx = np.ogrid[:100, :120]
    for (cx, cy), fill in (((0, 99), (60, 200, 80)), ((119, 0), (220, 60, 60))):
        d2 = (xx - cx) ** 2 + (yy - cy) ** 2
        ring = (d2 <= radius**2) & (d2 > (radius - 2) ** 2)
        assert (out[ring] == 255).all()
        inside = (d2 <= (radius - 2) ** 2) & ((np.abs(xx - cx) > 3) | (np.abs(yy - cy) > 3))
        assert inside.any() and (out[inside] == fill).all()
    far = np.ones((100, 120), bool)
    far[90:, :10] = far[:10, 110:] = False
    assert (out[far] == 0).all()


def test_a_memory_mapped_label_volume_keeps_every_write_across_page_releases(tmp_path: Path) -> None:
    n = 3 * masks.RELEASE_EVERY_FRAMES + 1
    volume = masks.label_volume(n, 16, 24, tmp_path, max_bytes=0)
    assert isinstance(volume, masks.LabelVolume) and volume.shape == (n, 16, 24)
    for i in range(n):
        volume[i] = i
    frame = volume[5]  # a view written in place (as segmentation paints a frame)
    frame[2:4, 2:4] = 200
    for i in range(n):  # reads past several releases of the mapping's pages
        expected = np.full((16, 24), i, np.uint8)
        if i == 5:
            expected[2:4, 2:4] = 200
        assert np.array_equal(np.asarray(volume[i]), expected), i
    small = masks.label_volume(2, 16, 24, tmp_path, max_bytes=2 * 16 * 24)
    assert type(small) is np.ndarray, "a volume that fits stays in memory"
