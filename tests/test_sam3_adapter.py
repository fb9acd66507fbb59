"""models.sam3 on a tiny random checkpoint written in the real facebook/sam3 layout."""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from body4d.config import Sam3Config, load_config
from body4d.testing.tiny_sam3 import HUB_FILES
from body4d.types import Click
from models.errors import TINY_MARKER, CheckpointError
from models.frames import ArrayFrames, PromptError
from models.sam3 import (
    META_CHECKPOINT,
    SNAPSHOT_FILES,
    FramePreprocessor,
    Sam3Models,
    check_checkpoint,
)

T, H, W = 30, 72, 96


def _section(folder: Path) -> Sam3Config:
    """The default sam3 section reading the snapshot ``folder``."""
    return replace(load_config().sam3, ckpt_path=str(folder))


# One grey level after the processors' normalisation (rescale 1/255, std 0.5): the most the CPU's
# fixed-point uint8 resize of torchvision can differ from the float32 resize it runs on a GPU,
# which is what FramePreprocessor runs everywhere (float32 rounding adds < 1e-6).
ONE_GREY_LEVEL = (1 / 255) / 0.5 + 1e-6


def rect_video(n: int = T) -> np.ndarray:
    """Grey frames with a red box moving right and a static blue box: ``uint8[n, H, W, 3]``."""
    frames = np.full((n, H, W, 3), 128, np.uint8)
    for t in range(n):
        frames[t, 10:40, 5 + t : 30 + t] = (220, 40, 40)
        frames[t, 40:70, 60:90] = (40, 80, 230)
    return frames


def test_tiny_writer_writes_the_hub_file_set(sam3_ckpt_root: Path) -> None:
    folder = sam3_ckpt_root / "sam3"
    assert {p.name for p in folder.iterdir()} == set(HUB_FILES) | {TINY_MARKER}
    assert set(SNAPSHOT_FILES) < set(HUB_FILES) and META_CHECKPOINT not in HUB_FILES
    assert json.loads((folder / "config.json").read_text())["model_type"] == "sam3_video"
    processor_config = json.loads((folder / "processor_config.json").read_text())
    # the image and video processors are nested in it, as transformers 5 saves them
    assert {"image_processor", "video_processor"} <= processor_config.keys()
    assert (folder / TINY_MARKER).stat().st_size == 0
    assert check_checkpoint(folder) == folder


def _transformers_loads(folder: Path) -> Iterator[tuple[str, Any]]:
    """Load what body4d uses straight through transformers, cheapest first; yield what could differ.

    The configs come first: without config.json transformers 5.23 silently builds a default
    (full-size) config, and the models would then be built at full size only to fail.
    """
    from transformers import (
        Sam3Config,
        Sam3Model,
        Sam3Processor,
        Sam3TrackerVideoConfig,
        Sam3TrackerVideoModel,
        Sam3TrackerVideoProcessor,
    )

    kwargs = {"local_files_only": True}
    frame = rect_video(1)[0]
    yield "tracker config", Sam3TrackerVideoConfig.from_pretrained(folder, **kwargs).to_dict()
    yield "detector config", Sam3Config.from_pretrained(folder, **kwargs).to_dict()
    tracker_processor = Sam3TrackerVideoProcessor.from_pretrained(folder, **kwargs)
    yield (
        "video",
        tracker_processor.video_processor(videos=[[frame]], return_tensors="pt").pixel_values_videos,
    )
    yield "target size", tracker_processor.target_size
    detector_processor = Sam3Processor.from_pretrained(folder, **kwargs)
    yield "image", detector_processor(images=frame, return_tensors="pt").pixel_values
    text = detector_processor(text="a person on a bike", return_tensors="pt")
    yield "tokens", (text["input_ids"], text["attention_mask"])
    tokenizer = detector_processor.tokenizer
    yield "tokenizer", (type(tokenizer).__name__, tokenizer.model_max_length, len(tokenizer))
    yield "tracker", Sam3TrackerVideoModel.from_pretrained(folder, **kwargs).state_dict()
    yield "detector", Sam3Model.from_pretrained(folder, **kwargs).state_dict()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, torch.Tensor):
        return a.shape == b.shape and torch.equal(a, b)
    return a == b


def _first_difference(folder: Path, reference: dict[str, Any]) -> str | None:
    """The first loaded object that differs from ``reference`` (or fails to load), None if all match."""
    loads = _transformers_loads(folder)
    while True:
        try:
            key, value = next(loads)
        except StopIteration:
            return None
        except (OSError, ValueError, RuntimeError) as exc:  # what transformers raises on missing files
            return f"loading fails: {type(exc).__name__}"
        if not _same(value, reference[key]):
            return key


@pytest.fixture(scope="module")
def full_snapshot_load(sam3_ckpt_root: Path) -> dict[str, Any]:
    return dict(_transformers_loads(sam3_ckpt_root / "sam3"))


def _copy(src: Path, dst: Path, names: list[str]) -> Path:
    dst.mkdir(parents=True)
    for name in names:
        shutil.copy(src / name, dst / name)
    return dst


def test_required_files_suffice_and_the_other_hub_files_are_not_needed(
    sam3_ckpt_root: Path, tmp_path: Path, full_snapshot_load: dict[str, Any]
) -> None:
    minimal = _copy(sam3_ckpt_root / "sam3", tmp_path / "sam3", list(SNAPSHOT_FILES))
    assert check_checkpoint(minimal) == minimal
    assert _first_difference(minimal, full_snapshot_load) is None


@pytest.mark.parametrize("name", list(SNAPSHOT_FILES))
def test_each_required_file_is_needed_and_named_when_absent(
    name: str, sam3_ckpt_root: Path, tmp_path: Path, full_snapshot_load: dict[str, Any]
) -> None:
    folder = _copy(sam3_ckpt_root / "sam3", tmp_path / "sam3", [n for n in SNAPSHOT_FILES if n != name])
    assert _first_difference(folder, full_snapshot_load) is not None, (
        f"transformers builds the same objects without {name}: it must not be required"
    )
    with pytest.raises(CheckpointError) as err:
        check_checkpoint(folder)
    message = str(err.value)
    assert f"missing {name}" in message and str(folder) in message
    assert f"python scripts/setup.py --ckpt-root {tmp_path}" in message


def test_every_missing_file_is_named_in_one_message(tmp_path: Path) -> None:
    debris = tmp_path / "sam3" / ".cache" / "huggingface" / "download"
    debris.mkdir(parents=True)
    (debris / "model.safetensors.incomplete").write_bytes(b"partial")
    (tmp_path / "sam3" / "config.json").touch()  # 0 bytes: an interrupted copy
    with pytest.raises(CheckpointError, match="incomplete, missing") as err:
        check_checkpoint(tmp_path / "sam3")
    message = str(err.value)
    assert all(name in message for name in SNAPSHOT_FILES)
    assert f"python scripts/setup.py --ckpt-root {tmp_path}" in message


def test_meta_checkpoint_alone_is_refused_with_the_reason(tmp_path: Path) -> None:
    folder = tmp_path / "sam3"
    folder.mkdir()
    (folder / META_CHECKPOINT).write_bytes(b"\x80\x02 Meta's pickled state dict")
    with pytest.raises(CheckpointError) as err:
        Sam3Models.load(_section(folder), "cpu", torch.float32)
    message = str(err.value)
    assert "sam3.pt there is Meta's own checkpoint format, which transformers cannot load" in message
    assert all(name in message for name in SNAPSHOT_FILES)
    assert f"python scripts/setup.py --ckpt-root {tmp_path}" in message


def test_snapshot_without_sam3_pt_loads_and_extra_files_are_ignored(
    sam3_ckpt_root: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "sam3"
    shutil.copytree(sam3_ckpt_root / "sam3", folder)  # what setup downloads: everything but sam3.pt
    assert not (folder / META_CHECKPOINT).exists()
    assert Sam3Models.load(_section(folder), "cpu", torch.float32, with_detector=False).tracker is not None
    (folder / META_CHECKPOINT).write_bytes(b"not read")
    (folder / "README.md").write_text("model card")
    (folder / ".cache" / "huggingface").mkdir(parents=True)
    (folder / ".complete").write_text("ok")
    assert Sam3Models.load(_section(folder), "cpu", torch.float32, with_detector=False).tracker is not None


def test_one_vit_copy_shared_by_tracker_and_detector(models: Sam3Models) -> None:
    assert models.tracker.vision_encoder.backbone is models.detector.vision_encoder.backbone


def test_missing_folder_names_path_and_setup_command(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "sam3"
    with pytest.raises(CheckpointError, match="not found") as err:
        Sam3Models.load(_section(missing), "cpu", torch.float32)
    assert str(missing) in str(err.value)
    assert f"python scripts/setup.py --ckpt-root {tmp_path / 'nowhere'}" in str(err.value)


def test_a_different_model_folder_is_refused(sam3_ckpt_root: Path, tmp_path: Path) -> None:
    other = tmp_path / "sam3"
    shutil.copytree(sam3_ckpt_root / "sam3", other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "model_type": "sam2_video"}))
    with pytest.raises(CheckpointError, match="'sam2_video' checkpoint, not a facebook/sam3 snapshot"):
        check_checkpoint(other)


def test_weights_missing_from_the_file_are_refused(sam3_ckpt_root: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "sam3"
    shutil.copytree(sam3_ckpt_root / "sam3", broken)
    weights = load_file(broken / "model.safetensors")
    kept = {
        k: v for k, v in weights.items() if ".mask_decoder." not in k or not k.startswith("tracker_model.")
    }
    assert len(kept) < len(weights)
    save_file(kept, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="do not match the model.*mask_decoder"):
        Sam3Models.load(_section(broken), "cpu", torch.float32, with_detector=False)


def test_unreadable_weights_name_the_path_and_the_fix(sam3_ckpt_root: Path, tmp_path: Path) -> None:
    broken = tmp_path / "sam3"
    shutil.copytree(sam3_ckpt_root / "sam3", broken)
    (broken / "model.safetensors").write_bytes(b"\xff" * 64)  # garbage, e.g. a failed download
    with pytest.raises(CheckpointError, match=r"cannot load the SAM-3 .*sam3.*scripts/setup.py"):
        Sam3Models.load(_section(broken), "cpu", torch.float32, with_detector=False)


def test_click_gives_a_boolean_mask_at_original_resolution(models: Sam3Models) -> None:
    session = models.open_session(ArrayFrames(rect_video()))
    mask = session.add_points(1, 4, [Click(4, 20, 25, True)])
    assert mask.dtype == bool and mask.shape == (H, W)
    assert mask.any()
    assert session.obj_ids == [1]
    assert session.prompt_frames(1) == [4]


def test_clicks_on_any_frame_several_targets_remove_and_clear(models: Sam3Models) -> None:
    session = models.open_session(ArrayFrames(rect_video()))
    session.add_points(1, 0, [Click(0, 15, 20, True)])
    session.add_points(2, 12, [Click(12, 70, 50, True), Click(12, 5, 5, False)])
    session.add_points(3, 29, [Click(29, 80, 60, True)])
    assert session.obj_ids == [1, 2, 3]
    assert session.last_masks is not None and session.last_masks.frame == 29
    assert set(session.last_masks.masks) == {1, 2, 3}  # other targets' masks on the clicked frame
    assert set(session.track(5).masks) == {1, 2, 3}

    session.remove_object(2)
    assert session.obj_ids == [1, 3]
    assert session.first_prompt_frame(3) == 29
    frame_masks = session.track(6)
    assert set(frame_masks.masks) == {1, 3}
    assert all(m.shape == (H, W) for m in frame_masks.masks.values())

    session.clear()
    assert session.obj_ids == []
    with pytest.raises(PromptError, match="no targets to track"):
        session.track(0)


def test_negative_refinement_of_an_existing_target_is_allowed(models: Sam3Models) -> None:
    session = models.open_session(ArrayFrames(rect_video()))
    session.add_points(1, 0, [Click(0, 15, 20, True)])
    mask = session.add_points(1, 10, [Click(10, 80, 60, False)])
    assert mask.shape == (H, W)
    assert session.prompt_frames(1) == [0, 10]


@pytest.mark.parametrize(
    ("obj_id", "frame", "clicks", "message"),
    [
        (1, 0, [Click(0, W, 10, True)], "outside the 96x72 frame"),
        (1, 0, [Click(0, 10, -1, True)], "outside the 96x72 frame"),
        (1, 0, [Click(0, 10, 10, False)], "only negative clicks"),
        (1, T, [Click(T, 10, 10, True)], "outside the video"),
        (1, 0, [Click(3, 10, 10, True)], "is on frame 3, not on frame 0"),
        (0, 0, [Click(0, 10, 10, True)], "from 1 to 255"),
        (256, 0, [Click(0, 10, 10, True)], "from 1 to 255"),
        (1, 0, [], "no clicks"),
    ],
)
def test_bad_clicks_are_refused_with_a_reason(
    models: Sam3Models, obj_id: int, frame: int, clicks: list[Click], message: str
) -> None:
    session = models.open_session(ArrayFrames(rect_video()))
    with pytest.raises(PromptError, match=message):
        session.add_points(obj_id, frame, clicks)
    assert session.obj_ids == []


def test_unknown_object_id_is_refused(models: Sam3Models) -> None:
    session = models.open_session(ArrayFrames(rect_video()))
    session.add_points(1, 0, [Click(0, 15, 20, True)])
    with pytest.raises(PromptError, match="unknown object id 7: the session has objects 1"):
        session.remove_object(7)


def test_on_demand_frames_match_the_stock_session_and_only_the_lru_is_held(models: Sam3Models) -> None:
    frames = rect_video(6)
    stock = models.tracker_processor.init_video_session(video=list(frames), inference_device="cpu")
    session = models.open_session(ArrayFrames(frames), replace(models.settings, frame_cache=2))
    lazy = session._state.processed_frames
    assert len(lazy) == 6
    for i in (0, 3, 5, 1):
        assert lazy[i].device == models.device
        assert (lazy[i].cpu() - stock.processed_frames[i]).abs().max() <= ONE_GREY_LEVEL
    assert lazy.nbytes() == 2 * stock.processed_frames[0].nelement() * 4  # only the LRU is held


def _frames_of_every_kind() -> list[np.ndarray]:
    """Up- and downscaling, the model's own size, and noise (the worst case for rounding)."""
    rng = np.random.default_rng(0)
    return [
        rect_video(1)[0],
        rng.integers(0, 256, (300, 400, 3), dtype=np.uint8),
        rng.integers(0, 256, (112, 112, 3), dtype=np.uint8),
        rng.integers(0, 256, (37, 50, 3), dtype=np.uint8),
    ]


def test_frames_are_preprocessed_on_the_model_device_like_the_processors(models: Sam3Models) -> None:
    for frame in _frames_of_every_kind():
        video = models.tracker_processor.video_processor(videos=[[frame]], return_tensors="pt")
        image = models.detector_processor.image_processor(images=frame, return_tensors="pt")
        for ours, theirs in (
            (models.tracker_frames(frame), video.pixel_values_videos[0, 0]),
            (models.detector_frames(frame), image.pixel_values[0]),
        ):
            assert ours.device == models.device and ours.dtype == torch.float32
            assert ours.shape == theirs.shape == (3, 112, 112)
            assert (ours.cpu() - theirs).abs().max() <= ONE_GREY_LEVEL


def test_device_preprocessing_is_the_processors_gpu_path_exactly(
    models: Sam3Models, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With torchvision's CPU-only uint8 kernel switched off, the processors run what they run on a GPU."""
    from torchvision.transforms.v2.functional import _geometry

    monkeypatch.setattr(_geometry, "_do_native_uint8_resize_on_cpu", lambda interpolation: False)
    for frame in _frames_of_every_kind():
        video = models.tracker_processor.video_processor(videos=[[frame]], return_tensors="pt")
        image = models.detector_processor.image_processor(images=frame, return_tensors="pt")
        assert torch.equal(models.tracker_frames(frame), video.pixel_values_videos[0, 0])
        assert torch.equal(models.detector_frames(frame), image.pixel_values[0])


def test_preprocessing_follows_the_device_it_is_given(models: Sam3Models) -> None:
    # Tensors on "meta" carry no data: any step done elsewhere (e.g. on the CPU) would fail to mix.
    meta = FramePreprocessor(models.tracker_processor.video_processor, torch.device("meta"))
    pixels = meta(rect_video(1)[0])
    assert pixels.device.type == "meta" and pixels.shape == (3, 112, 112)


def test_a_processor_config_we_do_not_reproduce_is_refused(models: Sam3Models) -> None:
    bicubic = copy.deepcopy(models.tracker_processor.video_processor)
    bicubic.resample = 3
    with pytest.raises(CheckpointError, match="processor_config.json asks for .*resample 3"):
        FramePreprocessor(bicubic, models.device)


def test_trimming_is_lossless_and_bounds_session_memory(models: Sam3Models) -> None:
    frames = ArrayFrames(rect_video())
    results, memories = [], []
    for keep in (0, models.lossless_cache_frames):
        session = models.open_session(frames, replace(models.settings, max_cached_frames=keep))
        session.add_points(1, 0, [Click(0, 15, 20, True)])
        session.add_points(2, 0, [Click(0, 70, 50, True)])
        masks = [fm.masks for fm in session.propagate(0, T)]
        results.append(masks)
        memories.append(session.memory())
    untrimmed, trimmed = results
    for a, b in zip(untrimmed, trimmed, strict=True):
        assert all(np.array_equal(a[k], b[k]) for k in (1, 2))
    assert memories[0].n_output_frames == T
    assert memories[1].n_output_frames == models.lossless_cache_frames + 2  # window + current + prompt
    assert memories[1].outputs < memories[0].outputs


def test_biased_tiny_detector_fires_above_threshold(models: Sam3Models) -> None:
    frame = rect_video(1)[0]
    found = models.detect(frame)  # the section's "person" prompt, threshold 0.5
    assert len(found) >= 1
    assert found.masks.shape == (len(found), H, W) and found.masks.dtype == bool
    assert np.all(found.scores > 0.5) and np.all(np.diff(found.scores) <= 0)
    assert found.boxes.shape == (len(found), 4)
    strict = Sam3Models(
        models.tracker,
        models.tracker_processor,
        models.detector,
        models.detector_processor,
        models.device,
        models.dtype,
        replace(models.settings, detection_threshold=0.99999),
    )
    assert len(strict.detect(frame)) == 0
