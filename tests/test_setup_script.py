from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from body4d.config import DEFAULT_CONFIG, load_config
from models.sam3 import SNAPSHOT_FILES

SETUP = Path(__file__).resolve().parents[1] / "scripts" / "setup.py"


def _run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    env.pop("HF_TOKEN", None)
    return subprocess.run(
        [sys.executable, str(SETUP), *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_offline_setup_rewrites_config_skips_existing_and_fails_loudly(tmp_path: Path) -> None:
    cfg_path = tmp_path / "body4d.yaml"
    shutil.copy(DEFAULT_CONFIG, cfg_path)
    root = tmp_path / "ckpts"
    body = root / "sam-3d-body-dinov3"
    (body / "assets").mkdir(parents=True)
    for rel in ("model.ckpt", "model_config.yaml", "assets/mhr_model.pt"):
        (body / rel).write_bytes(b"x")
    res = _run(["--ckpt-root", str(root), "--config", str(cfg_path)], tmp_path)
    assert res.returncode == 1
    log = res.stderr + res.stdout
    assert "[SKIP] facebook/sam-3d-body-dinov3" in log
    assert "[BLOCKED] facebook/sam3" in log
    assert "[BLOCKED] Ruicheng/moge-2-vitl-normal" in log
    assert "[MISSING] SAM-3 (facebook/sam3)" in log
    assert "[ok] MHR body model" in log
    cfg = load_config(cfg_path, env={})
    assert cfg.paths.ckpt_root == str(root)
    assert "# Folder holding every checkpoint" in cfg_path.read_text(), "comments must survive the rewrite"


def test_setup_succeeds_when_everything_is_present(tmp_path: Path) -> None:
    cfg_path = tmp_path / "body4d.yaml"
    shutil.copy(DEFAULT_CONFIG, cfg_path)
    root = tmp_path / "ckpts"
    (root / "sam3").mkdir(parents=True)
    for name in SNAPSHOT_FILES:
        (root / "sam3" / name).write_text("{}")
    for rel in (
        "sam-3d-body-dinov3/model.ckpt",
        "sam-3d-body-dinov3/model_config.yaml",
        "sam-3d-body-dinov3/assets/mhr_model.pt",
        "moge-2-vitl-normal/model.pt",
    ):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    (root / "sam3" / ".complete").write_text("ok")
    res = _run(["--ckpt-root", str(root), "--config", str(cfg_path)], tmp_path)
    assert res.returncode == 0, res.stderr
    assert "All checkpoints present." in res.stderr + res.stdout
