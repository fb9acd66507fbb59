"""``body4d run`` / ``scripts/offline_app.py`` end to end on a tiny checkpoint and a synthetic mp4."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

import body4d.disk_use
from body4d.cli import main
from body4d.cli_run import PromptFileError, load_prompts
from body4d.config import load_config
from body4d.masks import read_palette_png
from body4d.run_dir import RunDir
from body4d.ui.downloads import run_files, zip_run
from body4d.video import encode_video, probe
from tests.conftest import run_folders, tiny_cpu_args, two_people_frames

REPO = Path(__file__).resolve().parents[1]
T, H, W = 8, 64, 96
FPS = Fraction(30000, 1001)


@pytest.fixture(scope="module")
def ckpt_root(tiny_ckpt_root: Path) -> Path:
    return tiny_ckpt_root


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    frames = two_people_frames(T, H, W)
    return encode_video(frames, tmp_path_factory.mktemp("video") / "clip.mp4", FPS)


def write_prompts(path: Path, prompts: object) -> Path:
    path.write_text(json.dumps(prompts))
    return path


def run(args: list[str], ckpt_root: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(
        [
            "run",
            *args,
            *tiny_cpu_args(ckpt_root),
        ]
    )
    out, err = capsys.readouterr()
    return code, out, err


def test_run_with_prompts_writes_every_output(
    clip: Path,
    ckpt_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="body4d.cli_run")
    prompts = write_prompts(
        tmp_path / "prompts.json",
        {
            "1": [{"frame": 0, "x": 15, "y": 25, "positive": True}],
            "4": [{"frame": 3, "x": 75, "y": 45}, {"frame": 3, "x": 2, "y": 2, "positive": False}],
        },
    )
    code, out, err = run(
        [
            "--input_video",
            str(clip),
            "--prompts",
            str(prompts),
            "--output_dir",
            str(tmp_path / "out"),
            "--stop-after",
            "masks",
            "--set",
            "outputs.frame_images=true",
            "--set",
            "outputs.mask_images=true",
        ],
        ckpt_root,
        capsys,
    )
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    root = Path(summary["run_dir"])
    assert summary["obj_ids"] == [1, 4] and summary["frames"] == T
    estimate = caplog.text  # logged before the run starts
    assert f"body4d run: {T} frames of {W}x{H}, 2 people prompted; estimated disk use " in estimate
    assert "frame images " in estimate and "mask images " in estimate and "meshes" not in estimate, (
        "only the masks stage runs"
    )
    names = [f"{i:08d}" for i in range(T)]
    assert sorted(p.stem for p in (root / "images").glob("*.jpg")) == names
    assert sorted(p.stem for p in (root / "masks").glob("*.png")) == names
    assert sorted(p.stem for p in (root / "masks_vis").glob("*.png")) == names
    labels = np.stack([read_palette_png(root / "masks" / f"{n}.png") for n in names])
    assert labels.shape == (T, H, W)
    assert set(np.unique(labels)) <= {0, 1, 4} and (labels == 4).any()
    mp4 = root / f"video_mask_{summary['run_id']}.mp4"
    info = probe(mp4)
    assert info.fps == FPS and info.n_frames == T and (info.width, info.height) == (W, H)
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["stages"]["masks"]["status"] == "done"
    seg = json.loads((root / "segmentation.json").read_text())
    assert seg == {"obj_ids": [1, 4], "first_frames": {"1": 0, "4": 3}, "mode": "prompts"}


def test_run_without_prompts_detects_people(
    clip: Path, ckpt_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(["--input_video", str(clip), "--output_dir", str(tmp_path)], ckpt_root, capsys)
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["obj_ids"] and summary["obj_ids"] == list(range(1, len(summary["obj_ids"]) + 1))
    seg = json.loads((Path(summary["run_dir"]) / "segmentation.json").read_text())
    assert seg["mode"] == "auto"


@pytest.mark.parametrize(
    ("prompts", "message"),
    [
        ({"1": [{"frame": 0, "x": 96, "y": 10}]}, "outside the 96x64 frame"),
        ({"1": [{"frame": 0, "x": 10, "y": 10, "positive": False}]}, "only negative clicks"),
        ({"1": [{"frame": 99, "x": 10, "y": 10}]}, "frame 99 is outside the video"),
        ({"0": [{"frame": 0, "x": 10, "y": 10}]}, "object id '0' must be an integer from 1 to 255"),
        ({"1": [{"frame": 0, "x": "a", "y": 10}]}, "x must be a number"),
        ([], "must map object ids to lists of clicks"),
    ],
)
def test_bad_prompts_exit_2_with_one_line(
    clip: Path,
    ckpt_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    prompts: object,
    message: str,
) -> None:
    path = write_prompts(tmp_path / "p.json", prompts)
    code, _, err = run(
        ["--input_video", str(clip), "--prompts", str(path), "--output_dir", str(tmp_path / "o")],
        ckpt_root,
        capsys,
    )
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_missing_checkpoint_and_video_exit_2(
    clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["--input_video", str(clip), "--output_dir", str(tmp_path)], tmp_path / "none", capsys)
    assert code == 2
    assert str(tmp_path / "none" / "sam3") in err and "scripts/setup.py --ckpt-root" in err
    code, _, err = run(["--input_video", str(tmp_path / "missing.mp4")], tmp_path, capsys)
    assert code == 2 and "missing.mp4" in err


def test_load_prompts_parses_clicks(tmp_path: Path) -> None:
    path = write_prompts(tmp_path / "p.json", {"2": [{"frame": 1, "x": 3, "y": 4.5}]})
    prompts = load_prompts(path)
    assert prompts.obj_ids == [2]
    (click,) = prompts.clicks[2]
    assert (click.frame, click.x, click.y, click.positive) == (1, 3.0, 4.5, True)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(PromptFileError, match="not valid JSON"):
        load_prompts(tmp_path / "bad.json")


def test_offline_app_wrapper_forwards_the_original_flag(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "offline_app.py"),
            "--input_video",
            str(tmp_path / "none.mp4"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "none.mp4" in proc.stderr.strip().splitlines()[-1]


def test_exit_codes_name_what_went_wrong() -> None:
    import torch

    from body4d.errors import exit_code
    from body4d.jobs import Cancelled
    from body4d.video import VideoError
    from models.errors import CheckpointError
    from models.frames import PromptError

    assert [exit_code(e) for e in (VideoError("x"), PromptError("x"), CheckpointError("p", "x"))] == [2, 2, 2]
    assert exit_code(torch.cuda.OutOfMemoryError("CUDA out of memory")) == 3
    assert exit_code(MemoryError()) == 3
    assert exit_code(KeyboardInterrupt()) == 4 and exit_code(Cancelled("masks cancelled")) == 4
    assert exit_code(RuntimeError("a bug")) == exit_code(ValueError("a bug")) == 1


@pytest.mark.parametrize(
    ("error", "code", "says"),
    [("oom", 3, "CUDA out of memory"), ("interrupt", 4, "KeyboardInterrupt"), ("bug", 1, "unexpected")],
)
def test_run_reports_oom_interrupt_and_bugs_by_exit_code(
    clip: Path, ckpt_root: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch, error, code, says
) -> None:
    import torch

    import body4d.driver

    raised = {
        "oom": torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        "interrupt": KeyboardInterrupt(),
        "bug": AssertionError("unexpected state"),
    }[error]

    def fail(*_args, **_kwargs):  # noqa: ANN002, ANN003, ANN202
        raise raised

    monkeypatch.setattr(body4d.driver, "reconstruct", fail)
    args = [
        "run",
        "--input_video",
        str(clip),
        "--output_dir",
        str(tmp_path),
        "--set",
        f"paths.ckpt_root={ckpt_root}",
    ]
    assert main(args) == code
    assert says in capsys.readouterr().err


def test_run_holds_its_run_lock_while_it_works(
    clip: Path, ckpt_root: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retention (body4d.retention) never deletes a CLI run in progress: the run's flock is held."""
    import body4d.driver
    from body4d.retention import _lock_held, lock_path

    seen: dict[str, bool] = {}

    def work(_video, run, *_args, **_kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen[run.run_id] = _lock_held(lock_path(tmp_path, run.run_id))
        raise KeyboardInterrupt

    monkeypatch.setattr(body4d.driver, "reconstruct", work)
    args = [
        "run",
        "--input_video",
        str(clip),
        "--output_dir",
        str(tmp_path),
        "--set",
        f"paths.ckpt_root={ckpt_root}",
    ]
    assert main(args) == 4
    ((run_id, held),) = seen.items()
    assert held, "the lock was not held while the stages ran"
    assert not _lock_held(lock_path(tmp_path, run_id)), "the lock outlived the run"


def test_frame_and_mask_images_are_off_by_default_and_the_run_resumes_from_its_masks(
    clip: Path,
    ckpt_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="body4d.cli_run")
    prompts = write_prompts(tmp_path / "prompts.json", {"1": [{"frame": 0, "x": 15, "y": 25}]})
    video = ["--input_video", str(clip), "--output_dir", str(tmp_path / "out")]
    code, out, err = run([*video, "--prompts", str(prompts), "--stop-after", "masks"], ckpt_root, capsys)
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    root = Path(summary["run_dir"])
    assert not (root / "images").exists() and not (root / "masks_vis").exists()
    assert len(list((root / "masks").glob("*.png"))) == T
    assert "estimated disk use" in caplog.text
    assert "frame images" not in caplog.text and "mask images" not in caplog.text
    caplog.clear()
    code, out, err = run(
        [*video, "--resume", summary["run_id"], "--stop-after", "recover"], ckpt_root, capsys
    )
    assert code == 0, err
    estimate = caplog.text
    assert (
        "1 person in the run's masks" in estimate and "masks " not in estimate.split("estimated disk use")[1]
    )
    stages = json.loads((root / "manifest.json").read_text())["stages"]
    assert stages["recover"]["status"] == "done" and stages["recover"]["person_frames_estimated"] > 0
    run_dir = RunDir.open(root.parent, root.name, load_config(env={}))
    assert all(p.parts[0] not in ("images", "masks_vis") for p in run_files(run_dir))
    assert zip_run(run_dir).is_file()


def test_run_is_refused_when_the_disk_has_less_room_than_the_estimate(
    clip: Path,
    ckpt_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A one-line error after the logged estimate."""
    caplog.set_level(logging.INFO, logger="body4d.cli_run")
    monkeypatch.setattr(body4d.disk_use, "free_bytes", lambda _folder: 2_000_000)
    out_dir = tmp_path / "out"
    code, _, err = run(["--input_video", str(clip), "--output_dir", str(out_dir)], ckpt_root, capsys)
    assert code == 2
    estimate = f"body4d run: {T} frames of {W}x{H}, people not known before the masks: estimated for 1"
    assert estimate in caplog.text
    (line,) = err.strip().splitlines()
    assert "not enough free disk space" in line
    assert f"in {out_dir} for this run: it needs about" in line and "2.0 MB free" in line
    assert "runtime.output_dir" in line and "export.obj (" in line and "render.individual (" in line
    assert run_folders(out_dir) == [], "refused before a run folder is made"
