"""body4d.checkpoints.checkpoint_report: "present" means every file the loader reads is there."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from body4d.checkpoints import CheckpointStatus, checkpoint_report
from body4d.config import Config, load_config
from body4d.testing.tiny_moge import MOGE_DIR, write_tiny_moge
from models.moge import CHECKPOINT_FILE
from models.sam3 import META_CHECKPOINT, SNAPSHOT_FILES


def _cfg(root: Path) -> Config:
    return load_config(overrides={"paths.ckpt_root": str(root)}, env={})


def _status(cfg: Config, name: str) -> CheckpointStatus:
    return next(item for item in checkpoint_report(cfg).items if item.name == name)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory, sam3_ckpt_root: Path) -> Path:
    """A checkpoint root with the tiny SAM-3 and MoGe-2 checkpoints (SAM-3D-Body absent)."""
    root = tmp_path_factory.mktemp("registry")
    shutil.copytree(sam3_ckpt_root / "sam3", root / "sam3")
    write_tiny_moge(root)
    return root


def test_complete_snapshots_are_present_and_flagged_tiny(tiny_root: Path) -> None:
    cfg = _cfg(tiny_root)
    for name in ("SAM-3 (facebook/sam3)", "MoGe-2 ViT-L normal"):
        status = _status(cfg, name)
        assert status.present and status.tiny and status.problem == ""
    report = checkpoint_report(cfg)
    assert not report.ok  # SAM-3D-Body is not there
    assert {i.name for i in report.missing} == {"SAM-3D-Body weights", "SAM-3D-Body config", "MHR body model"}


def test_download_debris_only_is_missing_with_every_file_named(tmp_path: Path) -> None:
    debris = tmp_path / "sam3" / ".cache" / "huggingface" / "download"
    debris.mkdir(parents=True)
    (debris / "config.json.metadata").write_text("{}")
    (debris / "processor_config.json").write_text("{}")  # a JSON file, but inside the debris
    status = _status(_cfg(tmp_path), "SAM-3 (facebook/sam3)")
    assert not status.present and not status.tiny
    assert status.problem == f"incomplete, missing {', '.join(SNAPSHOT_FILES)}"


def test_meta_checkpoint_only_is_missing_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "sam3").mkdir()
    (tmp_path / "sam3" / META_CHECKPOINT).write_bytes(b"Meta's own format")
    cfg = _cfg(tmp_path)
    status = _status(cfg, "SAM-3 (facebook/sam3)")
    assert not status.present
    assert "sam3.pt there is Meta's own checkpoint format, which transformers cannot load" in status.problem
    text = checkpoint_report(cfg).text()
    assert f"[MISSING] SAM-3 (facebook/sam3): {tmp_path}/sam3" in text
    assert f"    {status.problem}" in text.splitlines()
    assert f"python scripts/setup.py --ckpt-root {tmp_path}" in text


@pytest.mark.parametrize("name", list(SNAPSHOT_FILES))
def test_one_missing_sam3_file_makes_it_missing(name: str, tiny_root: Path, tmp_path: Path) -> None:
    shutil.copytree(tiny_root / "sam3", tmp_path / "sam3")
    (tmp_path / "sam3" / name).unlink()
    status = _status(_cfg(tmp_path), "SAM-3 (facebook/sam3)")
    assert not status.present and status.problem == f"incomplete, missing {name}"


def test_moge_folder_without_its_file_is_missing(tmp_path: Path) -> None:
    (tmp_path / MOGE_DIR / ".cache").mkdir(parents=True)
    status = _status(_cfg(tmp_path), "MoGe-2 ViT-L normal")
    assert not status.present and status.problem == "not found"
    assert status.path == tmp_path / MOGE_DIR / CHECKPOINT_FILE
    (tmp_path / MOGE_DIR / CHECKPOINT_FILE).touch()
    assert _status(_cfg(tmp_path), "MoGe-2 ViT-L normal").problem == "empty file (an interrupted download?)"
