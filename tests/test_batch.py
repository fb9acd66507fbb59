"""``body4d batch``: many videos locally (models loaded once) and on a local Ray instance (CPU workers),
on tiny checkpoints and short synthetic clips."""

from __future__ import annotations

import json
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import pytest

from body4d.batch import VideoResult, collect_inputs, read_list, with_retry
from body4d.cli import main
from body4d.errors import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_OUT_OF_MEMORY
from body4d.video import encode_video
from tests.conftest import tiny_cpu_args, two_people_frames

T, H, W = 6, 64, 96
PROMPTS_A = {"1": [{"frame": 0, "x": 15, "y": 25}], "2": [{"frame": 2, "x": 75, "y": 45}]}


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``a.mp4`` and ``b.mp4`` (two coloured boxes, one moving), ``c.mp4`` cut in half (a truncated
    file: bad input), and ``prompts/a.json``."""
    folder = tmp_path_factory.mktemp("batch_clips")
    frames = two_people_frames(T, H, W)
    a = encode_video(frames, folder / "a.mp4", Fraction(25))
    b = encode_video(frames[::-1], folder / "b.mp4", Fraction(25))
    whole = encode_video(frames, folder / "whole_c.mp4", Fraction(25)).read_bytes()
    c = folder / "c.mp4"
    c.write_bytes(whole[: len(whole) // 2])
    (folder / "prompts").mkdir()
    (folder / "prompts" / "a.json").write_text(json.dumps(PROMPTS_A))
    return {"a": a, "b": b, "c": c, "prompts": folder / "prompts"}


def batch(args: list[str], ckpt_root: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(
        [
            "batch",
            *args,
            *tiny_cpu_args(ckpt_root),
        ]
    )
    out, err = capsys.readouterr()
    return code, out, err


def run_folders(output_dir: Path) -> list[Path]:
    return sorted(p for p in output_dir.iterdir() if (p / "manifest.json").is_file())


def test_list_file_and_prompts_dir_pair_each_video_with_its_prompts(
    clips: dict[str, Path], tmp_path: Path
) -> None:
    (tmp_path / "vids").mkdir()
    (tmp_path / "sub").mkdir()
    copy = tmp_path / "vids" / "b.mp4"
    copy.write_bytes(clips["b"].read_bytes())
    listing = tmp_path / "sub" / "videos.txt"
    listing.write_text(f"# the batch\n\n{clips['a']}   # prompted\n../vids/b.mp4\n")
    assert read_list(listing) == [clips["a"], tmp_path / "sub" / ".." / "vids" / "b.mp4"]
    items = collect_inputs([], str(listing), str(clips["prompts"]))
    assert [i.name for i in items] == ["a", "b"]
    assert items[0].prompts is not None and items[0].prompts.obj_ids == [1, 2]
    assert items[1].prompts is None and items[1].video == copy.resolve()


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "missing.mp4 does not exist: fix the path"),
        ("duplicate", "share the name 'a': rename one"),
        ("orphan_prompts", "z.json matches no video of the batch"),
        ("bad_prompts", "is not valid JSON"),
        ("nothing", "no videos: pass video files"),
        ("no_list", "cannot be read"),
        ("bad_stage", "--stop-after 'nope' is not a stage"),
    ],
)
def test_bad_batch_input_exits_2_before_any_work(
    clips: dict[str, Path],
    tiny_ckpt_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: str,
    message: str,
) -> None:
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.mp4").write_bytes(clips["a"].read_bytes())
    args = {
        "missing": [str(clips["a"]), str(tmp_path / "missing.mp4")],
        "duplicate": [str(clips["a"]), str(other / "a.mp4")],
        "orphan_prompts": [str(clips["a"]), "--prompts-dir", str(prompts)],
        "bad_prompts": [str(clips["a"]), "--prompts-dir", str(prompts)],
        "nothing": [],
        "no_list": ["--list", str(tmp_path / "absent.txt")],
        "bad_stage": [str(clips["a"]), "--stop-after", "nope"],
    }[case]
    if case == "orphan_prompts":
        (prompts / "z.json").write_text(json.dumps(PROMPTS_A))
    if case == "bad_prompts":
        (prompts / "a.json").write_text("{not json")
    out_dir = tmp_path / "out"
    code, out, err = batch([*args, "--output_dir", str(out_dir)], tiny_ckpt_root, capsys)
    assert code == EXIT_BAD_INPUT
    assert message in err and len(err.strip().splitlines()) == 1 and err.startswith("body4d batch: ")
    assert out == "" and not out_dir.exists()


def test_retry_reruns_bugs_and_oom_once_resuming_but_never_bad_input() -> None:
    calls: list[str | None] = []

    def attempts(*codes: int):  # noqa: ANN202
        def attempt(resume: str | None) -> VideoResult:
            calls.append(resume)
            code = codes[len(calls) - 1]
            return VideoResult("v.mp4", code, run_id="r1", seconds=1.5, error=None if code == 0 else "boom")

        return attempt

    result = with_retry(attempts(EXIT_FAILURE, EXIT_OK))
    assert (result.code, result.attempts, result.seconds, calls) == (EXIT_OK, 2, 3.0, [None, "r1"])
    calls.clear()
    result = with_retry(attempts(EXIT_OUT_OF_MEMORY, EXIT_OUT_OF_MEMORY, EXIT_OK))
    assert (result.code, result.attempts, calls) == (EXIT_OUT_OF_MEMORY, 2, [None, "r1"])
    calls.clear()
    result = with_retry(attempts(EXIT_BAD_INPUT, EXIT_OK))
    assert (result.code, result.attempts, calls) == (EXIT_BAD_INPUT, 1, [None])


def test_local_batch_loads_models_once_and_reports_every_video(
    clips: dict[str, Path],
    tiny_ckpt_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import body4d.driver

    loads: list[dict[str, bool]] = []
    real_load = body4d.driver.load_models

    def counting_load(cfg, **flags):  # noqa: ANN001, ANN003, ANN202
        loads.append(flags)
        return real_load(cfg, **flags)

    monkeypatch.setattr(body4d.driver, "load_models", counting_load)
    out_dir = tmp_path / "out"
    args = [str(clips[k]) for k in "abc"] + [
        "--prompts-dir",
        str(clips["prompts"]),
        "--output_dir",
        str(out_dir),
    ]
    code, out, err = batch([*args, "--stop-after", "masks"], tiny_ckpt_root, capsys)
    assert code == EXIT_BAD_INPUT, err  # c.mp4 is truncated: the worst code of the batch
    assert len(loads) == 1 and loads[0]["detector"] and not loads[0]["body"]
    lines = out.splitlines()
    assert lines[0].split() == ["video", "run", "id", "status", "people", "seconds", "tries"]
    rows = {line.split()[0]: line.split() for line in lines[1:4]}
    folders = run_folders(out_dir)
    assert sorted(p.name for p in folders) == sorted([rows["a.mp4"][1], rows["b.mp4"][1]])
    assert rows["a.mp4"][2] == "done" and rows["a.mp4"][3] == "2" and rows["a.mp4"][-1] == "1"
    assert rows["c.mp4"][1:5] == ["-", "bad", "input", "-"] and rows["c.mp4"][-1] == "1"
    assert lines[4] == "2 of 3 videos done"
    assert lines[5].startswith("c.mp4: ") and "is truncated" in lines[5]
    for folder in folders:
        manifest = json.loads((folder / "manifest.json").read_text())
        mode = json.loads((folder / "segmentation.json").read_text())["mode"]
        assert manifest["stages"]["masks"]["status"] == "done"
        assert mode == ("prompts" if Path(manifest["input"]).name == "a.mp4" else "auto")


def test_local_batch_retries_in_the_run_folder_and_stops_when_interrupted(
    clips: dict[str, Path],
    tiny_ckpt_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch

    import body4d.driver

    real = body4d.driver.reconstruct
    calls: list[tuple[str, str]] = []
    first_masks: dict[str, object] = {}

    def oom_once_then_ctrl_c(video, run, cfg, models, **kwargs):  # noqa: ANN001, ANN003, ANN202
        name = Path(video.info.path).name
        calls.append((name, run.run_id))
        if name == "b.mp4":  # Ctrl-C while the second video runs
            raise KeyboardInterrupt
        result = real(video, run, cfg, models, **kwargs)
        if len(calls) == 1:
            first_masks.update(run.manifest["stages"]["masks"])
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return result

    monkeypatch.setattr(body4d.driver, "reconstruct", oom_once_then_ctrl_c)
    out_dir = tmp_path / "out"
    args = [str(clips[k]) for k in "abc"] + [
        "--prompts-dir",
        str(clips["prompts"]),
        "--output_dir",
        str(out_dir),
    ]
    code, out, err = batch([*args, "--stop-after", "masks", "--json"], tiny_ckpt_root, capsys)
    assert code == EXIT_INTERRUPTED, err
    summary = json.loads(out)
    a, b, c = summary["videos"]
    assert summary["code"] == EXIT_INTERRUPTED
    assert (a["status"], a["attempts"], a["people"]) == ("done", 2, 2)
    assert (b["status"], b["attempts"]) == ("interrupted", 1)  # not retried
    assert (c["status"], c["attempts"], c["run_id"]) == ("interrupted", 0, None)  # never started
    assert c["error"] == "not run: the batch was interrupted"
    assert [name for name, _ in calls] == ["a.mp4", "a.mp4", "b.mp4"]
    assert calls[0][1] == calls[1][1] == a["run_id"]  # the retry resumed a's run folder
    manifest = json.loads((out_dir / a["run_id"] / "manifest.json").read_text())
    assert manifest["stages"]["masks"] == first_masks  # resumed: the masks were not redone
    assert sorted(p.name for p in run_folders(out_dir)) == sorted([a["run_id"], b["run_id"]])


def test_ray_auto_without_a_cluster_exits_2(
    clips: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ray = pytest.importorskip("ray", reason="the dev extra installs ray")
    assert not ray.is_initialized(), "runs before the module's Ray instance (file order)"
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "no_ray"))  # no cluster recorded there
    args = [str(clips["a"]), "--output_dir", str(tmp_path / "o"), "--ray", "auto"]
    code, out, err = batch(args, tmp_path, capsys)
    assert code == EXIT_BAD_INPUT and out == ""
    assert err.startswith("body4d batch: no Ray cluster at auto") and "ray start --head" in err
    assert len(err.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local Ray instance (2 CPUs, no dashboard) for the module: Ray starts slowly."""
    ray = pytest.importorskip("ray", reason="the dev extra installs ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_batch_runs_videos_on_cpu_workers_into_the_shared_folder(
    clips: dict[str, Path],
    tiny_ckpt_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    local_ray: None,
) -> None:
    out_dir = tmp_path / "shared"
    args = [str(clips[k]) for k in "abc"] + [
        "--prompts-dir",
        str(clips["prompts"]),
        "--output_dir",
        str(out_dir),
    ]
    ray_args = ["--ray", "auto", "--gpus-per-video", "0", "--workers", "2", "--stop-after", "masks", "--json"]
    code, out, err = batch([*args, *ray_args], tiny_ckpt_root, capsys)
    assert code == EXIT_BAD_INPUT, err
    videos = {Path(v["video"]).name: v for v in json.loads(out)["videos"]}
    assert [videos[n]["status"] for n in ("a.mp4", "b.mp4", "c.mp4")] == ["done", "done", "bad input"]
    assert videos["a.mp4"]["people"] == 2 and videos["c.mp4"]["attempts"] == 1
    assert "is truncated" in videos["c.mp4"]["error"]
    folders = run_folders(out_dir)
    assert sorted(p.name for p in folders) == sorted([videos["a.mp4"]["run_id"], videos["b.mp4"]["run_id"]])
    for folder in folders:
        assert json.loads((folder / "manifest.json").read_text())["stages"]["masks"]["status"] == "done"


def test_ray_workers_without_checkpoints_and_gpus_missing_are_bad_input(
    clips: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], local_ray: None
) -> None:
    args = [str(clips["a"]), str(clips["b"]), "--output_dir", str(tmp_path / "o"), "--stop-after", "masks"]
    code, _, err = batch([*args, "--ray", "auto"], tmp_path, capsys)
    assert code == EXIT_BAD_INPUT and "the Ray cluster has 0 GPUs" in err and "--gpus-per-video 0" in err
    code, out, _ = batch(
        [*args, "--ray", "auto", "--gpus-per-video", "0", "--json"], tmp_path / "none", capsys
    )
    assert code == EXIT_BAD_INPUT
    for video in json.loads(out)["videos"]:
        assert video["status"] == "bad input" and video["attempts"] == 1 and video["run_id"] is None
        assert (
            "worker could not load its models" in video["error"] and str(tmp_path / "none") in video["error"]
        )


def test_ray_driver_retries_failed_videos_on_any_worker(tmp_path: Path, local_ray: None) -> None:
    import ray

    from body4d.batch import BatchItem
    from body4d.batch_ray import _dispatch

    class FirstTryFails:
        """A Ray actor whose first attempt at each video fails for real (a marker file in the shared
        folder tells the second attempt, on whichever worker, that the first happened)."""

        def process(
            self, item: BatchItem, output_dir: str, stop_after: str, resume: str | None
        ) -> VideoResult:
            marker = Path(output_dir) / f"{item.name}.tried"
            if item.name == "bad":
                return VideoResult(str(item.video), EXIT_BAD_INPUT, error="truncated")
            if not marker.exists():
                marker.touch()
                if item.name == "crash":
                    raise RuntimeError("worker crashed")
                return VideoResult(str(item.video), EXIT_OUT_OF_MEMORY, run_id="run_oom", seconds=1.0)
            return VideoResult(str(item.video), EXIT_OK, run_id=resume or "new_run", people=1, seconds=2.0)

    pool = [ray.remote(num_cpus=0)(FirstTryFails).remote() for _ in range(2)]
    items = [BatchItem(tmp_path / f"{name}.mp4") for name in ("crash", "oom", "bad")]
    crash, oom, bad = _dispatch(ray, pool, items, str(tmp_path), "masks")
    assert (crash.code, crash.attempts, crash.run_id) == (EXIT_OK, 2, "new_run")
    assert (oom.code, oom.attempts, oom.run_id, oom.seconds) == (EXIT_OK, 2, "run_oom", 3.0)  # resumed
    assert (bad.code, bad.attempts) == (EXIT_BAD_INPUT, 1)
