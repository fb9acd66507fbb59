"""Occlusion prior and amodal rules: mask statistics, keypoint jumps, candidates, windows, verdicts."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from body4d.config import CompletionConfig
from body4d.stages.occlusion import (
    MaskStats,
    amodal_from_rgb,
    amodal_verdict,
    candidate_frames,
    keypoint_jumps,
    mask_stats,
    windows,
)
from body4d.testing.synthetic_occlusion import SCENARIOS, make_clip, occluded_truth

# Pinned (the shipped defaults today) so the tests keep their meaning if the defaults are retuned.
CFG = CompletionConfig(
    iou_threshold=0.7,
    border_fraction=0.05,
    max_box_fraction=0.7,
    min_aspect=0.2,
    area_drop=0.65,
    area_window=12,
    contact_radius=3,
    contact_fraction=0.02,
    box_overlap=0.2,
    keypoint_jump=2.5,
)
W, H = 320, 240
T = 60
MID = 30


# --- mask_stats -------------------------------------------------------------------------------


def _tiny_volume() -> np.ndarray:
    """Three 6x8 label maps whose statistics are computed by hand in the test below."""
    labels = np.zeros((3, 6, 8), np.uint8)
    labels[0, 1:3, 1:3] = 1  # 2x2 block, box (1, 1, 3, 3)
    labels[0, 1:3, 3:5] = 2  # 2x2 block right beside it, box (3, 1, 5, 3)
    labels[1, 2:4, 2:4] = 2  # target 1 absent; value 9 (no target) touches target 2
    labels[1, 2:4, 4] = 9
    labels[2, 0:4, 0:4] = 1  # 4x4 block of target 1 ...
    labels[2, 2:4, 2:4] = 2  # ... with target 2 drawn over its bottom-right 2x2 corner
    return labels


def test_mask_stats_matches_hand_computed_values_on_a_streamed_volume() -> None:
    volume = _tiny_volume()
    # contact_radius 1: the 3x3 disk is the 4-neighbourhood.
    stats = mask_stats((frame for frame in volume), [1, 2], n_frames=3, contact_radius=1)
    one, two = stats[1], stats[2]
    np.testing.assert_array_equal(one.area, [4, 0, 12])
    np.testing.assert_array_equal(two.area, [4, 4, 4])
    assert one.area.dtype == np.int64
    np.testing.assert_array_equal(one.box[0], [1, 1, 3, 3])
    assert np.isnan(one.box[1]).all()
    np.testing.assert_array_equal(one.box[2], [0, 0, 4, 4])
    np.testing.assert_array_equal(two.box[2], [2, 2, 4, 4])
    assert one.box.dtype == np.float32
    # Frame 0: the column of target 1 next to target 2 (2 of 4 pixels), and vice versa.
    # Frame 1: label 9 is no target, so target 2 touches nobody.
    # Frame 2: (1,2) (1,3) (2,1) (3,1) of target 1's 12 pixels; 3 of target 2's 4 pixels.
    np.testing.assert_allclose(one.contact, [0.5, 0.0, 4 / 12], rtol=1e-6)
    np.testing.assert_allclose(two.contact, [0.5, 0.0, 0.75], rtol=1e-6)
    # Boxes of frame 0 only share an edge; in frame 2 box 2 (4 px) lies inside box 1 (16 px).
    np.testing.assert_allclose(one.box_overlap, [0.0, 0.0, 0.25], rtol=1e-6)
    np.testing.assert_allclose(two.box_overlap, [0.0, 0.0, 1.0], rtol=1e-6)


def test_mask_stats_contact_radius_reaches_across_a_gap() -> None:
    labels = np.zeros((1, 5, 12), np.uint8)
    labels[0, :, 0:3] = 1
    labels[0, :, 5:8] = 2  # two background columns between them: 3 px from column 2 to column 5
    near = mask_stats(labels, [1, 2], 1, contact_radius=3)
    far = mask_stats(labels, [1, 2], 1, contact_radius=2)
    assert near[1].contact[0] == pytest.approx(5 / 15)  # the 5 pixels of its right column
    assert far[1].contact[0] == 0.0


def test_mask_stats_rejects_wrong_frame_counts_and_maps() -> None:
    volume = _tiny_volume()
    with pytest.raises(ValueError, match="more than n_frames=2"):
        mask_stats(volume, [1, 2], 2, 1)
    with pytest.raises(ValueError, match="hold 3 frames, expected n_frames=4"):
        mask_stats(volume, [1, 2], 4, 1)
    with pytest.raises(ValueError, match="uint8"):
        mask_stats(volume.astype(np.int32), [1, 2], 3, 1)
    with pytest.raises(ValueError, match="1..255"):
        mask_stats(volume, [0, 2], 3, 1)
    with pytest.raises(ValueError, match="contact_radius must be >= 0"):
        mask_stats(volume, [1, 2], 3, -1)


# --- keypoint_jumps ---------------------------------------------------------------------------


def test_keypoint_jumps_flags_the_one_jump_relative_to_the_median_motion() -> None:
    n = 12
    frames = np.arange(5, 5 + n)
    kp = np.zeros((n, 70, 3))
    kp[:, :, 0] = 0.01 * np.arange(n)[:, None]  # 1 cm per frame
    kp[6, :, 0] += 0.1  # one frame 10 cm off
    valid = np.ones(n, bool)
    valid[9] = False  # a gap: the step across it is divided by the 2 frames elapsed
    kp[9] = np.nan
    jumps = keypoint_jumps(frames, valid, kp, n_frames=20)
    assert jumps.dtype == np.float32 and jumps.shape == (20,)
    assert np.isnan(jumps[:6]).all()  # before the track and its first row
    assert jumps[5 + 6] == pytest.approx(11.0, rel=1e-4)  # 11 cm into the bad frame
    assert jumps[5 + 7] == pytest.approx(9.0, rel=1e-4)  # 9 cm back
    assert np.isnan(jumps[5 + 9])
    np.testing.assert_allclose(jumps[[5 + i for i in (1, 2, 3, 4, 5, 8, 10, 11)]], 1.0, rtol=1e-4)
    assert np.isnan(jumps[17:]).all()


def test_keypoint_jumps_is_nan_without_motion_or_rows() -> None:
    still = np.zeros((4, 70, 3))
    assert np.isnan(keypoint_jumps(np.arange(4), np.ones(4, bool), still, 4)).all()
    assert np.isnan(keypoint_jumps(np.arange(4), np.array([1, 0, 0, 0], bool), still + 1, 4)).all()


# --- candidate_frames -------------------------------------------------------------------------


def _stats(**changes: tuple[slice | int, float]) -> MaskStats:
    """A lone person (1000 px, box in the middle) over T frames; ``field=(frames, value)`` edits."""
    fields = {
        "area": np.full(T, 1000, np.int64),
        "box": np.tile(np.array([100, 60, 140, 180], np.float32), (T, 1)),
        "contact": np.zeros(T, np.float32),
        "box_overlap": np.zeros(T, np.float32),
    }
    for name, (where, value) in changes.items():
        fields[name][where] = value
    return MaskStats(**fields)


def _flagged(stats: MaskStats, jumps: np.ndarray | None = None, truncation: bool = False) -> list[int]:
    return np.flatnonzero(candidate_frames(stats, jumps, W, H, CFG, truncation=truncation)).tolist()


def test_a_lone_steady_person_is_never_a_candidate() -> None:
    assert _flagged(_stats()) == []


def test_area_drop_alone_triggers() -> None:
    assert _flagged(_stats(area=(MID, 600))) == [MID]  # 0.60 < area_drop 0.65
    assert _flagged(_stats(area=(MID, 680))) == []  # 0.68: not without something near


def test_contact_alone_triggers_when_the_person_also_lost_area() -> None:
    assert _flagged(_stats(contact=(MID, 0.05), area=(MID, 680))) == [MID]  # 0.68 < iou_threshold
    assert _flagged(_stats(contact=(MID, 0.05))) == []  # touching alone: the one in front
    assert _flagged(_stats(contact=(MID, 0.01), area=(MID, 680))) == []  # below contact_fraction


def test_box_overlap_alone_triggers_when_the_person_also_lost_area() -> None:
    assert _flagged(_stats(box_overlap=(MID, 0.3), area=(MID, 680))) == [MID]
    assert _flagged(_stats(box_overlap=(MID, 0.3))) == []
    assert _flagged(_stats(box_overlap=(MID, 0.1), area=(MID, 680))) == []


def test_keypoint_jump_alone_triggers() -> None:
    jumps = np.ones(T, np.float32)
    jumps[0] = np.nan
    jumps[MID] = 3.0
    jumps[MID + 5] = 2.4
    assert _flagged(_stats(), jumps) == [MID]


def test_truncation_triggers_only_when_asked_and_explains_an_area_drop() -> None:
    cut = _stats(box=(slice(MID, MID + 3), np.array([1, 60, 41, 180])), area=(slice(MID, MID + 3), 500))
    assert _flagged(cut, truncation=True) == [MID, MID + 1, MID + 2]
    assert _flagged(cut) == []  # a person half out of the picture is not occluded
    bottom = _stats(box=(MID, np.array([100, 60, 140, H - 1])))
    assert _flagged(bottom, truncation=True) == [MID]


def test_absent_frames_are_never_candidates() -> None:
    stats = _stats(area=(slice(10, 20), 0), box=(slice(10, 20), np.nan), contact=(slice(10, 20), 0.5))
    jumps = np.full(T, 5.0, np.float32)
    flagged = candidate_frames(stats, jumps, W, H, CFG)
    assert not flagged[10:20].any() and flagged[:10].all()


def test_a_short_dip_is_flagged_below_area_drop_of_the_frames_around_it() -> None:
    area = np.full(T, 1000)
    area[25:36] = 1000 - 60 * (5 - np.abs(np.arange(-5, 6)))  # down to 700 and back over 11 frames
    area[MID] = 600
    assert _flagged(_stats(area=(slice(None), area))) == [MID]


def test_a_lasting_drop_with_nobody_near_becomes_the_new_reference() -> None:
    # 40 frames at 0.6 x (crouching, sitting): longer than the 2 x 12 + 1 frame reference.
    assert _flagged(_stats(area=(slice(10, 50), 600))) == []


def test_a_person_hidden_for_long_by_another_is_measured_against_the_frames_around() -> None:
    stats = _stats(area=(slice(10, 50), 600), contact=(slice(8, 52), 0.1))
    assert _flagged(stats) == list(range(10, 50))


def test_a_person_always_touched_is_measured_against_its_larger_half() -> None:
    stats = _stats(contact=(slice(None), 0.1), area=(slice(20, 40), 500))
    assert _flagged(stats) == list(range(20, 40))


# --- windows ----------------------------------------------------------------------------------


def _flags(n: int, *true: int | range) -> np.ndarray:
    f = np.zeros(n, bool)
    for t in true:
        f[t] = True
    return f


def test_windows_pad_and_clamp() -> None:
    assert windows(_flags(20, 5), pad=2, max_len=25) == [(3, 8)]
    assert windows(_flags(20, 0, 19), pad=2, max_len=25) == [(0, 3), (17, 20)]
    assert windows(_flags(20), pad=2, max_len=25) == []
    assert windows(_flags(5, range(5)), pad=0, max_len=25) == [(0, 5)]


def test_windows_merge_overlapping_and_adjacent_runs() -> None:
    assert windows(_flags(30, 5, 8), pad=2, max_len=25) == [(3, 11)]  # overlapping after padding
    assert windows(_flags(30, 5, 10), pad=2, max_len=25) == [(3, 13)]  # (3, 8) and (8, 13) touch
    assert windows(_flags(30, 5, 11), pad=2, max_len=25) == [(3, 8), (9, 14)]


def test_windows_split_long_runs_into_near_equal_pieces() -> None:
    out = windows(_flags(100, range(10, 40)), pad=2, max_len=25)  # [8, 42): 34 frames
    assert out == [(8, 25), (25, 42)]
    out = windows(_flags(100, range(100)), pad=2, max_len=25)
    assert out == [(0, 25), (25, 50), (50, 75), (75, 100)]
    out = windows(_flags(100, range(0, 51)), pad=0, max_len=25)
    assert out == [(0, 17), (17, 34), (34, 51)]
    assert all(b - a <= 25 for a, b in out)


def test_windows_reject_bad_arguments() -> None:
    with pytest.raises(ValueError, match="max_len >= 1"):
        windows(_flags(5, 1), pad=2, max_len=0)
    with pytest.raises(ValueError, match="pad >= 0"):
        windows(_flags(5, 1), pad=-1, max_len=5)


# --- amodal_from_rgb --------------------------------------------------------------------------


def test_amodal_from_rgb_threshold_is_a_sum_above_600() -> None:
    frames = np.zeros((1, 2, 3, 3), np.uint8)
    frames[0, 0, 0] = (200, 200, 200)  # 600: background
    frames[0, 0, 1] = (201, 200, 200)  # 601: foreground
    frames[0, 0, 2] = (255, 255, 255)  # 765: no uint8 overflow
    frames[0, 1, 2] = (255, 255, 90)  # 600
    out = amodal_from_rgb(frames)
    assert out.dtype == bool and out.shape == (1, 2, 3)
    np.testing.assert_array_equal(out[0], [[False, True, True], [False, False, False]])


def test_amodal_from_rgb_keeps_the_largest_8_connected_component() -> None:
    frames = np.zeros((2, 6, 6, 3), np.uint8)
    white = (255, 255, 255)
    for y, x in [(0, 0), (1, 1), (2, 2)]:  # a diagonal: one 8-connected component of 3
        frames[0, y, x] = white
    frames[0, 4:6, 4] = white  # a separate component of 2
    out = amodal_from_rgb(frames)
    expected = np.zeros((6, 6), bool)
    expected[[0, 1, 2], [0, 1, 2]] = True
    np.testing.assert_array_equal(out[0], expected)
    assert not out[1].any()  # an empty frame stays empty


def test_amodal_from_rgb_rejects_other_layouts() -> None:
    with pytest.raises(ValueError, match=r"uint8\[N, h, w, 3\]"):
        amodal_from_rgb(np.zeros((2, 4, 4), np.uint8))


# --- amodal_verdict ---------------------------------------------------------------------------


def _mask(y0: int, y1: int, x0: int, x1: int, h: int = 100, w: int = 100) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_verdict_occluded_and_visible_by_iou() -> None:
    amodal = _mask(20, 60, 40, 60)  # 40 x 20 box
    occluded, iou, reason = amodal_verdict(_mask(20, 40, 40, 60), amodal, CFG)
    assert (occluded, reason) == (True, "occluded") and iou == pytest.approx(0.5)
    occluded, iou, reason = amodal_verdict(_mask(20, 52, 40, 60), amodal, CFG)
    assert (occluded, reason) == (False, "visible") and iou == pytest.approx(0.8)


def test_verdict_empty_masks() -> None:
    amodal = _mask(20, 60, 40, 60)
    assert amodal_verdict(np.zeros_like(amodal), amodal, CFG) == (False, 0.0, "empty")
    assert amodal_verdict(amodal, np.zeros_like(amodal), CFG) == (False, 0.0, "empty")


def test_verdict_ignores_an_object_entirely_in_the_border_band() -> None:
    modal = _mask(40, 60, 0, 5)  # columns 0..4 = the 5 % band of a 100 px wide image
    occluded, _, reason = amodal_verdict(modal, _mask(30, 70, 0, 20), CFG)
    assert (occluded, reason) == (False, "border")
    assert amodal_verdict(_mask(40, 60, 0, 6), _mask(30, 70, 0, 20), CFG)[2] == "occluded"


def test_verdict_rejects_an_amodal_mask_smaller_than_the_visible_one() -> None:
    assert amodal_verdict(_mask(20, 60, 40, 60), _mask(20, 50, 40, 60), CFG)[:1] == (False,)
    assert amodal_verdict(_mask(20, 60, 40, 60), _mask(20, 50, 40, 60), CFG)[2] == "smaller"


@pytest.mark.parametrize("tall", [True, False])
def test_verdict_rejects_an_amodal_box_spanning_most_of_the_image(tall: bool) -> None:
    # 70 rows or columns of a 100 x 100 image; the release only checked this for object id 1.
    modal = _mask(30, 50, 30, 50)

    def span(n: int) -> np.ndarray:
        return _mask(10, 10 + n, 30, 60) if tall else _mask(30, 60, 10, 10 + n)

    occluded, iou, reason = amodal_verdict(modal, span(70), CFG)
    assert (occluded, reason) == (False, "too_big") and iou == pytest.approx(400 / 2100)
    assert amodal_verdict(modal, span(69), CFG)[::2] == (True, "occluded")


def test_verdict_rejects_a_skinny_amodal_box() -> None:
    modal = _mask(20, 40, 40, 49)
    assert amodal_verdict(modal, _mask(20, 70, 40, 49), CFG)[2] == "skinny"  # 9 / 50 < 0.2
    assert amodal_verdict(modal, _mask(20, 70, 40, 50), CFG)[2] == "occluded"  # 10 / 50


def test_verdict_rejects_masks_of_different_sizes() -> None:
    with pytest.raises(ValueError, match=r"one \[H, W\] size"):
        amodal_verdict(np.zeros((4, 4), bool), np.zeros((4, 5), bool), CFG)


# --- the synthetic clips ----------------------------------------------------------------------


def test_synthetic_clips_are_deterministic_and_consistent() -> None:
    a, b = make_clip("pole", 3, n_frames=30), make_clip("pole", 3, n_frames=30)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.keypoints_3d[1], b.keypoints_3d[1])
    assert not np.array_equal(a.labels, make_clip("pole", 4, n_frames=30).labels)
    for oid, amodal in a.amodal.items():
        assert not ((a.labels == oid) & ~amodal).any()  # visible is part of amodal
        hidden = np.isnan(a.keypoints_3d[oid]).all(axis=(1, 2))
        np.testing.assert_array_equal(hidden, ~(a.labels == oid).any(axis=(1, 2)))
    with pytest.raises(ValueError, match="unknown scenario"):
        make_clip("juggling", 0)


def test_synthetic_scenarios_show_what_they_claim() -> None:
    clips = {name: make_clip(name, 0) for name in SCENARIOS}
    truth = {name: occluded_truth(c) for name, c in clips.items()}
    # Passing behind: only the farther person (id 2) is occluded.
    assert truth["pass behind"][2].any() and not truth["pass behind"][1].any()
    assert truth["overtake"][1].sum() > truth["pass behind"][2].sum()  # a slow overtake lasts
    assert not any(t.any() for t in truth["side by side"].values())
    leave = clips["leave / enter"].labels
    assert (leave[-1] != 1).all() and (leave[0] != 2).all()  # one left, the other came in
    squat = (clips["crouch"].labels == 1).sum(axis=(1, 2))
    assert squat.min() < 0.8 * squat.max() and not truth["crouch"][1].any()
    assert truth["pole"][1].any() and not truth["pole"][2].any()  # behind vs in front of the pole


def test_occluded_truth_is_iou_below_threshold_with_something_visible() -> None:
    clip = make_clip("pass behind", 0)
    oid = 2
    visible = (clip.labels == oid).sum(axis=(1, 2))
    whole = clip.amodal[oid].sum(axis=(1, 2))
    expected = (visible > 0) & (visible / np.maximum(whole, 1) < 0.7)
    np.testing.assert_array_equal(occluded_truth(clip)[oid], expected)
    assert not occluded_truth(dataclasses.replace(clip, labels=np.zeros_like(clip.labels)))[oid].any()
