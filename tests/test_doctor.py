"""``body4d doctor``: the judging of figures (pure), the environment probes, and the whole command on
CPU with tiny checkpoints on the shipped street clip."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import stat
import types
from pathlib import Path

import moderngl
import numpy as np
import pytest
import torch

from body4d import doctor
from body4d.cli import main
from body4d.doctor import Figures, Range, Spread, check_figures, failures
from body4d.video import probe
from models.errors import TINY_MARKER
from tests.conftest_sam3dbody import load_folder

# Plausible figures of a real run: every check passes.
GOOD = Figures(
    people=4,
    mask_area=Spread(0.01, 0.004, 0.03),
    focal_px=900.0,
    focal_diagonal=0.94,
    depth_m=Spread(9.0, 4.0, 20.0),
    vertices=18439,
    bf16_rel_diff=0.01,
    skeleton_joints=127,
)
FRAMES = 3  # frames the command runs on here: detection, then two tracked frames (quick on a CPU)


@pytest.fixture(scope="session")
def tiny_root(tiny_ckpt_root: Path) -> Path:
    return tiny_ckpt_root


# --------------------------------------------------------------------------------- judging
def test_plausible_figures_pass_every_check() -> None:
    checks = check_figures(GOOD)
    assert [c.name for c in checks] == [
        "people detected",
        "mask area fraction (smallest person)",
        "mask area fraction (largest person)",
        "focal length / image diagonal",
        "cam_t depth, nearest (m)",
        "cam_t depth, farthest (m)",
        "MHR vertex count",
        "bf16 vs fp32 encoder difference",
        "MHR skeleton joints (BVH hierarchy)",
    ]
    assert all(c.ok for c in checks) and failures(GOOD) == []
    no_skeleton = dataclasses.replace(GOOD, skeleton_joints=None)
    assert [c.name for c in failures(no_skeleton)] == ["MHR skeleton joints (BVH hierarchy)"]


@pytest.mark.parametrize(
    ("changes", "failing", "value"),
    [
        # each range: a value inside passes, one below and one above fail (naming the figure)
        ({"people": 1}, None, None),
        ({"people": 0}, "people detected", 0),
        ({"mask_area": Spread(0.0005, 0.0005, 0.9)}, None, None),
        ({"mask_area": Spread(0.01, 0.0001, 0.03)}, "mask area fraction (smallest person)", 0.0001),
        ({"mask_area": Spread(0.01, 0.004, 0.95)}, "mask area fraction (largest person)", 0.95),
        ({"focal_diagonal": 3.0}, None, None),
        ({"focal_diagonal": 0.2}, "focal length / image diagonal", 0.2),
        ({"focal_diagonal": 3.5}, "focal length / image diagonal", 3.5),
        ({"depth_m": Spread(40.0, 0.5, 80.0)}, None, None),
        ({"depth_m": Spread(5.0, 0.3, 9.0)}, "cam_t depth, nearest (m)", 0.3),
        ({"depth_m": Spread(5.0, 2.0, 120.0)}, "cam_t depth, farthest (m)", 120.0),
        ({"vertices": 18438}, "MHR vertex count", 18438),
        ({"vertices": 18440}, "MHR vertex count", 18440),
        ({"bf16_rel_diff": 0.0}, None, None),
        ({"bf16_rel_diff": -0.01}, "bf16 vs fp32 encoder difference", -0.01),
        ({"bf16_rel_diff": 0.2}, "bf16 vs fp32 encoder difference", 0.2),
        ({"bf16_rel_diff": float("nan")}, "bf16 vs fp32 encoder difference", None),
    ],
)
def test_each_range_inside_below_above(changes: dict, failing: str | None, value: float | None) -> None:
    bad = failures(dataclasses.replace(GOOD, **changes))
    if failing is None:
        assert bad == []
        return
    assert [c.name for c in bad] == [failing]
    (check,) = bad
    assert check.ok is False
    if value is not None:
        assert check.value == value
        assert check.problem().startswith(f"{failing} = {value:g} is outside its plausible range ")


def test_unmeasured_figures_fail_as_not_measured() -> None:
    bad = failures(Figures())
    assert len(bad) == len(check_figures(GOOD))
    assert bad[0].text() == "people detected was not measured (range >= 1)"
    assert bad[0].problem() == "people detected was not measured"


def test_range_text_and_bounds() -> None:
    assert str(doctor.MIN_PEOPLE) == ">= 1" and doctor.MIN_PEOPLE.contains(10**6)
    assert str(doctor.MHR_VERTICES) == "= 18439"
    assert str(doctor.DEPTH_M) == "0.5-80" and not doctor.DEPTH_M.contains(80.01)
    assert Range(0.3, 3.0).contains(0.3) and Range(0.3, 3.0).contains(3.0)
    assert Spread.of([]) is None and Spread.of([3.0, 1.0, 2.0]) == Spread(2.0, 1.0, 3.0)


# ----------------------------------------------------------------------------- environment
def _fake_nvidia_smi(folder: Path, script: str, monkeypatch: pytest.MonkeyPatch) -> None:
    exe = folder / "nvidia-smi"
    exe.write_text(f"#!/bin/sh\n{script}\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")


def test_nvidia_smi_driver_and_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_nvidia_smi(
        tmp_path,
        'echo "550.54.15, NVIDIA A100-SXM4-80GB, 81920 MiB"; echo "550.54.15, NVIDIA L4, 23034 MiB"',
        monkeypatch,
    )
    assert doctor.nvidia_smi() == ("550.54.15", ("NVIDIA A100-SXM4-80GB, 81920 MiB", "NVIDIA L4, 23034 MiB"))


def test_nvidia_smi_failing_or_absent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_nvidia_smi(
        tmp_path,
        'echo "NVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA driver."; exit 9',
        monkeypatch,
    )
    driver, gpus = doctor.nvidia_smi()
    assert driver.startswith("unavailable: NVIDIA-SMI has failed") and gpus == ()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert doctor.nvidia_smi() == ("none", ())


class _FakeContext:
    info = {"GL_RENDERER": "NVIDIA A100-SXM4-80GB/PCIe/SSE2"}
    released = False

    def release(self) -> None:
        _FakeContext.released = True


def test_gl_renderer_tries_egl_then_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    tried = []

    def egl_broken(**kwargs):
        tried.append(kwargs.get("backend"))
        if kwargs.get("backend") == "egl":
            raise Exception("eglGetDisplay failed")  # moderngl's own exception type
        return _FakeContext()

    monkeypatch.setattr(moderngl, "create_standalone_context", egl_broken)
    assert doctor.gl_renderer() == "NVIDIA A100-SXM4-80GB/PCIe/SSE2"
    assert tried == ["egl", None] and _FakeContext.released

    def no_gl(**kwargs):
        raise Exception("libGL.so.1: cannot open shared object file")

    monkeypatch.setattr(moderngl, "create_standalone_context", no_gl)
    assert doctor.gl_renderer() == (
        "unavailable: egl: libGL.so.1: cannot open shared object file; "
        "default: libGL.so.1: cannot open shared object file"
    )


def test_environment_on_a_cuda_device(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The CUDA-only paths, with torch.cuda's answers stubbed (no GPU here)."""

    props = types.SimpleNamespace(name="NVIDIA L4", total_memory=22 * 2**30)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: props)
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    monkeypatch.setattr(doctor, "nvidia_smi", lambda: ("550.54.15", ("NVIDIA L4, 23034 MiB",)))
    monkeypatch.setattr(doctor, "gl_renderer", lambda: "llvmpipe (LLVM 15.0.6, 256 bits)")
    env = doctor.environment(torch.device("cuda", 0), torch.bfloat16)
    assert (env.device, env.dtype, env.driver, env.gpu, env.bf16) == (
        "cuda:0",
        "bfloat16",
        "550.54.15",
        "NVIDIA L4, 22.0 GiB",
        True,
    )
    assert "OpenGL renders on the CPU (llvmpipe)" in caplog.text


def test_meter_times_parts_and_reads_the_peak_once_per_stage(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device: calls.append("reset"))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device: calls.append("sync"))
    peaks = iter([3 * 2**30, 5 * 2**30])
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: next(peaks))
    meter = doctor._Meter(torch.device("cuda", 0))
    with meter.time("run"):
        pass
    with meter.time("run"):
        pass
    meter.take_peak()
    meter.take_peak()  # work after the first reading does not count
    assert calls == ["reset", "sync", "sync", "sync", "sync"]
    assert meter.peak_bytes == 3 * 2**30 and meter.seconds["run"] >= 0


# ------------------------------------------------------------------------------ bf16 check
def test_bf16_difference_leaves_the_loaded_encoder_untouched(tiny_root: Path) -> None:
    folder = tiny_root / "sam-3d-body-dinov3"
    body = load_folder(folder)
    before = {k: v.clone() for k, v in body.net.backbone.state_dict().items()}
    image = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    K = np.array([[150.0, 0, 64], [0, 150.0, 48], [0, 0, 1]])
    rel = doctor.backbone_bf16_difference(body, image, np.array([30.0, 10, 90, 90]), K)
    assert 0 < rel < doctor.BF16_REL_DIFF.high, "bf16 rounds, but only a little"
    after = body.net.backbone.state_dict()
    assert all(after[k].dtype == v.dtype and after[k].equal(v) for k, v in before.items())


# ---------------------------------------------------------------------------- the command
def _doctor(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["doctor", "--device", "cpu", "--frames", str(FRAMES), *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_doctor_on_tiny_checkpoints(
    tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "reports" / "doctor.json"
    code, out, err = _doctor(["--set", f"paths.ckpt_root={tiny_root}", "--json", str(report)], capsys)
    assert code == 0, out + err
    assert doctor.TINY_BANNER in out and "the figures are meaningless" in out
    assert str(doctor.DEFAULT_VIDEO) in out and probe(doctor.DEFAULT_VIDEO).n_frames == 300
    table = out.split("stage ", 1)[1].split("Checks", 1)[0]
    for stage in (doctor.STAGE_SAM3, doctor.STAGE_MOGE, doctor.STAGE_BODY):
        (line,) = [row for row in table.splitlines() if row.startswith(stage)]
        assert " ok " in line and " n/a " in line, line
    assert "ms/frame" in table and "ms/person-frame" in table and "18439 vertices" in table
    assert "device          cpu" in out and "NVIDIA driver" in out and "renderer" in out
    assert "memory plan     resident (runtime.offload=auto): the networks run on the CPU" in out

    data = json.loads(report.read_text())
    assert data["ok"] is True and data["tiny_checkpoints"] is True and data["judged"] is False
    assert data["video"]["frames"] == FRAMES and data["video"]["width"] == 768
    assert set(data["environment"]) == {f.name for f in dataclasses.fields(doctor.Environment)}
    assert data["environment"]["device"] == "cpu" and data["environment"]["driver"]
    figures = data["figures"]
    assert set(figures) == {f.name for f in dataclasses.fields(Figures)}
    assert figures["amodal_iou"] is None, "completion is off: not measured, not judged"
    assert all(v is not None for k, v in figures.items() if k != "amodal_iou"), figures
    assert figures["vertices"] == 18439 and figures["people"] >= 1
    assert 0 < figures["mask_area"]["min"] <= figures["mask_area"]["max"] <= 1
    assert figures["focal_diagonal"] == pytest.approx(figures["focal_px"] / np.hypot(768, 576))
    assert figures["depth_m"]["min"] <= figures["depth_m"]["median"] <= figures["depth_m"]["max"]
    assert [s["stage"] for s in data["stages"]] == [doctor.STAGE_SAM3, doctor.STAGE_MOGE, doctor.STAGE_BODY]
    for s in data["stages"]:
        assert s["status"] == "ok" and s["load_s"] > 0 and s["speed_ms"] > 0 and s["peak_gpu_bytes"] is None
    assert [c["name"] for c in data["checks"]] == [c.name for c in check_figures(GOOD)]
    assert all({"value", "range", "low", "high", "ok"} <= set(c) for c in data["checks"])


def test_doctor_checks_occlusion_completion_when_it_is_on(
    tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "doctor.json"
    small = [
        "completion.detection_size=64",
        "completion.completion_size=64",
        "completion.num_inference_steps=2",
    ]
    sets = [f"paths.ckpt_root={tiny_root}", "completion.enable=true", *small]
    code, out, err = _doctor([arg for s in sets for arg in ("--set", s)] + ["--json", str(report)], capsys)
    assert code == 0, out + err
    (line,) = [row for row in out.splitlines() if row.startswith(doctor.STAGE_COMPLETION)]
    assert " ok " in line and "ms/UNet frame-eval" in line and "UNet frame-evaluations at 64x" in line
    data = json.loads(report.read_text())
    assert [s["stage"] for s in data["stages"]][-1] == doctor.STAGE_COMPLETION
    assert 0.0 <= data["figures"]["amodal_iou"] <= 1.0
    assert data["checks"][-1]["name"] == "median IoU of visible and amodal masks"
    plan = data["memory"]
    assert plan["mode"] == "resident" and plan["setting"] == "auto" and plan["device"] == "cpu"
    assert set(plan["model_bytes"]) == {"SAM-3", "MoGe-2", "SAM-3D-Body", *plan["offloadable"]}
    assert len(plan["offloadable"]) == 3 and all(b > 0 for b in plan["model_bytes"].values())


def test_missing_sam3dbody_checkpoint_exits_1_naming_it(
    tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    absent = tmp_path / "nowhere" / "model.ckpt"
    report = tmp_path / "doctor.json"
    code, out, err = _doctor(
        [
            "--set",
            f"paths.ckpt_root={tiny_root}",
            "--set",
            f"sam_3d_body.ckpt_path={absent}",
            "--json",
            str(report),
        ],
        capsys,
    )
    assert code == 1
    (line,) = [row for row in out.splitlines() if row.startswith(doctor.STAGE_BODY)]
    assert "MISSING" in line and f"SAM-3D-Body weights at {absent}: not found" in line
    assert f"python scripts/setup.py --ckpt-root {tiny_root}" in line
    assert f"SAM-3D-Body MISSING: SAM-3D-Body weights at {absent}: not found" in err
    assert "was not measured" not in err, "figures of a model that did not run are not repeated"
    data = json.loads(report.read_text())
    assert data["ok"] is False and [s["status"] for s in data["stages"]] == ["ok", "ok", "MISSING"]
    assert data["figures"]["vertices"] is None and data["figures"]["people"] >= 1


def test_a_model_failing_to_load_is_reported_and_the_others_still_run(
    tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "model.pt"
    broken.write_bytes(b"not a torch file")
    report = tmp_path / "doctor.json"
    code, out, err = _doctor(
        [
            "--set",
            f"paths.ckpt_root={tiny_root}",
            "--set",
            f"sam3.ckpt_path={tmp_path / 'no_sam3'}",
            "--set",
            f"camera.ckpt_path={broken}",
            "--json",
            str(report),
        ],
        capsys,
    )
    assert code == 1
    data = json.loads(report.read_text())
    sam3, moge, body = data["stages"]
    assert sam3["status"] == "MISSING" and f"at {tmp_path / 'no_sam3'}: not found" in sam3["detail"]
    assert moge["status"] == "FAILED" and "CheckpointError: cannot read MoGe-2 checkpoint" in moge["detail"]
    assert f"{doctor.STAGE_MOGE} FAILED: CheckpointError" in err
    # SAM-3D-Body still runs: on a whole-frame box, with the default focal (image diagonal)
    assert body["status"] == "ok" and "1 person-frame of a whole-frame box" in body["detail"]
    assert data["figures"]["vertices"] == 18439 and data["figures"]["focal_px"] is None


def test_real_checkpoints_are_judged_and_an_implausible_figure_exits_1(
    tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The tiny files without their marker stand in for real weights: the ranges are judged.
    root = tmp_path / "unmarked"
    shutil.copytree(tiny_root, root, copy_function=os.link)
    for marker in root.rglob(TINY_MARKER):
        marker.unlink()
    report = tmp_path / "doctor.json"
    code, out, err = _doctor(
        ["--set", f"paths.ckpt_root={root}", "--set", "sam3.detection_threshold=1.0", "--json", str(report)],
        capsys,
    )
    assert code == 1
    assert doctor.TINY_BANNER not in out
    assert "people detected = 0 is outside its plausible range >= 1" in err
    assert "mask area fraction (smallest person) was not measured" in err
    assert "FAIL  people detected = 0 (range >= 1)" in out
    data = json.loads(report.read_text())
    assert data["judged"] is True and data["tiny_checkpoints"] is False
    checks = {c["name"]: c for c in data["checks"]}
    assert checks["people detected"] == {
        "name": "people detected",
        "value": 0,
        "range": ">= 1",
        "low": 1,
        "high": None,
        "ok": False,
    }
    assert checks["MHR vertex count"]["ok"] is True
    body = data["stages"][2]
    assert body["status"] == "ok" and "whole-frame box" in body["detail"]


def test_bad_video_or_config_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "x.mp4"
    bad.write_text("nope")
    code, _, err = _doctor(["--input_video", str(bad)], capsys)
    assert code == 2 and "cannot be read as a video" in err
    code, _, err = _doctor(["--set", "video.crf=100"], capsys)
    assert code == 2 and "video.crf = 100 is out of range" in err
    code, _, err = _doctor(["--device", "cuda:7"], capsys)
    assert code == 2 and "runtime.device='cuda:7' but CUDA is not available here" in err
    with pytest.raises(SystemExit):
        main(["doctor", "--frames", "0"])
    assert "0 is not a positive number of frames" in capsys.readouterr().err
