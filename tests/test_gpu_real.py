"""Real weights on a GPU (skipped elsewhere): ``body4d doctor`` and the whole recipe on the real street clip.

Run on a machine with CUDA and the checkpoints: ``BODY4D_CKPT_ROOT=/data/checkpoints pytest -m gpu``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from body4d.checkpoints import checkpoint_report
from body4d.cli import main
from body4d.config import load_config

pytestmark = pytest.mark.gpu


def _real_checkpoints() -> str | None:
    root = os.environ.get("BODY4D_CKPT_ROOT")
    if not root or not torch.cuda.is_available():
        return None
    report = checkpoint_report(load_config(overrides=[f"paths.ckpt_root={root}"]))
    return root if report.ok and not report.uses_tiny else None


# Read once at import: the tests' config isolation removes BODY4D_* from the environment.
REAL_ROOT = _real_checkpoints()


@pytest.mark.skipif(REAL_ROOT is None, reason="needs CUDA and real checkpoints in BODY4D_CKPT_ROOT")
def test_real_models_on_the_street_clip(vtest: Path, tmp_path: Path, capsys) -> None:
    root = REAL_ROOT
    code = main(
        [
            "run",
            "--input_video",
            str(vtest),
            "--output_dir",
            str(tmp_path),
            "--set",
            f"paths.ckpt_root={root}",
            "--set",
            "video.max_frames=0",
            "--set",
            "sam3.redetect_every=30",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(summary["obj_ids"]) >= 3, "the street clip has several pedestrians"
    run = Path(summary["run_dir"])
    camera = json.loads((run / "camera.json").read_text())
    assert camera["source"] == "moge" and 300 < camera["K"][0][0] < 3000
    with np.load(run / "bodies.npz") as bodies:
        for obj_id in bodies["obj_ids"]:
            cam_t = bodies[f"id{obj_id}/cam_t"][bodies[f"id{obj_id}/valid"]]
            assert np.all((cam_t[:, 2] > 1.0) & (cam_t[:, 2] < 60.0)), (
                "people stand metres in front of the camera"
            )


@pytest.mark.skipif(REAL_ROOT is None, reason="needs CUDA and real checkpoints in BODY4D_CKPT_ROOT")
def test_doctor_passes_on_the_gpu(tmp_path: Path, capsys) -> None:
    report = tmp_path / "doctor.json"
    code = main(["doctor", "--set", f"paths.ckpt_root={REAL_ROOT}", "--json", str(report)])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    data = json.loads(report.read_text())
    assert data["judged"] is True and data["environment"]["device"].startswith("cuda")
    assert [s["status"] for s in data["stages"]] == ["ok", "ok", "ok"]
    failed = [c for c in data["checks"] if not c["ok"]]
    assert not failed, f"implausible figures with the real weights: {failed}"


def _completion_checkpoints() -> bool:
    if REAL_ROOT is None:
        return False
    cfg = load_config(overrides=[f"paths.ckpt_root={REAL_ROOT}", "completion.enable=true"])
    report = checkpoint_report(cfg)
    return report.ok and not report.uses_tiny


@pytest.mark.skipif(not _completion_checkpoints(), reason="needs CUDA and the completion checkpoints too")
def test_doctor_with_occlusion_completion_on_the_gpu(tmp_path: Path, capsys) -> None:
    """The released Diffusion-VAS folders load strictly, and the amodal masks of the street clip's
    (mostly visible) people agree with their visible masks."""
    report = tmp_path / "doctor.json"
    code = main(
        [
            "doctor",
            "--set",
            f"paths.ckpt_root={REAL_ROOT}",
            "--set",
            "completion.enable=true",
            "--json",
            str(report),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, out + err
    data = json.loads(report.read_text())
    assert [s["status"] for s in data["stages"]] == ["ok", "ok", "ok", "ok"]
    assert data["figures"]["amodal_iou"] >= 0.5
