from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

from body4d.config import DEFAULT_CONFIG, load_config
from models.moge import CHECKPOINT_FILE
from models.sam3 import SNAPSHOT_FILES

SETUP = Path(__file__).resolve().parents[1] / "scripts" / "setup.py"
BODY_FILES = ("model.ckpt", "model_config.yaml", "assets/mhr_model.pt")


@pytest.fixture(scope="module")
def setup() -> Iterator[ModuleType]:
    """scripts/setup.py imported as a module (it is not part of the package)."""
    spec = importlib.util.spec_from_file_location("body4d_setup_script", SETUP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up while being created
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def _run(args: list[str], home: Path, **extra_env: str) -> subprocess.CompletedProcess:
    """Run setup offline with ``home`` as HOME and no BODY4D_* / XDG / HF_TOKEN from the caller."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("BODY4D_") and k not in ("XDG_CONFIG_HOME", "HF_TOKEN")
    }
    env |= {"HF_HUB_OFFLINE": "1", "HF_HOME": str(home / "hf"), "HOME": str(home), **extra_env}
    return subprocess.run(
        [sys.executable, str(SETUP), *args], capture_output=True, text=True, env=env, timeout=120
    )


def _write_files(folder: Path, names: Iterable[str]) -> None:
    """Non-empty stand-ins for checkpoint files ``folder/name``."""
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"x")


def test_offline_setup_writes_the_user_config_skips_existing_and_fails_loudly(tmp_path: Path) -> None:
    shipped = DEFAULT_CONFIG.read_bytes()
    home = tmp_path / "home"
    root = tmp_path / "ckpts"
    _write_files(root / "sam-3d-body-dinov3", BODY_FILES)
    res = _run(["--ckpt-root", str(root)], home)
    assert res.returncode == 1
    log = res.stderr + res.stdout
    user = home / ".config" / "body4d" / "body4d.yaml"
    assert f"config {user}: paths.ckpt_root = {root}" in log
    assert "[SKIP] facebook/sam-3d-body-dinov3" in log
    assert "[BLOCKED] facebook/sam3" in log
    assert "[BLOCKED] Ruicheng/moge-2-vitl-normal" in log
    assert "[MISSING] SAM-3 (facebook/sam3)" in log
    assert "[ok] MHR body model" in log
    assert "the app reads" not in log, "the app finds the user config by itself"
    assert DEFAULT_CONFIG.read_bytes() == shipped, "the shipped config is never written"
    cfg = load_config(env={"HOME": str(home)})
    assert cfg.paths.ckpt_root == str(root)
    assert cfg.sam3.ckpt_path == str(root / "sam3")


def test_setup_succeeds_when_everything_is_present(tmp_path: Path) -> None:
    root = tmp_path / "ckpts"
    _write_files(root / "sam3", SNAPSHOT_FILES)
    _write_files(root / "sam-3d-body-dinov3", BODY_FILES)
    _write_files(root / "moge-2-vitl-normal", [CHECKPOINT_FILE])
    res = _run(["--ckpt-root", str(root)], tmp_path / "home")
    assert res.returncode == 0, res.stderr
    log = res.stderr + res.stdout
    assert "[SKIP] facebook/sam3" in log and "[SKIP] Ruicheng/moge-2-vitl-normal" in log
    assert "All checkpoints present." in log


def test_explicit_config_keeps_its_keys_and_comments_and_says_how_the_app_finds_it(tmp_path: Path) -> None:
    mine = tmp_path / "mine.yaml"
    mine.write_text(
        "# my settings\nsam3:\n  redetect_every: 10\npaths:\n  # where they live\n  ckpt_root: /old\n"
    )
    res = _run(
        ["--ckpt-root", str(tmp_path / "ck"), "--config", str(mine), "--no-download"], tmp_path / "home"
    )
    assert res.returncode == 1, "nothing is downloaded, so checkpoints are missing"
    assert f"start it with --config {mine} or export BODY4D_CONFIG={mine}" in res.stderr
    text = mine.read_text()
    assert "# my settings" in text and "# where they live" in text
    cfg = load_config(mine, env={})
    assert cfg.paths.ckpt_root == str(tmp_path / "ck") and cfg.sam3.redetect_every == 10


def test_body4d_config_variable_is_the_default_target(
    setup: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BODY4D_CONFIG", str(tmp_path / "env.yaml"))
    assert setup.target_config(None) == tmp_path / "env.yaml"
    monkeypatch.delenv("BODY4D_CONFIG")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert setup.target_config(None) == tmp_path / "xdg" / "body4d" / "body4d.yaml"
    assert setup.target_config(tmp_path / "x.yaml") == tmp_path / "x.yaml"


def test_the_shipped_config_is_refused(setup: ModuleType) -> None:
    with pytest.raises(SystemExit, match="is the shipped default config, which setup never edits"):
        setup.target_config(DEFAULT_CONFIG)


def test_write_ckpt_root_creates_appends_and_replaces(setup: ModuleType, tmp_path: Path) -> None:
    new = tmp_path / "sub" / "new.yaml"
    setup.write_ckpt_root(new, tmp_path / "a b: c#d")
    assert load_config(new, env={}).paths.ckpt_root == str(tmp_path / "a b: c#d"), "any path survives YAML"
    assert new.read_text().startswith("# body4d user config")
    setup.write_ckpt_root(new, tmp_path / "second")
    assert load_config(new, env={}).paths.ckpt_root == str(tmp_path / "second")
    assert new.read_text().count("\n  ckpt_root:") == 1
    other = tmp_path / "other.yaml"
    other.write_text("video:\n  crf: 20\n")
    setup.write_ckpt_root(other, tmp_path / "ck")
    cfg = load_config(other, env={})
    assert cfg.paths.ckpt_root == str(tmp_path / "ck") and cfg.video.crf == 20
    flow = tmp_path / "flow.yaml"
    flow.write_text("paths: {ckpt_root: /old}\n")
    with pytest.raises(SystemExit, match="write `ckpt_root: .*` under its `paths:` section by hand"):
        setup.write_ckpt_root(flow, tmp_path / "ck")
    assert flow.read_text() == "paths: {ckpt_root: /old}\n"


def test_downloads_follow_the_config_and_the_adapters_file_lists(setup: ModuleType, tmp_path: Path) -> None:
    cfg = load_config(overrides={"paths.ckpt_root": str(tmp_path), "sam3.ckpt_path": "/shared/sam3"}, env={})
    items = {d.repo_id: d for d in setup.downloads(cfg, with_completion=False)}
    assert items["facebook/sam3"].folder == Path("/shared/sam3")
    assert items["facebook/sam3"].files == tuple(SNAPSHOT_FILES)
    assert items["facebook/sam-3d-body-dinov3"].files == BODY_FILES
    assert items["Ruicheng/moge-2-vitl-normal"].files == (CHECKPOINT_FILE,)
    assert items["Ruicheng/moge-2-vitl-normal"].folder == tmp_path / "moge-2-vitl-normal"
    with_completion = setup.downloads(cfg.replace(**{"camera.ckpt_path": ""}), with_completion=True)
    whole = [d for d in with_completion if d.files is None]
    assert [d.folder.name for d in whole] == [
        "diffusion-vas-amodal-segmentation",
        "diffusion-vas-content-completion",
        "depth-anything-v2-large-hf",
    ]
    assert "Ruicheng/moge-2-vitl-normal" not in {d.repo_id for d in with_completion}
