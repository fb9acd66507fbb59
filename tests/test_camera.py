"""Camera intrinsics: the MoGe-2 adapter (tiny real model) and the once-per-video stage."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from body4d.config import CameraConfig, Config
from body4d.stages.camera import estimate_camera, fallback_intrinsics, select_frames
from body4d.testing.tiny_moge import MOGE_DIR
from models.errors import TINY_MARKER, CheckpointError
from models.moge import CHECKPOINT_FILE, MoGe, checkpoint_problem, load

# Upstream MoGe's infer() opens a float32 autocast region for post-processing; on CPU torch warns
# that float32 autocast is unsupported and disables it (harmless).
pytestmark = pytest.mark.filterwarnings("ignore:In CPU autocast, but the target dtype is not supported")


class FrameList:
    """Minimal video: ``len`` and ``frame(i)`` over a list of arrays, recording which frames were read."""

    def __init__(self, frames: list[np.ndarray]) -> None:
        self.frames = frames
        self.read: list[int] = []

    def __len__(self) -> int:
        return len(self.frames)

    def frame(self, index: int) -> np.ndarray:
        self.read.append(index)
        return self.frames[index]


class StubEstimator:
    """Returns a prescribed K per call, in order (tests the stage's selection and median only)."""

    def __init__(self, ks: list[np.ndarray]) -> None:
        self.ks = list(ks)
        self.calls = 0

    def estimate_intrinsics(self, image: np.ndarray) -> np.ndarray:
        k = self.ks[self.calls]
        self.calls += 1
        return k


def _k(f: float, cx: float, cy: float, fy: float | None = None) -> np.ndarray:
    return np.array([[f, 0, cx], [0, f if fy is None else fy, cy], [0, 0, 1]], dtype=np.float64)


def _video(n: int, height: int = 48, width: int = 64) -> FrameList:
    rng = np.random.default_rng(n)
    return FrameList([rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(n)])


def _cfg(num_frames: int = 5) -> CameraConfig:
    return Config().replace(**{"camera.num_frames": num_frames}).camera


def load_moge(path: Path) -> MoGe:
    """The adapter's `load` on one checkpoint file (resolution level 9), CPU, fp32."""
    return load(CameraConfig(ckpt_path=str(path)), "cpu", torch.float32)


@pytest.fixture(scope="module")
def tiny_root(tiny_ckpt_root: Path) -> Path:
    return tiny_ckpt_root


@pytest.fixture(scope="module")
def tiny_moge(tiny_root: Path) -> MoGe:
    return load_moge(tiny_root / MOGE_DIR / CHECKPOINT_FILE)


# ---- adapter (real MoGeModel, tiny weights) ---------------------------------------------------------


def test_tiny_checkpoint_layout(tiny_root: Path) -> None:
    folder = tiny_root / MOGE_DIR
    assert {p.name for p in folder.iterdir()} == {CHECKPOINT_FILE, TINY_MARKER}  # model.pt: all MoGe reads
    assert checkpoint_problem(folder / CHECKPOINT_FILE) is None
    ckpt = torch.load(folder / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    assert set(ckpt) == {"model_config", "model"}
    assert ckpt["model_config"]["encoder"]["backbone"] == "dinov2_vits14"
    assert all(isinstance(v, torch.Tensor) for v in ckpt["model"].values())
    # the default config path points at exactly this layout under ckpt_root
    assert CameraConfig().ckpt_path == f"${{paths.ckpt_root}}/{MOGE_DIR}/{CHECKPOINT_FILE}"


@pytest.mark.parametrize(("height", "width"), [(120, 160), (96, 200)])
def test_adapter_intrinsics_in_pixels(tiny_moge: MoGe, height: int, width: int) -> None:
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    k = tiny_moge.estimate_intrinsics(image)
    assert k.shape == (3, 3) and k.dtype == np.float64
    assert np.isfinite(k).all()
    assert k[0, 0] > 0 and k[0, 0] == pytest.approx(k[1, 1], rel=1e-5)
    # the tiny model's point map is a pinhole with focal = half the image diagonal (see tiny_moge)
    assert k[0, 0] == pytest.approx(0.5 * math.hypot(width, height), rel=1e-3)
    assert (k[0, 2], k[1, 2]) == pytest.approx((width / 2, height / 2))
    assert 0 < k[0, 2] < width and 0 < k[1, 2] < height
    np.testing.assert_array_equal(k[2], [0, 0, 1])
    assert k[0, 1] == 0 and k[1, 0] == 0


def test_adapter_rejects_bad_image(tiny_moge: MoGe) -> None:
    with pytest.raises(ValueError, match="uint8"):
        tiny_moge.estimate_intrinsics(np.zeros((32, 32, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"uint8\[H, W, 3\]"):
        tiny_moge.estimate_intrinsics(np.zeros((32, 32), dtype=np.uint8))


def test_stage_with_tiny_model(tiny_moge: MoGe) -> None:
    video = _video(7, height=60, width=80)
    intr = estimate_camera(video, tiny_moge, _cfg(num_frames=3))
    assert intr.source == "moge"
    assert (intr.width, intr.height) == (80, 60)
    assert intr.focal == pytest.approx(50.0, rel=1e-3)  # half of the 100 px diagonal
    assert intr.K[0, 0] == intr.K[1, 1]
    assert intr.principal_point == pytest.approx((40.0, 30.0))


def _rewrite(src: Path, dst_root: Path, edit) -> Path:
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    edit(ckpt["model"])
    dst = dst_root / MOGE_DIR / CHECKPOINT_FILE
    dst.parent.mkdir(parents=True)
    torch.save(ckpt, dst)
    return dst


def test_strict_load_missing_key(tiny_root: Path, tmp_path: Path) -> None:
    removed = "points_head.output_blocks.4.weight"
    path = _rewrite(tiny_root / MOGE_DIR / CHECKPOINT_FILE, tmp_path, lambda sd: sd.pop(removed))
    with pytest.raises(CheckpointError) as info:
        load_moge(path)
    msg = str(info.value)
    assert "missing keys" in msg and removed in msg and "unexpected" not in msg
    assert str(path) in msg and f"python scripts/setup.py --ckpt-root {tmp_path}" in msg


def test_strict_load_unexpected_key(tiny_root: Path, tmp_path: Path) -> None:
    extra = "points_head.extra_layer.weight"
    path = _rewrite(
        tiny_root / MOGE_DIR / CHECKPOINT_FILE, tmp_path, lambda sd: sd.update({extra: torch.zeros(2)})
    )
    with pytest.raises(CheckpointError) as info:
        load_moge(path)
    msg = str(info.value)
    assert "unexpected keys" in msg and extra in msg and "missing" not in msg
    assert str(path) in msg and "python scripts/setup.py --ckpt-root" in msg


def test_shape_mismatch_and_bad_layout(tiny_root: Path, tmp_path: Path) -> None:
    key = "mask_head.output_blocks.4.bias"
    path = _rewrite(
        tiny_root / MOGE_DIR / CHECKPOINT_FILE, tmp_path / "a", lambda sd: sd.update({key: torch.zeros(5)})
    )
    with pytest.raises(CheckpointError, match="do not fit"):
        load_moge(path)
    bad = tmp_path / "b" / "model.pt"
    bad.parent.mkdir()
    torch.save({"state_dict": {}}, bad)
    with pytest.raises(CheckpointError, match="model_config"):
        load_moge(bad)


def test_strict_loader_builds_what_upstream_from_pretrained_builds(tiny_root: Path, tiny_moge: MoGe) -> None:
    from moge.model.v2 import MoGeModel

    upstream = MoGeModel.from_pretrained(tiny_root / MOGE_DIR / CHECKPOINT_FILE).state_dict()
    ours = tiny_moge.model.state_dict()
    assert upstream.keys() == ours.keys()
    assert all(torch.equal(upstream[k], ours[k]) for k in ours)


def test_missing_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / MOGE_DIR / CHECKPOINT_FILE
    with pytest.raises(CheckpointError, match="not found") as info:
        load_moge(path)
    assert str(path) in str(info.value)
    assert f"python scripts/setup.py --ckpt-root {tmp_path}" in str(info.value)


def test_empty_file_or_folder_is_not_a_checkpoint(tmp_path: Path) -> None:
    folder = tmp_path / MOGE_DIR
    (folder / ".cache" / "huggingface").mkdir(parents=True)
    with pytest.raises(CheckpointError, match=f"a folder, not the {CHECKPOINT_FILE} file"):
        load_moge(folder)
    (folder / CHECKPOINT_FILE).touch()  # an interrupted copy
    with pytest.raises(CheckpointError, match="empty file") as info:
        load_moge(folder / CHECKPOINT_FILE)
    assert f"python scripts/setup.py --ckpt-root {tmp_path}" in str(info.value)


# ---- stage logic (stub estimator) -------------------------------------------------------------------


def test_select_frames_evenly_spread() -> None:
    assert select_frames(100, 5) == [10, 30, 50, 70, 90]
    assert select_frames(10, 5) == [1, 3, 5, 7, 9]
    assert select_frames(11, 1) == [5]
    assert select_frames(3, 5) == [0, 1, 2]
    assert select_frames(5, 5) == [0, 1, 2, 3, 4]
    assert select_frames(1, 5) == [0]
    with pytest.raises(ValueError, match="no frames"):
        select_frames(0, 5)
    with pytest.raises(ValueError, match="num_frames"):
        select_frames(10, 0)


def test_stage_reads_selected_frames_only() -> None:
    video = _video(40)
    stub = StubEstimator([_k(100.0, 32.0, 24.0)] * 5)
    estimate_camera(video, stub, _cfg(num_frames=5))
    assert sorted(set(video.read)) == [4, 12, 20, 28, 36]
    assert stub.calls == 5


def test_stage_fewer_frames_than_requested() -> None:
    video = _video(2)
    stub = StubEstimator([_k(100.0, 32.0, 24.0), _k(300.0, 30.0, 20.0)])
    intr = estimate_camera(video, stub, _cfg(num_frames=5))
    assert stub.calls == 2 and sorted(set(video.read)) == [0, 1]
    assert intr.focal == pytest.approx(200.0)  # median of two = their mean
    assert intr.principal_point == pytest.approx((31.0, 22.0))


def test_stage_median_is_robust() -> None:
    ks = [
        _k(500.0, 32.0, 24.0),
        _k(9000.0, 60.0, 2.0),
        _k(510.0, 33.0, 25.0),
        _k(490.0, 31.0, 23.0),
        _k(1.0, 0.0, 50.0),
    ]
    intr = estimate_camera(_video(50), StubEstimator(ks), _cfg(num_frames=5))
    assert intr.source == "moge"
    assert intr.focal == pytest.approx(500.0)
    assert intr.K[1, 1] == intr.K[0, 0]
    assert intr.principal_point == pytest.approx((32.0, 24.0))
    np.testing.assert_array_equal(intr.K[2], [0, 0, 1])


def test_stage_square_pixels_geometric_mean() -> None:
    intr = estimate_camera(_video(1), StubEstimator([_k(400.0, 32.0, 24.0, fy=900.0)]), _cfg(num_frames=1))
    assert intr.K[0, 0] == intr.K[1, 1] == pytest.approx(600.0)


def test_stage_drops_unusable_estimates() -> None:
    ks = [_k(np.nan, 32.0, 24.0), _k(-5.0, 32.0, 24.0), _k(250.0, 30.0, 20.0)]
    intr = estimate_camera(_video(3), StubEstimator(ks), _cfg(num_frames=3))
    assert intr.focal == pytest.approx(250.0) and intr.source == "moge"
    # nothing usable -> default
    intr = estimate_camera(_video(2), StubEstimator([_k(np.inf, 1, 1), _k(0.0, 1, 1)]), _cfg(num_frames=2))
    assert intr.source == "default"


def test_stage_fallback_exact() -> None:
    video = _video(4, height=48, width=64)
    intr = estimate_camera(video, None, _cfg())
    assert intr.source == "default"
    np.testing.assert_array_equal(intr.K, [[80.0, 0, 32.0], [0, 80.0, 24.0], [0, 0, 1]])  # hypot(64, 48) = 80
    assert (intr.width, intr.height) == (64, 48)
    assert fallback_intrinsics(64, 48).K.tolist() == intr.K.tolist()


def test_stage_bad_video() -> None:
    with pytest.raises(ValueError, match="no frames"):
        estimate_camera(FrameList([]), None, _cfg())
    with pytest.raises(ValueError, match="uint8"):
        estimate_camera(FrameList([np.zeros((8, 8, 3), dtype=np.float32)]), None, _cfg())
    frames = [np.zeros((8, 8, 3), np.uint8), np.zeros((8, 10, 3), np.uint8)]
    with pytest.raises(ValueError, match="same size"):
        estimate_camera(FrameList(frames), StubEstimator([_k(10.0, 4, 4)] * 2), _cfg(num_frames=2))
