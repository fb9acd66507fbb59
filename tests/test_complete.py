"""Occlusion completion end to end on tiny real models: only the hidden person's window is sampled
and completed, the second recovery pass fills exactly those person-frames, and the work is counted."""

from __future__ import annotations

import json
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from body4d.config import CompletionConfig, load_config
from body4d.masks import encode_palette_png, read_palette_png
from body4d.run_dir import RunDir
from body4d.stages.complete import Window, estimate, original_spans, with_context, working_size
from body4d.stages.occlusion import mask_stats
from body4d.testing.tiny_vas import AMODAL_DIR
from body4d.video import encode_video

T, H, W = 30, 128, 256
FPS = Fraction(10)
# Person 1 stands still; person 2 steps in front of its left half on frames 8-22 (15 frames);
# person 3 stands alone on the right. Nobody touches the image border.
HIDDEN, OCCLUDER, ALONE = 1, 2, 3
SPAN = range(8, 23)
BOXES = {HIDDEN: (70, 20, 110, 116), OCCLUDER: (60, 14, 92, 120), ALONE: (190, 24, 226, 112)}
COLOURS = {HIDDEN: (200, 60, 60), OCCLUDER: (60, 200, 60), ALONE: (60, 60, 200)}
# The tests' prior: the masks only (the keypoint rule is covered by tests/test_occlusion.py; the
# tiny body model's random keypoints would flag random frames here).
MASKS_ONLY = ["completion.keypoint_jump=1e9"]


@pytest.fixture(scope="module")
def hidden_scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("hidden")
    masks_dir = root / "masks"
    masks_dir.mkdir()
    frames = []
    for t in range(T):
        frame = np.full((H, W, 3), 180, np.uint8)
        labels = np.zeros((H, W), np.uint8)
        order = (HIDDEN, ALONE, OCCLUDER) if t in SPAN else (HIDDEN, ALONE)  # nearest last
        for obj_id in order:
            x0, y0, x1, y1 = BOXES[obj_id]
            frame[y0:y1, x0:x1] = COLOURS[obj_id]
            labels[y0:y1, x0:x1] = obj_id
        frames.append(frame)
        (masks_dir / f"{t:05d}.png").write_bytes(encode_palette_png(labels))
    return encode_video(frames, root / "hidden.mp4", FPS), masks_dir


@pytest.fixture(scope="module")
def white_amodal_root(tiny_ckpt_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny amodal folder with its VAE decoder's last layers set so that every decoded frame is
    white except a 1-pixel frame: an amodal mask covering the picture but not touching its border
    (random weights give no usable mask). The decoder's output normalisation makes the input of
    conv_out a constant silu(1); conv_out sums its 3x3 neighbourhood, which is smaller at the
    zero-padded border, and the temporal output conv passes the frame through."""
    folder = tmp_path_factory.mktemp("rigged") / AMODAL_DIR
    shutil.copytree(tiny_ckpt_root / AMODAL_DIR, folder)
    weights = folder / "vae" / "diffusion_pytorch_model.safetensors"
    state = load_file(weights)
    dtype = state["decoder.conv_out.weight"].dtype
    state["decoder.conv_norm_out.weight"] = torch.zeros_like(state["decoder.conv_norm_out.weight"])
    state["decoder.conv_norm_out.bias"] = torch.ones_like(state["decoder.conv_norm_out.bias"])
    state["decoder.conv_out.weight"] = torch.full_like(state["decoder.conv_out.weight"], 0.01)
    state["decoder.conv_out.bias"] = torch.full((3,), -1.0, dtype=dtype)
    time_out = torch.zeros_like(state["decoder.time_conv_out.weight"])
    for c in range(3):
        time_out[c, c, 1, 0, 0] = 1.0
    state["decoder.time_conv_out.weight"] = time_out
    state["decoder.time_conv_out.bias"] = torch.zeros(3, dtype=dtype)
    save_file(state, weights)
    return folder


def _config(ckpt_root: Path, amodal: Path, *extra: str):  # noqa: ANN202
    return load_config(
        overrides=[
            f"paths.ckpt_root={ckpt_root}",
            "runtime.device=cpu",
            "completion.enable=true",
            f"completion.model_path_mask={amodal}",
            "completion.detection_size=64",
            "completion.completion_size=64",
            "completion.num_inference_steps=2",
            "completion.max_box_fraction=1.0",
            *MASKS_ONLY,
            *extra,
        ]
    )


def _run(video: Path, masks_dir: Path, cfg, tmp_path: Path) -> RunDir:  # noqa: ANN001
    from body4d.driver import load_models, reconstruct
    from body4d.video import open_video

    models = load_models(cfg, sam3=False, detector=False)
    run = RunDir.create(tmp_path, cfg, input_path=video)
    with open_video(video) as v:
        reconstruct(v, run, cfg, models, masks_dir=masks_dir)
    return run


def test_only_the_hidden_persons_window_is_completed(
    hidden_scene, tiny_ckpt_root, white_amodal_root, tmp_path
):
    video, masks_dir = hidden_scene
    cfg = _config(tiny_ckpt_root, white_amodal_root)
    run = _run(video, masks_dir, cfg, tmp_path)
    report = json.loads(run.path(RunDir.COMPLETION_REPORT).read_text())["report"]
    assert run.manifest["stages"]["complete"]["memory_plan"] == "resident"  # on a CPU nothing moves
    people = report["people"]

    # The prior flags the 15 hidden frames; padded by 2 that is one window of 19 frames.
    assert people[str(HIDDEN)]["amodal_windows"] == [[SPAN.start - 2, SPAN.stop + 2]]
    assert people[str(OCCLUDER)]["amodal_windows"] == [] and people[str(ALONE)]["amodal_windows"] == []
    completed = people[str(HIDDEN)]["occluded_frames"]
    assert completed == list(range(SPAN.start - 2, SPAN.stop + 2))
    assert people[str(OCCLUDER)]["occluded_frames"] == [] and people[str(ALONE)]["occluded_frames"] == []

    # Files: one completed image and amodal mask per completed frame, global frame names.
    images = sorted(p.name for p in (run.path(RunDir.COMPLETION) / str(HIDDEN) / "images").iterdir())
    assert images == [f"{i:08d}.jpg" for i in completed]
    assert sorted(p.name for p in run.path(RunDir.COMPLETION).iterdir()) == [str(HIDDEN)]
    mask = read_palette_png(run.completion_mask_path(HIDDEN, SPAN.start))
    assert mask.shape == (H, W) and set(np.unique(mask)) == {0, HIDDEN}
    modal = read_palette_png(masks_dir / f"{SPAN.start:05d}.png") == HIDDEN
    assert (mask == HIDDEN)[modal].all() and (mask == HIDDEN).sum() > 2 * modal.sum()

    # Work: 19 frames sampled (>= min_frames 16) x 2 steps x 2 guidance branches, per pass.
    assert report["amodal"] == {"windows": 1, "frames": 19, "sampled_frames": 19, "unet_evaluations": 76}
    assert report["completion"]["unet_evaluations"] == report["completion"]["sampled_frames"] * 2 * 2
    assert report["depth_frames"] == 19 and report["person_frames_completed"] == 19
    stages = run.manifest["stages"]
    assert (
        stages["complete"]["unet_evaluations"]
        == report["unet_evaluations"]
        == 76 + report["completion"]["unet_evaluations"]
    )
    assert stages["complete"]["person_frames_completed"] == 19
    assert stages["refine"]["person_frames_recovered"] == 19

    # The second recovery pass replaced exactly those rows, and the track has no gap there.
    raw = run.load_tracks(RunDir.BODIES_RAW)
    refined = run.load_tracks(RunDir.BODIES_COMPLETED)
    for obj_id in (OCCLUDER, ALONE):
        np.testing.assert_array_equal(raw[obj_id].cam_t, refined[obj_id].cam_t)
    rows = np.isin(refined[HIDDEN].frames, completed)
    assert refined[HIDDEN].valid[rows].all()
    changed = np.abs(refined[HIDDEN].body_pose - raw[HIDDEN].body_pose).max(axis=1) > 0
    np.testing.assert_array_equal(changed, rows)
    smoothed = run.load_tracks(RunDir.BODIES)[HIDDEN]
    assert (smoothed.valid | smoothed.filled)[np.isin(smoothed.frames, SPAN)].all()


def test_all_mode_is_the_original_schedule(hidden_scene, tiny_ckpt_root, white_amodal_root, tmp_path):
    """mode all: every person over the whole clip (one 64-frame batch here), completion from each
    batch's first to last occluded frame."""
    video, masks_dir = hidden_scene
    cfg = _config(tiny_ckpt_root, white_amodal_root, "completion.mode=all")
    run = _run(video, masks_dir, cfg, tmp_path)
    report = run.load_completion().report
    present = {HIDDEN: T, OCCLUDER: T, ALONE: T}  # one window over all 30 frames for each person
    assert report["amodal"]["windows"] == 3
    assert report["amodal"]["unet_evaluations"] == sum(present.values()) * 2 * 2
    assert {k: v["amodal_windows"] for k, v in report["people"].items()} == {
        str(HIDDEN): [[0, T]],
        str(OCCLUDER): [[0, T]],
        str(ALONE): [[0, T]],
    }
    # The white amodal mask makes everyone "occluded" where present: the occluder on its 15 frames.
    assert report["people"][str(OCCLUDER)]["occluded_frames"] == list(SPAN)
    assert report["people"][str(OCCLUDER)]["completion_windows"] == [[SPAN.start - 2, SPAN.stop + 1]]


def test_disabled_completion_changes_nothing(hidden_scene, tiny_ckpt_root, tmp_path):
    video, masks_dir = hidden_scene
    cfg = load_config(overrides=[f"paths.ckpt_root={tiny_ckpt_root}", "runtime.device=cpu"])
    run = _run(video, masks_dir, cfg, tmp_path)
    stages = run.manifest["stages"]
    assert stages["complete"]["enabled"] is False and stages["complete"]["unet_evaluations"] == 0
    assert not run.path(RunDir.COMPLETION).exists()
    raw, refined = run.load_tracks(RunDir.BODIES_RAW), run.load_tracks(RunDir.BODIES_COMPLETED)
    for obj_id, track in raw.items():
        np.testing.assert_array_equal(track.body_pose, refined[obj_id].body_pose)


def test_estimate_before_the_run_counts_the_candidate_windows(hidden_scene):
    _, masks_dir = hidden_scene
    labels = [read_palette_png(masks_dir / f"{t:05d}.png") for t in range(T)]
    section = CompletionConfig(num_inference_steps=2, max_box_fraction=1.0, enable=True)
    stats = mask_stats(labels, [HIDDEN, OCCLUDER, ALONE], T, section.contact_radius)
    work = estimate(stats, T, W, H, section)
    assert work == {
        "windows": 1,
        "candidate_frames": 19,
        "amodal_unet_evaluations": 76,
        "max_completion_unet_evaluations": 76,
    }


@pytest.mark.parametrize(
    ("height", "width", "short", "expected"),
    [
        (576, 768, 512, (512, 704)),
        (1080, 1920, 512, (512, 896)),
        (1920, 1080, 256, (448, 256)),
        (100, 100, 64, (64, 64)),
    ],
)
def test_working_size_keeps_the_aspect_in_multiples_of_64(height, width, short, expected):
    assert working_size(height, width, short) == expected


def test_context_widens_short_windows_inside_the_video():
    assert with_context(1, 10, 14, 16, 100) == Window(1, 10, 14, 4, 20)
    assert with_context(1, 0, 4, 16, 100) == Window(1, 0, 4, 0, 16)
    assert with_context(1, 95, 100, 16, 100) == Window(1, 95, 100, 84, 100)
    assert with_context(1, 2, 6, 16, 10) == Window(1, 2, 6, 0, 10)  # a short video: all of it
    assert with_context(1, 10, 40, 16, 100).sampled == 30


def test_original_spans_ignore_max_occ_len():
    occluded = np.zeros(130, dtype=bool)
    occluded[[5, 50, 70]] = True
    # [first - 2, last + 2) per batch, whatever the length; the batch's last frame never included.
    assert original_spans(occluded, [(0, 64), (64, 128)], pad=2) == [(3, 52), (68, 72)]
    occluded[127] = True
    assert original_spans(occluded, [(64, 128)], pad=2) == [(68, 127)]


def test_the_app_says_before_4d_generation_whether_completion_runs_and_its_work(hidden_scene, tmp_path):
    from body4d.driver import PipelineModels, reconstruct
    from body4d.ui.runs import completion_estimate
    from body4d.video import open_video

    video, masks_dir = hidden_scene
    off = load_config(overrides=["runtime.device=cpu"])
    run = RunDir.create(tmp_path, off, input_path=video)
    with open_video(video) as v:
        reconstruct(v, run, off, PipelineModels(), masks_dir=masks_dir, stop_after="masks")
    assert completion_estimate(off, run) == (
        "Occlusion completion is off (completion.enable: false): hidden frames are interpolated."
    )
    on = off.replace(**{"completion.enable": True, "completion.max_box_fraction": 1.0})
    assert completion_estimate(on, run) == (
        "Occlusion completion is on (candidates): 1 window(s), 19 person-frames to check, about 950 UNet "
        "frame-evaluations for the amodal masks and up to 950 more to complete the hidden ones."
    )


def test_resuming_with_completion_switched_on_runs_it_and_keeps_the_rest(
    hidden_scene, tiny_ckpt_root, white_amodal_root, tmp_path
):
    from body4d.driver import load_models, reconstruct
    from body4d.video import open_video

    video, masks_dir = hidden_scene
    off = load_config(overrides=[f"paths.ckpt_root={tiny_ckpt_root}", "runtime.device=cpu"])
    run = _run(video, masks_dir, off, tmp_path)
    before = run.manifest["stages"]
    on = _config(tiny_ckpt_root, white_amodal_root)
    with open_video(video) as v:
        result = reconstruct(v, run, on, load_models(on, sam3=False, detector=False), masks_dir=masks_dir)
    after = run.manifest["stages"]
    for name in ("masks", "camera", "recover"):  # their settings did not change: not run again
        assert after[name]["started"] == before[name]["started"], name
    for name in ("complete", "refine", "smooth", "export", "render", "bundle"):
        assert after[name]["started"] > before[name]["started"], name
    assert after["complete"]["enabled"] is True and after["complete"]["person_frames_completed"] == 19
    assert after["complete"]["settings"] != before["complete"]["settings"]
    assert result.done[-1] == "bundle"
    completed = json.loads((run.root / "people" / str(HIDDEN) / f"{HIDDEN}.json").read_text())["completed"]
    assert completed == list(range(SPAN.start - 2, SPAN.stop + 2))
