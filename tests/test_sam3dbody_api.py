"""Batched API of the SAM-3D-Body port: shapes, batch invariance, validation, dtypes, geometry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import roma
import torch

from models.sam_3d_body import BodyEstimate, BodyItem, SAM3DBody
from models.sam_3d_body.geometry import euler_to_rotmat, quat_xyzw_to_rotmat, rotmat_to_euler
from tests.conftest_sam3dbody import load_folder

BOXES = np.array([[40.0, 20.0, 200.0, 240.0], [10.0, 10.0, 120.0, 250.0], [100.0, 60.0, 250.0, 200.0]])


def _image(seed: int, h: int = 240, w: int = 300) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("mode", ["body", "full"])
def test_output_shapes_and_units(port: SAM3DBody, mode: str) -> None:
    est = port.predict([BodyItem(_image(0), BOXES[0])], inference_type=mode)[0]
    assert isinstance(est, BodyEstimate)
    shapes = {
        "vertices": (18439, 3),
        "keypoints_3d": (70, 3),
        "keypoints_2d": (70, 2),
        "cam_t": (3,),
        "joint_coords": (127, 3),
        "joint_rotations": (127, 3, 3),
        "global_rot": (3,),
        "body_pose": (133,),
        "hand_pose": (108,),
        "shape": (45,),
        "scale": (28,),
        "expression": (72,),
        "mhr_model_params": (204,),
    }
    for name, shape in shapes.items():
        value = getattr(est, name)
        assert value.shape == shape and value.dtype == np.float32 and np.isfinite(value).all(), name
    assert np.allclose(est.joint_rotations @ est.joint_rotations.transpose(0, 2, 1), np.eye(3), atol=1e-5)
    assert not est.expression.any()
    h, w = 240, 300
    assert est.focal_length == pytest.approx(np.hypot(h, w))  # default intrinsics: f = diagonal
    # keypoints_2d is the pinhole projection of keypoints_3d + cam_t
    p = est.keypoints_3d + est.cam_t
    proj = p[:, :2] / p[:, 2:] * est.focal_length + np.array([w / 2, h / 2])
    assert np.abs(proj - est.keypoints_2d).max() < 1e-2
    if mode == "full":
        assert est.hand_boxes.shape == (2, 4) and est.hand_used.shape == (2,)
    else:
        assert est.hand_boxes is None and est.hand_used is None
    assert port.faces.shape == (36874, 3)


@pytest.mark.parametrize("mode", ["body", "full"])
def test_batch_invariance(port: SAM3DBody, mode: str) -> None:
    """A person's result does not depend on the other items, images, intrinsics or chunking."""
    img_a, img_b = _image(1), _image(2, 200, 260)
    K_b = np.array([[250.0, 0.0, 120.0], [0.0, 260.0, 110.0], [0.0, 0.0, 1.0]])
    mask = np.zeros(img_a.shape[:2], dtype=bool)
    mask[20:200, 40:190] = True
    items = [
        BodyItem(img_a, BOXES[0], mask),
        BodyItem(img_b, BOXES[1] * 0.8, None, K_b),
        BodyItem(img_a, BOXES[2]),
        BodyItem(img_b, BOXES[0] * 0.9, None, K_b),
    ]
    together = port.predict(items, inference_type=mode)
    chunked = port.predict(items, inference_type=mode, batch_size=3)
    for i, item in enumerate(items):
        alone = port.predict([item], inference_type=mode)[0]
        for other in (together[i], chunked[i]):
            for name in ("vertices", "keypoints_2d", "cam_t", "body_pose", "hand_pose"):
                assert np.abs(getattr(alone, name) - getattr(other, name)).max() < 1e-4, (i, name)
    assert together[1].focal_length == pytest.approx(250.0)


def _two_people() -> list[BodyItem]:
    img = _image(3)
    mask = np.zeros(img.shape[:2], dtype=bool)
    mask[20:200, 40:190] = True
    return [BodyItem(img, BOXES[0], mask), BodyItem(img, np.array([-30.0, 100.0, 120.0, 330.0]))]


@pytest.mark.parametrize("mode", ["body", "full"])
def test_crops_prepared_beforehand_give_the_same_estimates(port: SAM3DBody, mode: str) -> None:
    """`prepare` (run ahead in another thread by the recover stage) then `predict(prepared=...)`
    is `predict` alone; crops of other items are refused."""
    items = _two_people()
    direct = port.predict(items, inference_type=mode)
    prepared = port.predict(items, inference_type=mode, prepared=port.prepare(items))
    for a, b in zip(direct, prepared, strict=True):
        assert np.array_equal(a.vertices, b.vertices) and np.array_equal(a.body_pose, b.body_pose)
    with pytest.raises(ValueError, match="prepared crops of 1 items given for 2 items"):
        port.predict(items, prepared=port.prepare(items[:1]))
    with pytest.raises(ValueError, match="batch_size=1"):
        port.predict(items, batch_size=1, prepared=port.prepare(items))


def test_crops_cut_on_the_device_match_opencv(port: SAM3DBody, monkeypatch: pytest.MonkeyPatch) -> None:
    """The batched `grid_sample` crops (used on a GPU; forced here on the CPU) sample the same
    points as OpenCV's: crop pixels within 2/255, masks within 1 of 255, and the estimates agree."""
    from models.sam_3d_body.preprocess import build_crops

    items = _two_people()
    host = port.prepare(items)
    images, specs = host.images, host.specs
    device = build_crops(images, specs, port.crop_size, port.device, port.mask_value, on_device=True)
    assert (device[0] - host.img).abs().max() <= 2 / 255
    assert (device[1] - host.mask).abs().max() <= 1.0 and host.mask.amax() == port.mask_value
    assert torch.equal(device[2], host.has_mask) and torch.equal(device[3].rays, host.crops.rays)
    on_host = {mode: port.predict(items, inference_type=mode) for mode in ("body", "full")}
    monkeypatch.setattr(SAM3DBody, "_crops_on_device", True)  # body and hand crops
    for mode, estimates in on_host.items():
        on_device = port.predict(items, inference_type=mode)
        for a, b in zip(estimates, on_device, strict=True):
            assert np.abs(a.vertices - b.vertices).max() < 1e-2, mode
            assert not np.array_equal(a.vertices, b.vertices), "the device crops were not used"


def test_input_validation(port: SAM3DBody) -> None:
    img = _image(0)
    with pytest.raises(ValueError, match="inference_type"):
        port.predict([BodyItem(img, BOXES[0])], inference_type="hand")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size"):
        port.predict([BodyItem(img, BOXES[0])], batch_size=0)
    with pytest.raises(ValueError, match="item 1: box"):
        port.predict([BodyItem(img, BOXES[0]), BodyItem(img, np.array([50.0, 50.0, 40.0, 80.0]))])
    with pytest.raises(ValueError, match="item 0: image"):
        port.predict([BodyItem(img.astype(np.float32), BOXES[0])])
    with pytest.raises(ValueError, match="item 0: mask shape"):
        port.predict([BodyItem(img, BOXES[0], np.zeros((5, 5), dtype=bool))])
    with pytest.raises(ValueError, match="item 0: K"):
        port.predict([BodyItem(img, BOXES[0], None, np.eye(2))])
    assert port.predict([]) == []


def test_bf16_backbone(tiny_folder: Path, port: SAM3DBody) -> None:
    low = load_folder(tiny_folder, dtype="bf16")
    assert next(low.net.backbone.parameters()).dtype == torch.bfloat16
    assert next(low.net.body.parameters()).dtype == torch.float32
    item = BodyItem(_image(0), BOXES[0])
    a = low.predict([item], inference_type="body")[0]
    b = port.predict([item], inference_type="body")[0]
    assert np.isfinite(a.vertices).all()
    assert np.abs(a.cam_t - b.cam_t).max() < 0.05 * np.abs(b.cam_t).max()


@pytest.mark.parametrize("convention", ["ZYX", "xyz", "XZY", "XYZ", "zyx"])
def test_euler_conversions_match_roma(convention: str) -> None:
    angles = torch.rand(200, 3, dtype=torch.float64) * torch.tensor(
        [6.0, 3.0, 6.0], dtype=torch.float64
    ) - torch.tensor([3.0, 1.5, 3.0], dtype=torch.float64)
    ours = euler_to_rotmat(convention, angles)
    assert torch.allclose(ours, roma.euler_to_rotmat(convention, angles), atol=1e-12)
    assert torch.allclose(
        rotmat_to_euler(convention, ours), roma.rotmat_to_euler(convention, ours), atol=1e-9
    )
    q = roma.random_unitquat(50, dtype=torch.float64)
    assert torch.allclose(quat_xyzw_to_rotmat(q), roma.unitquat_to_rotmat(q), atol=1e-12)


@pytest.mark.parametrize("mode", ["body", "full"])
def test_mesh_from_params_reproduces_estimates(port, mode: str) -> None:
    rng = np.random.default_rng(5)
    image = rng.integers(0, 255, size=(120, 160, 3), dtype=np.uint8)
    items = [
        BodyItem(image, np.array([20.0, 10.0, 90.0, 110.0])),
        BodyItem(image, np.array([80.0, 5.0, 150.0, 115.0])),
    ]
    est = port.predict(items, inference_type=mode)
    verts, kps = port.mesh_from_params(
        *(
            np.stack([getattr(e, f) for e in est])
            for f in ("global_rot", "body_pose", "hand_pose", "shape", "scale", "expression")
        )
    )
    assert verts.shape == (2, 18439, 3) and kps.shape == (2, 70, 3)
    for k, e in enumerate(est):
        assert np.abs(verts[k] - e.vertices).max() < 1e-5
        assert np.abs(kps[k] - e.keypoints_3d).max() < 1e-5
    with pytest.raises(ValueError, match="same number of rows"):
        port.mesh_from_params(
            np.zeros((2, 3)), np.zeros((1, 133)), *(np.zeros((2, d)) for d in (108, 45, 28, 72))
        )
