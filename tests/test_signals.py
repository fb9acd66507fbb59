"""Stop signals: ``body4d run`` and the app under SIGTERM (``docker stop``, ``timeout``) and SIGINT (Ctrl-C).

The real CLI runs in a subprocess on tiny checkpoints; the signal arrives while the manifest shows
the masks stage running.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from body4d.video import encode_video
from tests.app_server import serve

REPO = Path(__file__).resolve().parents[1]
# Long enough that the masks stage (SAM-3 detection + propagation) outlasts the signal's delivery.
FRAMES, H, W = 24, 64, 96
# Seconds to wait for a stage to start (model loading on a busy 2-core machine) and to stop.
START_TIMEOUT_S = 90
STOP_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    frames = []
    for t in range(FRAMES):
        f = np.full((H, W, 3), 128, np.uint8)
        f[10:40, 5 + t : 30 + t] = (220, 40, 40)
        f[30:60, 60:90] = (40, 80, 230)
        frames.append(f)
    return encode_video(frames, tmp_path_factory.mktemp("video") / "long.mp4", Fraction(25))


def _stage_running(out: Path, stage: str) -> Path | None:
    """The run folder once its manifest shows ``stage`` running, else None."""
    for manifest in out.glob("*/manifest.json"):
        try:
            stages = json.loads(manifest.read_text())["stages"]
        except (OSError, ValueError):  # being replaced right now
            continue
        if stages.get(stage, {}).get("status") == "running":
            return manifest.parent
    return None


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_run_stopped_by_a_signal_records_the_stage_and_exits_4(
    long_clip: Path, tiny_ckpt_root: Path, tmp_path: Path, signum: signal.Signals
) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "body4d",
            "run",
            "--input_video",
            str(long_clip),
            "--output_dir",
            str(out),
            "--stop-after",
            "masks",
            "--set",
            f"paths.ckpt_root={tiny_ckpt_root}",
            "--set",
            "runtime.device=cpu",
            "--set",
            "runtime.dtype=fp32",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the signal goes to it all, as Ctrl-C does
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while (root := _stage_running(out, "masks")) is None:
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the masks stage never started"
            time.sleep(0.05)
        os.killpg(proc.pid, signum)
        stdout, stderr = proc.communicate(timeout=STOP_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 4, stderr
    assert "Traceback" not in stderr and stdout == ""
    last = stderr.strip().splitlines()[-1]
    name = signal.Signals(signum).name
    assert last == (
        f"body4d run: interrupted by {name} during stage masks: finished stages are kept in {root}; "
        f"continue with --resume {root.name}"
    )
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["stages"]["masks"]["status"] == "interrupted"
    assert manifest["stages"]["masks"]["error"] == f"Interrupted: {name}"
    leftovers = [p.relative_to(root) for p in root.rglob("*") if p.name.endswith(".part")]
    assert leftovers == []
    assert not (root / "masks").exists() or not any((root / "masks").iterdir())
    assert not any((root / ".scratch").glob("*"))


def test_app_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    with serve(tmp_path, tmp_path / "no_checkpoints") as app:
        proc = app["proc"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=STOP_TIMEOUT_S) == 0
    log = app["log"].read_text()
    assert "SIGTERM: server stopped" in log and "Traceback" not in log
