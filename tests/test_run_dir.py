from __future__ import annotations

import json
import os
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from body4d.config import load_config
from body4d.jobs import Cancelled
from body4d.masks import read_palette_png
from body4d.run_dir import (
    RESERVE,
    RESERVE_BYTES,
    DiskFullError,
    RunDir,
    RunDirError,
    atomic_write_bytes,
    validate_run_id,
)
from body4d.types import BodyTrack, MaskTrack, Segmentation, VideoInfo
from models.frames import ArrayFrames

CFG = load_config()


def _run(tmp_path: Path) -> RunDir:
    return RunDir.create(tmp_path, CFG)


def test_create_layout_and_manifest(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path / "outputs", CFG, input_path=tmp_path / "in.mp4")
    assert re.fullmatch(r"\d{8}_\d{6}_\d{3}_[0-9a-f]{8}", run.run_id)
    m = json.loads((run.root / "manifest.json").read_text())
    assert m["run_id"] == run.run_id
    assert m["input"].endswith("in.mp4")
    assert m["config"]["sam_3d_body"]["batch_size"] == 64
    assert m["versions"]["torch"] and m["versions"]["python"]
    assert m["stages"] == {} and m["artefacts"] == {}


def _video_info(n: int, h: int, w: int) -> VideoInfo:
    return VideoInfo(Path("in.mp4"), Fraction(30000, 1001), n, h, w, "h264")


def test_masks_saved_and_loaded_back(tmp_path: Path) -> None:
    run = _run(tmp_path)
    run.set_video(_video_info(3, 32, 48), _video_info(3, 64, 96))
    frames = np.full((3, 32, 48, 3), 120, np.uint8)
    labels = np.zeros((3, 32, 48), np.uint8)
    labels[:, 4:20, 4:20] = 2
    labels[1, 20:30, 30:40] = 5
    seg = Segmentation(MaskTrack((2, 5), labels), {2: 0, 5: 1}, "prompts")
    run.save_masks(seg, ArrayFrames(frames), Fraction(30000, 1001))
    assert not run.path("images").exists() and not run.path("masks_vis").exists(), "off by default"
    assert np.array_equal(read_palette_png(run.mask_path(1)), labels[1])
    assert run.mask_video_path() == run.root / f"video_mask_{run.run_id}.mp4"
    back = RunDir.open(tmp_path, run.run_id, CFG).load_masks()
    assert back.track.obj_ids == (2, 5) and back.first_frames == {2: 0, 5: 1} and back.mode == "prompts"
    assert np.array_equal(back.track.labels, labels)
    video = run.manifest["video"]
    assert (video["n_frames"], video["width"], video["source_width"], video["fps"]) == (
        3,
        48,
        96,
        "30000/1001",
    )


def test_frame_and_mask_images_by_config_and_a_repair_keeps_only_existing_ones_in_step(
    tmp_path: Path,
) -> None:
    frames = np.full((3, 32, 48, 3), 120, np.uint8)
    labels = np.zeros((3, 32, 48), np.uint8)
    labels[:, 4:20, 4:20] = 2
    fps = Fraction(30)
    for images in (True, False):
        cfg = CFG.replace(**{"outputs.frame_images": images, "outputs.mask_images": images})
        run = RunDir.create(tmp_path, cfg)
        run.set_video(_video_info(3, 32, 48), _video_info(3, 32, 48))
        with run.stage("masks"):
            run.save_masks(
                Segmentation(MaskTrack((2,), labels.copy()), {2: 0}, "prompts"), ArrayFrames(frames), fps
            )
        vis = run.path("masks_vis/00000001.png")
        assert run.image_path(2).is_file() == images and vis.is_file() == images
        before = vis.read_bytes() if images else None
        repaired = labels.copy()
        repaired[1, 20:30, 30:40] = 5
        record = {"target": 5, "new": True, "frames": [1, 1], "changed": {"5": [[1, 1]]}}
        seg = Segmentation(MaskTrack((2, 5), repaired), {2: 0, 5: 1}, "prompts")
        # Reopened with the images on: a repair keeps the run's own folders in step, makes no new ones.
        reopened = RunDir.open(tmp_path, run.run_id, CFG.replace(**{"outputs.mask_images": True}))
        reopened.save_mask_repair(seg, record, ArrayFrames(frames), fps, stale=())
        assert np.array_equal(read_palette_png(reopened.mask_path(1)), repaired[1])
        assert vis.is_file() == images and reopened.image_path(1).is_file() == images
        if images:
            assert vis.read_bytes() != before, "the changed frame's visualisation is rewritten"
        else:
            assert not run.path("masks_vis").exists()
        assert np.array_equal(reopened.load_masks().track.labels, repaired)


def test_stage_records_status_timing_and_extra_fields(tmp_path: Path) -> None:
    run = _run(tmp_path)
    with run.stage("masks") as extra:
        extra["obj_ids"] = [1, 2]
    reopened = RunDir.open(tmp_path, run.run_id, CFG)
    assert reopened.is_done("masks")
    m = reopened.manifest
    assert m["stages"]["masks"]["status"] == "done"
    assert m["stages"]["masks"]["obj_ids"] == [1, 2]
    assert m["stages"]["masks"]["seconds"] >= 0


def test_failed_stage_recorded_and_earlier_outputs_intact(tmp_path: Path) -> None:
    run = _run(tmp_path)
    with run.stage("masks"):
        run.write_json("a.json", {"ok": True})
    with pytest.raises(RuntimeError, match="boom"), run.stage("recover"):
        raise RuntimeError("boom")
    with pytest.raises(Cancelled), run.stage("export"):
        raise Cancelled("user cancelled")
    m = RunDir.open(tmp_path, run.run_id, CFG).manifest
    assert m["stages"]["masks"]["status"] == "done"
    assert m["stages"]["recover"]["status"] == "failed"
    assert m["stages"]["recover"]["error"] == "RuntimeError: boom"
    assert m["stages"]["export"]["status"] == "cancelled"
    assert json.loads((run.root / "a.json").read_text()) == {"ok": True}


def test_clear_removes_a_stage_s_artefacts_only(tmp_path: Path) -> None:
    run = _run(tmp_path)
    run.write_bytes(run.mesh_path(3, 7), b"old person 3")
    run.write_bytes(run.mesh_path(4, 0), b"person 4, gone now")
    run.write_json(RunDir.CAMERA, {"K": 1})
    run.record_artefacts("export", (RunDir.MESHES, RunDir.FOCALS))
    assert run.manifest["artefacts"]["export"] == [RunDir.MESHES]
    run.clear("export", (RunDir.MESHES, RunDir.FOCALS))
    assert not run.path(RunDir.MESHES).exists() and run.path(RunDir.CAMERA).is_file()
    assert "export" not in run.manifest["artefacts"]


def test_tracks_load_only_their_fields(tmp_path: Path) -> None:
    """Extra arrays in a bodies file (e.g. written by another version) are ignored on load."""
    run = _run(tmp_path)
    n = 2
    nan = np.full
    track = BodyTrack(
        obj_id=3,
        frames=np.arange(n),
        valid=np.ones(n, bool),
        filled=np.zeros(n, bool),
        box=nan((n, 4), 1.0, np.float32),
        focal=nan(n, 500.0, np.float32),
        cam_t=nan((n, 3), 2.0, np.float32),
        global_rot=nan((n, 3), 0.1, np.float32),
        body_pose=nan((n, 133), 0.0, np.float32),
        hand_pose=nan((n, 108), 0.0, np.float32),
        shape=nan((n, 45), 0.0, np.float32),
        scale=nan((n, 28), 0.0, np.float32),
        expression=nan((n, 72), 0.0, np.float32),
        keypoints_3d=nan((n, 70, 3), 1.0, np.float32),
        keypoints_2d=nan((n, 70, 2), 5.0, np.float32),
    )
    run.save_tracks(RunDir.BODIES, {3: track})
    with np.load(run.path(RunDir.BODIES)) as data:
        arrays = dict(data)
    run.write_npz(RunDir.BODIES, **arrays, **{"id3/something_new": np.zeros(n)})
    (back,) = run.load_tracks(RunDir.BODIES).values()
    assert all(np.array_equal(getattr(back, k), v) for k, v in track.arrays().items())


def test_scratch_and_part_files_are_removed_when_the_run_is_opened_to_resume(tmp_path: Path) -> None:
    run = _run(tmp_path)
    (run.scratch / "labels_x.npy").write_bytes(b"left by a killed run")
    leftovers = [run.path(".camera.json.a1b2.part"), run.path("mesh_4d_individual/3/.00000001.obj.x9.part")]
    leftovers.append(run.path(".4d_x.mp4.k2.part.mp4"))
    for path in leftovers:
        run.write_bytes(path, b"half")
    kept = run.write_bytes("mesh_4d_individual/3/00000000.obj", b"v 0 0 0")
    RunDir.open(tmp_path, run.run_id, CFG, clean_scratch=False)  # the app reading: nothing removed
    assert all(p.exists() for p in leftovers) and run.path(RunDir.SCRATCH).exists()
    RunDir.open(tmp_path, run.run_id, CFG)
    assert not run.path(RunDir.SCRATCH).exists()
    assert not any(p.exists() for p in leftovers) and kept.read_bytes() == b"v 0 0 0"


def test_a_full_disk_uses_the_reserve_to_record_the_failed_stage(tmp_path: Path) -> None:
    from tests.test_resume_safety import _fill, _mounted_tmpfs

    with _mounted_tmpfs(tmp_path / "disk", "2m") as disk:
        run = RunDir.create(disk, CFG)
        assert run.path(RESERVE).stat().st_size == RESERVE_BYTES
        with pytest.raises(DiskFullError) as caught, run.stage("export"):
            _fill(disk, 0)  # the disk fills up while the stage runs
            run.write_bytes("big.bin", bytes(1_000_000))
        message = str(caught.value)
        assert message.startswith(f"the disk holding {run.root} is full (")
        assert "the write needed 1.0 MB" in message and f"body4d run --resume {run.run_id}" in message
        entry = json.loads(run.path("manifest.json").read_text())["stages"]["export"]
        assert entry["status"] == "failed" and entry["error"] == f"DiskFullError: {message}"
        assert not run.path("big.bin").exists() and not list(run.root.glob(".*.part"))


def test_atomic_write_survives_simulated_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "f.json"
    atomic_write_bytes(target, b"old")

    def crash(*_a, **_k):
        raise OSError("disk died")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk died"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"], "temp file left behind"


@pytest.mark.parametrize(
    "bad", ["../etc", "20261123_213400_123_0a1b2c3d/../x", "x", "", "20261123_213400_123_0A1B2C3D"]
)
def test_run_ids_validated(bad: str, tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="is not a run id"):
        validate_run_id(bad)
    with pytest.raises(RunDirError):
        RunDir.open(tmp_path, bad, CFG)


def test_paths_cannot_escape(tmp_path: Path) -> None:
    run = _run(tmp_path)
    with pytest.raises(RunDirError, match="inside the run folder"):
        run.write_json("../escape.json", {})
    with pytest.raises(RunDirError):
        run.path("/etc/passwd")
    with pytest.raises(RunDirError, match="is not inside the run folder"):
        run.write_bytes(tmp_path / "elsewhere.bin", b"x")


def test_unwritable_output_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RunDirError, match="cannot create a run folder"):
        RunDir.create(blocker / "sub", CFG)


def test_npz_round_trip(tmp_path: Path) -> None:
    run = _run(tmp_path)
    run.write_npz("bodies.npz", a=np.arange(5))
    assert np.array_equal(np.load(run.root / "bodies.npz")["a"], np.arange(5))


def test_invalidate_marks_done_stages_stale(tmp_path: Path) -> None:
    run = _run(tmp_path)
    for name in ("masks", "camera"):
        with run.stage(name):
            pass
    run.invalidate("camera", "recover")
    reopened = RunDir.open(tmp_path, run.run_id, CFG)
    assert reopened.stage_status("camera") == "stale" and not reopened.is_done("camera")
    assert reopened.is_done("masks") and reopened.stage_status("recover") is None


def test_atomic_file_renames_on_success_and_cleans_up_on_error(tmp_path: Path) -> None:
    run = _run(tmp_path)
    with run.atomic_file("out/data.bin") as tmp:
        tmp.write_bytes(b"payload")
        assert not run.path("out/data.bin").exists()
    assert run.path("out/data.bin").read_bytes() == b"payload"
    with pytest.raises(RuntimeError), run.atomic_file("out/other.bin") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("crash")
    assert sorted(p.name for p in run.path("out").iterdir()) == ["data.bin"]


def _rendered(n: int, fail_at: int | None = None):  # noqa: ANN202 - the frames save_render takes
    rng = np.random.default_rng(0)
    for i in range(n):
        if i == fail_at:
            raise RuntimeError("the renderer failed")
        background = rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)
        scene = np.full_like(background, 10 * i)
        yield i, background, scene, ({1: scene} if i % 2 else {})


@pytest.mark.parametrize("queue_depth", [0, 3])
def test_render_videos_encoded_behind_the_renderer(tmp_path: Path, queue_depth: int) -> None:
    """The result videos are the same whether they are encoded in this thread or a writer thread;
    a renderer failing midway leaves no video behind."""
    from body4d.video import open_video

    run = _run(tmp_path)
    n = run.save_render(_rendered(6), Fraction(10), [1], individual=True, jpgs=True, queue_depth=queue_depth)
    assert n == 6
    with open_video(run.result_video_path()) as video:
        means = [float(f.mean()) for f in video]
    assert np.allclose(means, [10 * i for i in range(6)], atol=2)
    with open_video(run.individual_video_path(1)) as video:
        assert len(video) == 6
    assert len(list(run.path(RunDir.RENDERED_INDIVIDUAL).glob("1/*.jpg"))) == 6
    failing = _run(tmp_path / "failing")
    with pytest.raises(RuntimeError, match="the renderer failed"):
        failing.save_render(
            _rendered(6, fail_at=4), Fraction(10), [1], individual=True, jpgs=False, queue_depth=queue_depth
        )
    assert failing.result_video_path() is None and not failing.individual_video_path(1).exists()
