from __future__ import annotations

import json
import os
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from body4d.config import load_config
from body4d.masks import read_palette_png
from body4d.run_dir import RunDir, RunDirError, StageCancelled, atomic_write_bytes, validate_run_id


def test_create_layout_and_manifest(tmp_path: Path) -> None:
    cfg = load_config()
    run = RunDir.create(tmp_path / "outputs", input_path=tmp_path / "in.mp4", config=cfg)
    assert re.fullmatch(r"\d{8}_\d{6}_\d{3}_[0-9a-f]{8}", run.run_id)
    m = json.loads((run.root / "manifest.json").read_text())
    assert m["run_id"] == run.run_id
    assert m["input"].endswith("in.mp4")
    assert m["config"]["sam_3d_body"]["batch_size"] == 64
    assert m["versions"]["torch"] and m["versions"]["python"]
    assert m["stages"] == {} and m["artefacts"] == {}


def test_frames_masks_and_video(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path)
    frame = np.full((32, 48, 3), 120, np.uint8)
    labels = np.zeros((32, 48), np.uint8)
    labels[4:20, 4:20] = 2
    run.save_frame(0, frame)
    run.save_labels(0, labels, frame=frame)
    assert (run.root / "images" / "00000000.jpg").is_file()
    assert np.array_equal(read_palette_png(run.root / "masks" / "00000000.png"), labels)
    assert (run.root / "masks_vis" / "00000000.png").is_file()
    video = run.write_video(f"video_mask_{run.run_id}.mp4", [frame] * 5, Fraction(30000, 1001))
    assert video == run.root / f"video_mask_{run.run_id}.mp4" and video.stat().st_size > 0


def test_stage_done_then_skipped_on_resume(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path)
    calls = []
    with run.stage("masks") as st:
        assert not st.skip
        calls.append(1)
        st.extra["frames"] = 10
        st.artefact("masks")
    reopened = RunDir.open(tmp_path, run.run_id)
    assert reopened.is_done("masks")
    with reopened.stage("masks") as st:
        assert st.skip
    with reopened.stage("masks", force=True) as st:
        assert not st.skip
    m = reopened.manifest
    assert m["stages"]["masks"]["status"] == "done"
    assert m["stages"]["masks"]["frames"] == 10
    assert m["stages"]["masks"]["seconds"] >= 0
    assert m["artefacts"]["masks"] == ["masks"]


def test_failed_stage_recorded_and_earlier_outputs_intact(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path)
    with run.stage("masks"):
        run.write_json("a.json", {"ok": True})
    with pytest.raises(RuntimeError, match="boom"), run.stage("recover"):
        raise RuntimeError("boom")
    with pytest.raises(StageCancelled), run.stage("render"):
        raise StageCancelled("user cancelled")
    m = RunDir.open(tmp_path, run.run_id).manifest
    assert m["stages"]["masks"]["status"] == "done"
    assert m["stages"]["recover"]["status"] == "failed"
    assert m["stages"]["recover"]["error"] == "RuntimeError: boom"
    assert m["stages"]["render"]["status"] == "cancelled"
    assert json.loads((run.root / "a.json").read_text()) == {"ok": True}


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
        RunDir.open(tmp_path, bad)


def test_paths_cannot_escape(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path)
    with pytest.raises(RunDirError, match="inside the run folder"):
        run.write_text("../escape.txt", "x")
    with pytest.raises(RunDirError):
        run.path("/etc/passwd")


def test_unwritable_output_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RunDirError, match="cannot create a run folder"):
        RunDir.create(blocker / "sub")


def test_npz_round_trip(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path)
    run.write_npz("bodies.npz", a=np.arange(5))
    assert np.array_equal(np.load(run.root / "bodies.npz")["a"], np.arange(5))


def test_invalidate_marks_done_stages_stale(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path)
    for name in ("masks", "camera"):
        with run.stage(name):
            pass
    run.invalidate("camera", "recover")
    reopened = RunDir.open(tmp_path, run.run_id)
    assert reopened.stage_status("camera") == "stale" and not reopened.is_done("camera")
    assert reopened.is_done("masks") and reopened.stage_status("recover") is None
    with reopened.stage("camera") as st:
        assert not st.skip


def test_atomic_file_renames_on_success_and_cleans_up_on_error(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path)
    with run.atomic_file("out/data.bin") as tmp:
        tmp.write_bytes(b"payload")
        assert not run.path("out/data.bin").exists()
    assert run.path("out/data.bin").read_bytes() == b"payload"
    with pytest.raises(RuntimeError), run.atomic_file("out/other.bin") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("crash")
    assert sorted(p.name for p in run.path("out").iterdir()) == ["data.bin"]
