from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from body4d.cli import main


def test_probe_prints_json(vtest: Path, capsys) -> None:
    assert main(["probe", str(vtest)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["frames"] == 795 and out["fps"] == 10.0 and out["width"] == 768 and out["height"] == 576
    assert out["codec"] == "msmpeg4" and out["duration"] == 79.5


def test_probe_bad_input_exit_2(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "x.mp4"
    bad.write_text("nope")
    assert main(["probe", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "cannot be read as a video" in err


def test_console_script_installed(vtest: Path) -> None:
    exe = Path(sys.executable).parent / "body4d"
    res = subprocess.run([str(exe), "probe", str(vtest)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["frames"] == 795


def test_check_reports_missing_checkpoints(tmp_path: Path, capsys) -> None:
    assert main(["check", "--set", f"paths.ckpt_root={tmp_path}"]) == 2
    out = capsys.readouterr().out
    assert f"[MISSING] SAM-3 (facebook/sam3): {tmp_path}/sam3" in out
    assert f"python scripts/setup.py --ckpt-root {tmp_path}" in out


def test_check_bad_config_exit_2(capsys) -> None:
    assert main(["check", "--set", "video.crf=100"]) == 2
    assert "video.crf = 100 is out of range" in capsys.readouterr().err
