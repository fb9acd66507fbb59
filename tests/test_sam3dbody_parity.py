"""Parity of the SAM-3D-Body port with Meta's reference on identical tiny random weights (fp32)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from models.sam_3d_body import BodyEstimate, BodyItem, SAM3DBody
from tests.conftest_sam3dbody import build_reference, load_folder, run_reference

ATOL = 1e-4  # the bound on vertices, keypoints and cam_t (metres / pixels)
# Port field -> reference output key, compared with ATOL too (reported in the benchmark notes).
FIELDS = {
    "vertices": "pred_vertices",
    "keypoints_3d": "pred_keypoints_3d",
    "keypoints_2d": "pred_keypoints_2d",
    "cam_t": "pred_cam_t",
    "joint_coords": "pred_joint_coords",
    "joint_rotations": "pred_global_rots",
    "global_rot": "global_rot",
    "body_pose": "body_pose_params",
    "hand_pose": "hand_pose_params",
    "shape": "shape_params",
    "scale": "scale_params",
    "mhr_model_params": "mhr_model_params",
}
BOXES = np.array([[40.0, 20.0, 200.0, 240.0], [10.0, 10.0, 120.0, 250.0], [100.5, 60.25, 250.0, 200.0]])


def _image(seed: int = 0) -> np.ndarray:
    """A smooth random RGB image (256 x 320) so that crops carry structure."""
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 255, (16, 20, 3)).astype(np.float32)
    up = np.kron(low, np.ones((16, 16, 1), dtype=np.float32))
    return np.clip(up + rng.normal(0, 20, up.shape), 0, 255).astype(np.uint8)


def max_diffs(ours: BodyEstimate, ref: dict[str, Any]) -> dict[str, float]:
    """Max |port - reference| per field."""
    out = {f: float(np.abs(getattr(ours, f) - ref[k]).max()) for f, k in FIELDS.items()}
    out["focal_length"] = abs(ours.focal_length - float(ref["focal_length"]))
    if ours.hand_boxes is not None:
        out["hand_boxes"] = float(
            max(
                np.abs(ours.hand_boxes[0] - ref["lhand_bbox"]).max(),
                np.abs(ours.hand_boxes[1] - ref["rhand_bbox"]).max(),
            )
        )
    return out


def _assert_close(ours: list[BodyEstimate], refs: list[dict[str, Any]], skip: tuple[str, ...] = ()) -> None:
    assert len(ours) == len(refs)
    for o, r in zip(ours, refs, strict=True):
        diffs = {k: v for k, v in max_diffs(o, r).items() if k not in skip}
        bad = {k: v for k, v in diffs.items() if not v <= ATOL}
        assert not bad, f"parity broken: {bad}"


@pytest.mark.parametrize("mode", ["body", "full"])
@pytest.mark.parametrize("n_people", [1, 3])
def test_parity_people(port: SAM3DBody, reference: Any, mode: str, n_people: int) -> None:
    img = _image()
    boxes = BOXES[:n_people]
    ours = port.predict([BodyItem(img, b) for b in boxes], inference_type=mode)
    if mode == "full" and n_people == 1:
        # The reference's single-crop "full" path drops/skips failed prompts (batch-dependent,
        # see predictor docstring); the port always uses its multi-crop placeholder path, so the
        # oracle is the reference run on the person twice, first result.
        refs = run_reference(reference, img, np.repeat(boxes, 2, axis=0), mode)[:1]
    else:
        refs = run_reference(reference, img, boxes, mode)
    _assert_close(ours, refs)


@pytest.mark.parametrize("mask_value", [1, 255])
def test_parity_mask_and_intrinsics_body(
    port: SAM3DBody,
    reference: Any,
    tiny_folder: Any,
    mask_value: int,
) -> None:
    """Mask prompts (0/1 as Meta's segmentor paths give them, 0/255 as SAM-Body4D and Meta's
    notebook pass them: the reference feeds either to the network unscaled) and an off-centre
    principal point, body mode."""
    model = port if mask_value == 1 else load_folder(tiny_folder, mask_value=mask_value)
    img = _image(1)
    h, w = img.shape[:2]
    masks = np.zeros((2, h, w), dtype=bool)
    masks[0, 30:230, 50:190] = True
    masks[1, 20:240, 20:110] = True
    K = np.array([[300.0, 0.0, 150.0], [0.0, 300.0, 120.0], [0.0, 0.0, 1.0]])
    ours = model.predict([BodyItem(img, BOXES[i], masks[i], K) for i in range(2)], inference_type="body")
    refs = run_reference(reference, img, BOXES[:2], "body", masks=masks.astype(np.uint8) * mask_value, K=K)
    _assert_close(ours, refs)
    no_mask = model.predict([BodyItem(img, BOXES[0], None, K)], inference_type="body")[0]
    assert np.abs(no_mask.vertices - ours[0].vertices).max() > 1e-3  # the mask prompt matters
    other = load_folder(tiny_folder, mask_value=256 - mask_value)
    other_scale = other.predict([BodyItem(img, BOXES[0], masks[0], K)], inference_type="body")[0]
    assert np.abs(other_scale.vertices - ours[0].vertices).max() > 1e-4  # and so does its scale


def test_reference_full_mode_is_batch_dependent(port: SAM3DBody, reference: Any) -> None:
    """Documents the reference quirk the port removes: alone vs. with others differ there."""
    img = _image()
    alone = run_reference(reference, img, BOXES[:1], "full")[0]
    crowd = run_reference(reference, img, BOXES, "full")[0]
    ref_gap = float(np.abs(alone["pred_vertices"] - crowd["pred_vertices"]).max())
    ours_alone = port.predict([BodyItem(img, BOXES[0])], "full")[0]
    ours_crowd = port.predict([BodyItem(img, b) for b in BOXES], "full")[0]
    assert np.abs(ours_alone.vertices - ours_crowd.vertices).max() < 1e-5
    assert ref_gap > 1e-4  # the port stays below 1e-5 (about 1e-7 in practice)


@pytest.mark.parametrize("n_people", [1, 3])
def test_parity_full_with_accepted_hands(
    hands_folder: Any,
    reference_modules: Any,
    n_people: int,
) -> None:
    """The hand-splice path (accepted hands, prompted second pass, wrist IK) matches too.

    The wrist-angle check is opened on both sides (4 rad > pi); the other three checks pass
    on their own with this checkpoint, so even the reference's single-crop path keeps all
    four prompts and can be compared directly. Joint rotations are not compared: after the
    splice the reference returns the rotations of the *pre-splice* pose (its final MHR call
    does not update them); the port returns those of the final pose, consistent with the
    returned mesh and joints.
    """
    ours_model = load_folder(hands_folder)
    ours_model.max_wrist_angle = 4.0
    ref = build_reference(reference_modules, hands_folder)
    ref.thresh_wrist_angle = 4.0
    img = _image(2)
    boxes = BOXES[:n_people]
    ours = ours_model.predict([BodyItem(img, b) for b in boxes], inference_type="full")
    assert all(o.hand_used is not None and o.hand_used.all() for o in ours)
    _assert_close(ours, run_reference(ref, img, boxes, "full"), skip=("joint_rotations",))
