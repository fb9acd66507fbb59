"""models.sam3 on a tiny random checkpoint written in the real facebook/sam3 layout."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from body4d.testing.tiny_sam3 import TINY_MARKER
from body4d.types import Click
from models.sam3 import ArrayFrames, PromptError, Sam3CheckpointError, Sam3Models, check_checkpoint

T, H, W = 30, 72, 96


def rect_video(n: int = T) -> np.ndarray:
    """Grey frames with a red box moving right and a static blue box: ``uint8[n, H, W, 3]``."""
    frames = np.full((n, H, W, 3), 128, np.uint8)
    for t in range(n):
        frames[t, 10:40, 5 + t : 30 + t] = (220, 40, 40)
        frames[t, 40:70, 60:90] = (40, 80, 230)
    return frames


def test_tiny_checkpoint_has_the_real_layout(sam3_ckpt_root: Path) -> None:
    folder = sam3_ckpt_root / "sam3"
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "sam3_video"
    for name in ("model.safetensors", "processor_config.json", "tokenizer.json", TINY_MARKER):
        assert (folder / name).is_file(), name
    assert (folder / TINY_MARKER).stat().st_size == 0
    assert check_checkpoint(folder) == folder


def test_one_vit_copy_shared_by_tracker_and_detector(models: Sam3Models) -> None:
    assert models.tracker.vision_encoder.backbone is models.detector.vision_encoder.backbone


def test_missing_folder_names_path_and_setup_command(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "sam3"
    with pytest.raises(Sam3CheckpointError, match="does not exist") as err:
        Sam3Models.load(missing)
    assert str(missing) in str(err.value)
    assert "python scripts/setup.py --ckpt-root DIR" in str(err.value)


def test_incomplete_folder_lists_missing_files(sam3_ckpt_root: Path, tmp_path: Path) -> None:
    broken = tmp_path / "sam3"
    shutil.copytree(sam3_ckpt_root / "sam3", broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(Sam3CheckpointError, match="incomplete.*model.safetensors") as err:
        Sam3Models.load(broken)
    assert "scripts/setup.py" in str(err.value)


def test_a_different_model_folder_is_refused(sam3_ckpt_root: Path, tmp_path: Path) -> None:
    other = tmp_path / "sam3"
    shutil.copytree(sam3_ckpt_root / "sam3", other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "model_type": "sam2_video"}))
    with pytest.raises(Sam3CheckpointError, match="'sam2_video' checkpoint, not a facebook/sam3 snapshot"):
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
    with pytest.raises(Sam3CheckpointError, match="do not match the model.*mask_decoder"):
        Sam3Models.load(broken, with_detector=False)


def test_unreadable_weights_name_the_path_and_the_fix(sam3_ckpt_root: Path, tmp_path: Path) -> None:
    broken = tmp_path / "sam3"
    shutil.copytree(sam3_ckpt_root / "sam3", broken)
    (broken / "model.safetensors").write_bytes(b"\xff" * 64)  # garbage, e.g. a failed download
    with pytest.raises(Sam3CheckpointError, match=r"cannot load the SAM-3 .*sam3.*scripts/setup.py"):
        Sam3Models.load(broken, with_detector=False)


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


def test_on_demand_frames_equal_the_stock_preprocessing(models: Sam3Models) -> None:
    frames = rect_video(6)
    stock = models.tracker_processor.init_video_session(video=list(frames), inference_device="cpu")
    session = models.open_session(ArrayFrames(frames), frame_cache=2)
    lazy = session._state.processed_frames
    assert len(lazy) == 6
    for i in (0, 3, 5, 1):
        assert torch.equal(lazy[i], stock.processed_frames[i])
    assert lazy.nbytes() == 2 * stock.processed_frames[0].nelement() * 4  # only the LRU is held


def test_trimming_is_lossless_and_bounds_session_memory(models: Sam3Models) -> None:
    frames = ArrayFrames(rect_video())
    results, memories = [], []
    for keep in (0, models.lossless_cache_frames):
        session = models.open_session(frames, max_cached_frames=keep)
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
    found = models.detect(frame, prompt="person", threshold=0.5)
    assert len(found) >= 1
    assert found.masks.shape == (len(found), H, W) and found.masks.dtype == bool
    assert np.all(found.scores > 0.5) and np.all(np.diff(found.scores) <= 0)
    assert found.boxes.shape == (len(found), 4)
    assert len(models.detect(frame, prompt="person", threshold=0.99999)) == 0
