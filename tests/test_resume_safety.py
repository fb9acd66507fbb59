"""Resuming a run folder is safe: the input is checked, each stage re-runs only when what it read
changed, and a damaged folder, another video, a full or read-only disk give one clear error."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from body4d.cli import main
from body4d.config import load_config
from body4d.masks import encode_palette_png
from body4d.recipe import STAGES
from body4d.run_dir import MANIFEST, RESERVE, RunDir
from body4d.video import encode_video
from tests.conftest import run_folders

T, H, W = 6, 64, 96
FPS = Fraction(10)
BOXES = {1: (8, 10, 30, 60), 2: (50, 15, 75, 60)}


def _frames(n: int, shade: int) -> list[np.ndarray]:
    frames = []
    for t in range(n):
        frame = np.full((H, W, 3), shade, np.uint8)
        for obj_id, (x0, y0, x1, y1) in BOXES.items():
            frame[y0:y1, x0 + t : x1 + t] = (60 * obj_id, 80, 160)
        frames.append(frame)
    return frames


def _masks(folder: Path, n: int, ids: tuple[int, ...]) -> Path:
    folder.mkdir(parents=True)
    for t in range(n):
        labels = np.zeros((H, W), np.uint8)
        for obj_id in ids:
            x0, y0, x1, y1 = BOXES[obj_id]
            labels[y0:y1, x0 + t : x1 + t] = obj_id
        (folder / f"{t:05d}.png").write_bytes(encode_palette_png(labels))
    return folder


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Video A, video B (same length and size, other pictures), a smaller and a longer video, masks."""
    root = tmp_path_factory.mktemp("inputs")
    small = [f[::2, ::2].copy() for f in _frames(T, 200)]
    return {
        "a": encode_video(_frames(T, 200), root / "a.mp4", FPS),
        "b": encode_video(_frames(T, 90), root / "b.mp4", FPS),
        "small": encode_video(small, root / "small.mp4", FPS),
        "long": encode_video(_frames(T + 3, 200), root / "long.mp4", FPS),
        "masks": _masks(root / "masks", T, (1, 2)),
        "masks_one": _masks(root / "masks_one", T, (1,)),
    }


def _cli(args: list[str], ckpt_root: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``body4d run`` in process; returns the exit code and stderr."""
    code = main(
        [
            "run",
            *args,
            "--output_dir",
            str(out),
            "--set",
            f"paths.ckpt_root={ckpt_root}",
            "--set",
            "runtime.device=cpu",
            "--set",
            "render.individual=false",
        ]
    )
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def finished(inputs: dict[str, Path], tiny_ckpt_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run of video A with the imported masks (every stage done), made once."""
    out = tmp_path_factory.mktemp("finished")
    code = main(
        [
            "run",
            "--input_video",
            str(inputs["a"]),
            "--masks",
            str(inputs["masks"]),
            "--output_dir",
            str(out),
            "--set",
            f"paths.ckpt_root={tiny_ckpt_root}",
            "--set",
            "runtime.device=cpu",
            "--set",
            "render.individual=false",
        ]
    )
    assert code == 0
    (run,) = run_folders(out)
    return run


def _copy(run: Path, out: Path) -> Path:
    """A copy of a run folder under ``out`` (each test changes its own)."""
    return Path(shutil.copytree(run, out / run.name))


def _manifest(run: Path) -> dict:
    return json.loads((run / MANIFEST).read_text())


def _finished_at(run: Path) -> dict[str, str]:
    return {name: st["finished"] for name, st in _manifest(run)["stages"].items()}


# ------------------------------------------------------------------ finding 1: another video
@pytest.mark.parametrize(
    ("which", "differs"),
    [
        ("b", "frames 0, 2, 5 show other pictures"),
        ("small", "frame size in the file 96x64, now 48x32"),
        ("long", "6 frames, now 9"),
    ],
)
def test_resume_with_another_video_is_refused_before_anything_is_written(
    which: str, differs: str, inputs, finished: Path, tiny_ckpt_root: Path, tmp_path: Path, capsys
) -> None:
    run = _copy(finished, tmp_path)
    before = {p: p.read_bytes() for p in (run / MANIFEST, run / "camera.json", run / "bodies.npz")}
    code, err = _cli(
        ["--input_video", str(inputs[which]), "--resume", run.name], tiny_ckpt_root, tmp_path, capsys
    )
    assert code == 2
    line = err.strip()
    assert "\n" not in line and "Traceback" not in line
    assert f"run {run.name} was made from {inputs['a']}" in line
    assert f"{inputs[which]} is not that video" in line and differs in line
    assert "resume it with the video it was made from, or start a new run" in line
    assert all(p.read_bytes() == data for p, data in before.items()), "nothing may be written"
    # The right video still resumes (a no-op: every stage done, with the run's own camera).
    code, err = _cli(
        ["--input_video", str(inputs["a"]), "--resume", run.name], tiny_ckpt_root, tmp_path, capsys
    )
    assert code == 0, err
    assert (run / "camera.json").read_bytes() == before[run / "camera.json"]
    assert _manifest(run)["stages"] == json.loads(before[run / MANIFEST])["stages"]


def test_the_manifest_records_the_input_fingerprint_and_what_each_stage_read(finished: Path) -> None:
    manifest = _manifest(finished)
    fingerprint = manifest["video"]["fingerprint"]
    assert fingerprint["n_frames"] == T and (fingerprint["width"], fingerprint["height"]) == (W, H)
    assert fingerprint["file_size"] == Path(manifest["input"]).stat().st_size
    assert sorted(fingerprint["frames_sha256"], key=int) == ["0", "2", "5"]
    stages = manifest["stages"]
    video_id = stages["masks"]["inputs"]["video"]
    assert len(video_id) == 16
    assert stages["camera"]["inputs"] == {"video": video_id}
    assert stages["recover"]["inputs"] == {
        "video": video_id,
        "masks": stages["masks"]["output"],
        "camera": stages["camera"]["output"],
    }
    assert stages["export"]["inputs"] == {
        "smooth": stages["smooth"]["output"],
        "camera": stages["camera"]["output"],
    }
    outputs = [stages[s]["output"] for s in STAGES]
    assert len(set(outputs)) == len(STAGES)


# ------------------------------------------------------------------ finding 1: what depends on what
def _reconstruct(run_path: Path, video: Path, ckpt_root: Path, **overrides) -> tuple[str, ...]:
    from body4d.driver import load_models, reconstruct
    from body4d.video import open_video

    cfg = load_config(
        overrides=[f"paths.ckpt_root={ckpt_root}", "runtime.device=cpu", "render.individual=false"]
    ).replace(**overrides)
    run = RunDir.open(run_path.parent, run_path.name, cfg)
    models = load_models(cfg, sam3=False, detector=False, camera=False)
    with open_video(video) as v:
        return reconstruct(v, run, cfg, models).done


def test_a_changed_input_reruns_exactly_the_stages_that_read_it(
    inputs, finished: Path, tiny_ckpt_root: Path, tmp_path
):
    run = _copy(finished, tmp_path)
    before = _finished_at(run)
    # New export settings: export runs again; render and bundle do not read its result.
    _reconstruct(run, inputs["a"], tiny_ckpt_root, **{"export.obj_workers": 1})
    after = _finished_at(run)
    assert [s for s in STAGES if after[s] != before[s]] == ["export"]
    # A new smooth result whose readers were not marked stale (a crash between the two manifest
    # writes): the recorded inputs still make export, render and bundle run again, and only them.
    manifest = _manifest(run)
    manifest["stages"]["smooth"]["output"] = "0123456789abcdef"
    (run / MANIFEST).write_text(json.dumps(manifest))
    before = after
    _reconstruct(run, inputs["a"], tiny_ckpt_root, **{"export.obj_workers": 1})
    after = _finished_at(run)
    assert [s for s in STAGES if after[s] != before[s]] == ["export", "render", "bundle"]
    stages = _manifest(run)["stages"]
    assert all(stages[s]["status"] == "done" for s in STAGES)
    assert stages["bundle"]["inputs"]["smooth"] == "0123456789abcdef"


# ------------------------------------------------------------------ finding 2: finished runs
def test_a_finished_run_resumes_as_a_no_op_and_with_force(
    inputs, finished: Path, tiny_ckpt_root: Path, tmp_path, capsys
):
    run = _copy(finished, tmp_path)
    before = _finished_at(run)
    code, err = _cli(
        ["--input_video", str(inputs["a"]), "--resume", run.name], tiny_ckpt_root, tmp_path, capsys
    )
    assert code == 0, err
    assert _finished_at(run) == before
    code, err = _cli(
        ["--input_video", str(inputs["a"]), "--resume", run.name, "--force", "--masks", str(inputs["masks"])],
        tiny_ckpt_root,
        tmp_path,
        capsys,
    )
    assert code == 0, err
    after = _finished_at(run)
    assert all(after[s] > before[s] for s in STAGES), "--force redoes every stage"
    assert sorted(p.name for p in (run / "people").iterdir()) == ["1", "2"]


def test_a_crash_after_export_wrote_its_files_resumes_without_force(
    inputs, finished: Path, tiny_ckpt_root: Path, tmp_path, capsys
):
    """Killed after export's last OBJ (and a half-written one) but before the manifest said done."""
    run = _copy(finished, tmp_path)
    manifest = _manifest(run)
    manifest["stages"]["export"].update(status="running", finished=None)
    (run / MANIFEST).write_text(json.dumps(manifest))
    half = run / "mesh_4d_individual" / "1" / ".00000005.obj.k3j4.part"
    half.write_bytes(b"v 0 0")
    before = _finished_at(run)
    code, err = _cli(
        ["--input_video", str(inputs["a"]), "--resume", run.name], tiny_ckpt_root, tmp_path, capsys
    )
    assert code == 0, err
    stages = _manifest(run)["stages"]
    assert stages["export"]["status"] == "done" and stages["export"]["files"] == 2 * T
    assert not half.exists()
    after = _finished_at(run)
    assert [s for s in STAGES if after[s] != before[s]] == ["export"]


# ------------------------------------------------------------------ finding 6: people gone
def test_forced_masks_with_fewer_people_leave_no_outputs_of_the_missing_one(
    inputs, finished: Path, tiny_ckpt_root: Path, tmp_path, capsys
):
    run = _copy(finished, tmp_path)
    args = ["--input_video", str(inputs["a"]), "--resume", run.name]
    code, err = _cli(
        [*args, "--force", "--masks", str(inputs["masks_one"]), "--stop-after", "masks"],
        tiny_ckpt_root,
        tmp_path,
        capsys,
    )
    assert code == 0, err
    manifest = _manifest(run)
    # The camera reads only the video: it stays done; everything reading the masks is stale.
    assert manifest["stages"]["camera"]["status"] == "done"
    assert [manifest["stages"][s]["status"] for s in STAGES[2:]] == ["stale"] * (len(STAGES) - 2)
    assert set(manifest["artefacts"]) == {"masks", "camera"}, "stale results are not listed"
    for folder in ("people", "mesh_4d_individual", "focal_4d_individual"):
        assert not (run / folder).exists()
    assert not (run / f"4d_{run.name}.mp4").exists() and not (run / "bodies.npz").exists()
    code, err = _cli(args, tiny_ckpt_root, tmp_path, capsys)
    assert code == 0, err
    for folder in ("people", "mesh_4d_individual", "focal_4d_individual"):
        assert sorted(p.name for p in (run / folder).iterdir()) == ["1"]
    assert _manifest(run)["stages"]["bundle"]["people"] == 1


# ------------------------------------------------------------------ finding 9: damaged folders
@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("[]", "manifest.json is damaged (it holds a JSON list, not the manifest object)"),
        ("no stages", "manifest.json is damaged (its 'stages' section is missing or not an object)"),
        ("{", "manifest.json is not valid JSON"),
    ],
)
def test_a_damaged_manifest_is_refused_with_the_fix(
    damage: str, message: str, inputs, finished: Path, tiny_ckpt_root: Path, tmp_path, capsys
):
    run = _copy(finished, tmp_path)
    manifest = _manifest(run)
    del manifest["stages"]
    (run / MANIFEST).write_text(json.dumps(manifest) if damage == "no stages" else damage)
    code, err = _cli(
        ["--input_video", str(inputs["a"]), "--resume", run.name], tiny_ckpt_root, tmp_path, capsys
    )
    assert code == 2
    (line,) = err.strip().splitlines()
    assert str(run / MANIFEST) in line and message in line
    assert "start a new run (body4d run --input_video VIDEO, without --resume)" in line


def test_a_deleted_mask_is_named_with_the_fix(inputs, finished: Path, tiny_ckpt_root: Path, tmp_path, capsys):
    run = _copy(finished, tmp_path)
    (run / "masks" / "00000003.png").unlink()
    args = ["--input_video", str(inputs["a"]), "--resume", run.name]
    code, err = _cli([*args, "--set", "export.obj_workers=1"], tiny_ckpt_root, tmp_path, capsys)
    assert code == 0, err  # export runs again, reading no masks: the missing file does not matter
    code, err = _cli([*args, "--set", "sam_3d_body.batch_size=2"], tiny_ckpt_root, tmp_path, capsys)
    assert code == 2
    (line,) = err.strip().splitlines()
    assert f"{run / 'masks' / '00000003.png'} is missing" in line
    assert (
        f"body4d run --resume {run.name} --force (with the --prompts or --masks they were made from)" in line
    )


def test_an_unreadable_stage_result_is_named_and_runs_again_on_resume(
    inputs, finished: Path, tiny_ckpt_root: Path, tmp_path, capsys
):
    run = _copy(finished, tmp_path)
    (run / "bodies.npz").write_bytes(b"not a zip")
    args = ["--input_video", str(inputs["a"]), "--resume", run.name]
    code, err = _cli([*args, "--set", "export.obj_workers=1"], tiny_ckpt_root, tmp_path, capsys)
    assert code == 2
    (line,) = err.strip().splitlines()
    assert f"the saved result of stage smooth in {run} (bodies.npz) cannot be read" in line
    assert f"it will run again: resume with body4d run --resume {run.name}" in line
    assert _manifest(run)["stages"]["smooth"]["status"] == "stale"
    code, err = _cli(args, tiny_ckpt_root, tmp_path, capsys)
    assert code == 0, err
    with np.load(run / "bodies.npz") as bodies:
        assert list(bodies["obj_ids"]) == [1, 2]


# ------------------------------------------------------------------ real small filesystems
@contextlib.contextmanager
def _mounted_tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` at ``folder`` (root only: mount(8))."""
    folder.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here ({exc}): run as root")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def _fill(disk: Path, leave: int) -> Path:
    """Fill ``disk`` with one file, then give back ``leave`` bytes: a nearly full disk."""
    filler = disk / "filler"
    page = 4096  # tmpfs allocates whole pages: page-sized writes fill it to the last byte
    with filler.open("wb", buffering=0) as fh, contextlib.suppress(OSError):
        while True:
            fh.write(b"\0" * page)
    os.truncate(filler, filler.stat().st_size - leave)
    return filler


def test_a_full_disk_is_a_clear_error_and_the_manifest_records_the_failed_stage(
    inputs, finished: Path, tiny_ckpt_root: Path, tmp_path, capsys, monkeypatch
):
    """The disk fills while a stage writes (the estimate before the run is told the space is there:
    its refusal is tested in test_cli_run)."""
    import body4d.disk_use

    monkeypatch.setattr(body4d.disk_use, "free_bytes", lambda _folder: 1 << 40)
    with _mounted_tmpfs(tmp_path / "disk", "64m") as disk:
        code, err = _cli(
            ["--input_video", str(inputs["a"]), "--masks", str(inputs["masks"]), "--stop-after", "smooth"],
            tiny_ckpt_root,
            disk,
            capsys,
        )
        assert code == 0, err
        (run,) = run_folders(disk)
        assert (run / RESERVE).stat().st_size > 0
        filler = _fill(disk, 4096)
        args = ["--input_video", str(inputs["a"]), "--resume", run.name]
        code, err = _cli(args, tiny_ckpt_root, disk, capsys)
        assert code == 2
        (line,) = err.strip().splitlines()
        assert f"the disk holding {run} is full (" in line and " free" in line
        assert (
            f"free some space or set runtime.output_dir to a bigger disk, then resume with body4d run --resume {run.name}"
            in line
        )
        export = _manifest(run)["stages"]["export"]
        assert export["status"] == "failed" and export["error"].startswith("DiskFullError: the disk holding")
        assert not list(run.rglob("*.part")), "no half-written file is left"
        assert _manifest(run)["stages"]["smooth"]["status"] == "done"
        filler.unlink()
        code, err = _cli(args, tiny_ckpt_root, disk, capsys)
        assert code == 0, err
        assert _manifest(run)["stages"]["bundle"]["status"] == "done"


def test_a_read_only_run_folder_is_a_clear_error(
    inputs, finished: Path, tiny_ckpt_root: Path, tmp_path, capsys
):
    with _mounted_tmpfs(tmp_path / "disk", "64m") as disk:
        run = _copy(finished, disk)
        manifest = _manifest(run)
        manifest["stages"]["bundle"]["status"] = "stale"
        (run / MANIFEST).write_text(json.dumps(manifest))
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        code, err = _cli(
            ["--input_video", str(inputs["a"]), "--resume", run.name], tiny_ckpt_root, disk, capsys
        )
        assert code == 2
        (line,) = err.strip().splitlines()
        assert f"cannot write to run {run.name} in {run}" in line
        assert "copy the run folder to a writable disk and resume it there" in line
