"""Depth Anything V2 adapter: strict offline loading of the Hub layout, preprocessing, channel quirk, scaling."""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import DepthAnythingForDepthEstimation, DPTImageProcessor

from body4d.testing.tiny_depth import DEPTH_DIR, PREPROCESSOR_FILE, to_legacy_name, write_tiny_depth
from models.depth import (
    CHECKPOINT_FILES,
    CONFIG_FILE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ORIGINAL_CHECKPOINT,
    WEIGHTS_FILE,
    DepthEstimator,
    checkpoint_problem,
    load,
    network_input_size,
    normalise,
)
from models.errors import TINY_MARKER, CheckpointError

# A 64x128 frame (the Diffusion-VAS demo aspect) runs at 518x1036.
FRAME_SIZE = (64, 128)
NET_SIZE = (518, 1036)


@pytest.fixture(scope="module")
def depth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("depth_ckpt")
    write_tiny_depth(root)
    return root


@pytest.fixture(scope="module")
def estimator(depth_root: Path) -> DepthEstimator:
    return load(depth_root / DEPTH_DIR, "cpu", torch.float32, batch_size=2)


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    """Three RGB frames whose channels differ (so a channel swap changes the input)."""
    rng = np.random.default_rng(0)
    out = rng.integers(0, 256, (3, *FRAME_SIZE, 3), dtype=np.uint8)
    out[..., 0] //= 4  # red darker than green and blue everywhere
    return out


class InputRecorder:
    """Forward pre-hook that keeps every ``pixel_values`` the network receives."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.inputs: list[torch.Tensor] = []
        self.handle = model.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        self.inputs.append(kwargs["pixel_values"].clone())

    def __enter__(self) -> InputRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.remove()


def expected_input(frames: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """DA-V2's image2tensor written out: [0, 1], bicubic to ``size``, ImageNet mean/std, channels as given."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).double() / 255
    x = F.interpolate(x, size, mode="bicubic", align_corners=False)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
    return ((x - mean) / std).float()


def copy_folder(depth_root: Path, dst_root: Path) -> Path:
    folder = dst_root / DEPTH_DIR
    shutil.copytree(depth_root / DEPTH_DIR, folder)
    return folder


def edit_weights(folder: Path, edit: Callable[[dict[str, torch.Tensor]], object]) -> None:
    state = load_file(folder / WEIGHTS_FILE)
    edit(state)
    save_file(state, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})


def load_error(folder: Path) -> str:
    with pytest.raises(CheckpointError) as info:
        load(folder, "cpu", torch.float32)
    assert info.value.path == folder
    return str(info.value)


def setup_command(root: Path) -> str:
    return f"python scripts/setup.py --ckpt-root {root} --with-completion"


# ---- the tiny folder and strict loading ---------------------------------------------------------------


def test_tiny_folder_has_the_hub_layout_with_legacy_key_names(depth_root: Path) -> None:
    folder = depth_root / DEPTH_DIR
    assert {p.name for p in folder.iterdir()} == {*CHECKPOINT_FILES, PREPROCESSOR_FILE, TINY_MARKER}
    assert checkpoint_problem(folder) is None
    config = json.loads((folder / CONFIG_FILE).read_text())
    assert config["model_type"] == "depth_anything"
    assert config["backbone_config"]["model_type"] == "dinov2"
    assert config["depth_estimation_type"] == "relative"
    state = load_file(folder / WEIGHTS_FILE)
    assert all(v.dtype == torch.float32 for v in state.values())
    for key in (
        "backbone.encoder.layer.0.attention.attention.query.weight",
        "backbone.encoder.layer.3.attention.attention.value.bias",
        "backbone.encoder.layer.1.attention.output.dense.weight",
        "neck.reassemble_stage.layers.3.resize.weight",
        "neck.fusion_stage.layers.0.residual_layer1.convolution1.weight",
        "head.conv3.bias",
    ):
        assert key in state
    assert not [k for k in state if "_proj." in k]  # no transformers 5 names in the file


def test_transformers_renames_the_legacy_keys_and_load_is_strict(depth_root: Path, estimator) -> None:
    folder = depth_root / DEPTH_DIR
    _, info = DepthAnythingForDepthEstimation.from_pretrained(
        folder, local_files_only=True, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    loaded = estimator.model.state_dict()
    assert "backbone.encoder.layer.0.attention.q_proj.weight" in loaded
    assert "backbone.encoder.layer.1.attention.o_proj.bias" in loaded
    # every tensor of the file arrived, unchanged, under its renamed key
    in_file = load_file(folder / WEIGHTS_FILE)
    as_file = {to_legacy_name(k): v for k, v in loaded.items()}
    assert as_file.keys() == in_file.keys()
    assert all(torch.equal(as_file[k], in_file[k]) for k in in_file)
    assert not estimator.model.training


def test_load_never_opens_a_connection(depth_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    depth = load(depth_root / DEPTH_DIR, "cpu", torch.float32)
    assert isinstance(depth, DepthEstimator)


def test_weights_in_the_requested_dtype(depth_root: Path, estimator, frames: np.ndarray) -> None:
    half = load(depth_root / DEPTH_DIR, "cpu", torch.bfloat16)
    assert {p.dtype for p in half.model.parameters()} == {torch.bfloat16}
    out = half.predict(frames[:1], FRAME_SIZE, legacy_bgr=False)
    assert out.dtype == np.float32 and np.isfinite(out).all()
    reference = estimator.predict(frames[:1], FRAME_SIZE, legacy_bgr=False)
    assert np.corrcoef(out.ravel(), reference.ravel())[0, 1] > 0.99  # same network, bf16 rounding


def test_missing_folder_or_files_name_what_and_the_fix(depth_root: Path, tmp_path: Path) -> None:
    absent = tmp_path / "nowhere" / DEPTH_DIR
    msg = load_error(absent)
    assert "not found" in msg and str(absent) in msg and setup_command(absent.parent) in msg
    assert "completion.model_path_depth" in msg

    folder = copy_folder(depth_root, tmp_path)
    (folder / WEIGHTS_FILE).unlink()
    (folder / CONFIG_FILE).write_text("")  # an interrupted copy counts as missing
    msg = load_error(folder)
    assert f"incomplete, missing {CONFIG_FILE}, {WEIGHTS_FILE}" in msg and setup_command(tmp_path) in msg

    (folder / ORIGINAL_CHECKPOINT).write_bytes(b"original repository weights")
    assert "transformers cannot load" in str(checkpoint_problem(folder))
    assert checkpoint_problem(folder / ORIGINAL_CHECKPOINT) == "not a folder"


def test_extra_tensor_is_refused_with_its_name(depth_root: Path, tmp_path: Path) -> None:
    folder = copy_folder(depth_root, tmp_path)
    edit_weights(folder, lambda sd: sd.update({"head.conv4.weight": torch.zeros(1, 1, 1, 1)}))
    msg = load_error(folder)
    assert "unexpected keys [head.conv4.weight]" in msg and "missing" not in msg
    assert f"delete {folder} and download it again with `{setup_command(tmp_path)}`" in msg


def test_missing_tensors_are_refused_under_transformers_names(depth_root: Path, tmp_path: Path) -> None:
    folder = copy_folder(depth_root, tmp_path)
    removed = ("backbone.encoder.layer.1.attention.attention.query.weight", "head.conv3.bias")
    edit_weights(folder, lambda sd: [sd.pop(k) for k in removed])
    msg = load_error(folder)
    # the legacy query weight is reported under the name transformers renamed it to
    assert "missing keys [backbone.encoder.layer.1.attention.q_proj.weight, head.conv3.bias]" in msg
    assert "unexpected" not in msg and setup_command(tmp_path) in msg


def test_wrong_shape_is_refused_with_both_shapes(depth_root: Path, tmp_path: Path) -> None:
    folder = copy_folder(depth_root, tmp_path)
    edit_weights(folder, lambda sd: sd.update({"head.conv3.bias": torch.zeros(3)}))
    assert "mismatched shapes [head.conv3.bias (file [3], model [1])]" in load_error(folder)


def test_corrupt_weights_or_foreign_config_are_refused(depth_root: Path, tmp_path: Path) -> None:
    folder = copy_folder(depth_root, tmp_path / "corrupt")
    (folder / WEIGHTS_FILE).write_bytes(b"\x00" * 64)
    assert "cannot load Depth Anything V2" in load_error(folder)

    folder = copy_folder(depth_root, tmp_path / "metric")
    config = json.loads((folder / CONFIG_FILE).read_text())
    (folder / CONFIG_FILE).write_text(json.dumps({**config, "depth_estimation_type": "metric"}))
    assert "is a 'metric' depth model" in load_error(folder)

    (folder / CONFIG_FILE).write_text(json.dumps({**config, "model_type": "dpt"}))
    assert "holds a 'dpt' checkpoint" in load_error(folder)

    (folder / CONFIG_FILE).write_text("{not json")
    assert "not a valid JSON config" in load_error(folder)


# ---- preprocessing and prediction -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "net"),
    [
        ((64, 128), (518, 1036)),  # small frames are scaled up
        ((256, 512), (518, 1036)),
        ((512, 1024), (518, 1036)),
        ((480, 854), (518, 924)),
        ((1080, 1920), (518, 924)),  # large frames are scaled down
        ((1920, 1080), (924, 518)),  # portrait
        ((480, 640), (518, 686)),  # 690.7 -> nearest multiple of 14, as the original rounds
        ((518, 518), (518, 518)),
    ],
)
def test_network_input_size(frame: tuple[int, int], net: tuple[int, int]) -> None:
    assert network_input_size(*frame) == net


def test_hub_processor_agrees_only_for_large_frames(depth_root: Path) -> None:
    processor = DPTImageProcessor.from_pretrained(depth_root / DEPTH_DIR, local_files_only=True)
    assert tuple(processor.image_mean) == IMAGENET_MEAN and tuple(processor.image_std) == IMAGENET_STD

    def processor_size(height: int, width: int) -> tuple[int, ...]:
        image = np.zeros((height, width, 3), dtype=np.uint8)
        return tuple(processor(images=image, return_tensors="pt").pixel_values.shape[-2:])

    assert processor_size(512, 1024) == network_input_size(512, 1024)
    assert processor_size(480, 640) == network_input_size(480, 640)
    # the reason the adapter resizes itself: the processor keeps a small frame small
    assert processor_size(64, 128) == (252, 518) != network_input_size(64, 128)


def test_predict_shape_dtype_and_batched_network_input(estimator: DepthEstimator, frames: np.ndarray) -> None:
    with InputRecorder(estimator.model) as recorder:
        depth = estimator.predict(frames, (48, 96), legacy_bgr=False)
    assert depth.shape == (3, 48, 96) and depth.dtype == np.float32
    assert np.isfinite(depth).all() and depth.min() >= 0  # ReLU'd relative inverse depth
    assert depth.std() > 0
    assert [tuple(x.shape) for x in recorder.inputs] == [(2, 3, *NET_SIZE), (1, 3, *NET_SIZE)]

    portrait = np.ascontiguousarray(frames[:1].transpose(0, 2, 1, 3))  # 128 x 64
    with InputRecorder(estimator.model) as recorder:
        depth = estimator.predict(portrait, (128, 64), legacy_bgr=False)
    assert depth.shape == (1, 128, 64)
    assert tuple(recorder.inputs[0].shape[-2:]) == NET_SIZE[::-1]


def test_predict_equals_direct_forward(estimator: DepthEstimator, frames: np.ndarray) -> None:
    with InputRecorder(estimator.model) as recorder:
        depth = estimator.predict(frames, FRAME_SIZE, legacy_bgr=False)
    fed_to_network = torch.cat(recorder.inputs)
    # float32 vs float64 bicubic: a few 1e-5 on values of order 2
    torch.testing.assert_close(fed_to_network, expected_input(frames, NET_SIZE), atol=1e-4, rtol=0)
    with torch.no_grad():  # all three frames in one pass (the adapter ran batches of 2 and 1)
        direct = estimator.model(pixel_values=fed_to_network).predicted_depth
    direct = F.interpolate(direct[:, None], FRAME_SIZE, mode="bilinear", align_corners=True)[:, 0]
    np.testing.assert_allclose(depth, direct.numpy(), rtol=0, atol=1e-4 * float(direct.abs().max()))


def test_legacy_bgr_feeds_the_network_reversed_channels(
    estimator: DepthEstimator, frames: np.ndarray
) -> None:
    frames = frames[:2]
    rgb = estimator.predict(frames, FRAME_SIZE, legacy_bgr=False)
    with InputRecorder(estimator.model) as recorder:
        legacy = estimator.predict(frames, FRAME_SIZE, legacy_bgr=True)
    # channel 0 of the network input is the blue channel, normalised with ImageNet's red statistics
    bgr_input = expected_input(frames[..., ::-1], NET_SIZE)
    torch.testing.assert_close(recorder.inputs[0], bgr_input, atol=1e-4, rtol=0)
    assert np.abs(rgb - legacy).max() > 0.05 * rgb.max()
    flipped = estimator.predict(frames[..., ::-1], FRAME_SIZE, legacy_bgr=False)
    np.testing.assert_allclose(legacy, flipped, rtol=0, atol=1e-6)


def test_predict_rejects_bad_input(estimator: DepthEstimator, frames: np.ndarray) -> None:
    for bad in (frames.astype(np.float32), frames[0], frames[:0], frames[..., :1]):
        with pytest.raises(ValueError, match=r"uint8\[N, H, W, 3\]"):
            estimator.predict(bad, FRAME_SIZE, legacy_bgr=False)
    for size in ((0, 64), (64,), (64.0, 128)):
        with pytest.raises(ValueError, match="size"):
            estimator.predict(frames, size, legacy_bgr=False)  # type: ignore[arg-type]


# ---- Diffusion-VAS scaling -----------------------------------------------------------------------------


def test_normalise_uses_one_range_over_all_frames() -> None:
    depth = np.stack([np.full((2, 3), 1.0), np.full((2, 3), 3.0)]).astype(np.float32)
    depth[0, 0, 0] = 0.0
    depth[1, 1, 2] = 4.0
    out = normalise(depth)
    assert out.dtype == np.float32 and out.shape == depth.shape
    assert out.min() == -1.0 and out.max() == 1.0
    assert out[0, 0, 0] == -1.0 and out[1, 1, 2] == 1.0
    np.testing.assert_allclose(out[0, 0, 1], -0.5)  # 1.0 on the range [0, 4]
    np.testing.assert_allclose(out[1, 0, 0], 0.5)  # 3.0: frame 1 is not rescaled on its own
    assert (np.argsort(out.ravel(), kind="stable") == np.argsort(depth.ravel(), kind="stable")).all()


def test_normalise_constant_and_invalid_input() -> None:
    out = normalise(np.full((2, 4, 4), 0.7, dtype=np.float32))
    assert out.dtype == np.float32 and not np.isnan(out).any() and (out == 0).all()
    with pytest.raises(ValueError, match="no depth"):
        normalise(np.zeros((0, 4, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="non-finite"):
        normalise(np.array([0.0, np.nan, 1.0]))
