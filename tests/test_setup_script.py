from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from body4d.config import DEFAULT_CONFIG, load_config
from body4d.examples import load_examples
from models.moge import CHECKPOINT_FILE
from models.sam3 import SNAPSHOT_FILES
from tests.conftest import FileServer
from tests.test_examples import entry, examples_config

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


def _copy_tiny(tiny_ckpt_root: Path, root: Path, *folders: str) -> None:
    """Real tiny checkpoints (the released layouts, random weights) copied into ``root``."""
    for folder in folders:
        shutil.copytree(tiny_ckpt_root / folder, root / folder)


def test_offline_setup_writes_the_user_config_skips_existing_and_fails_loudly(
    tmp_path: Path, tiny_ckpt_root: Path
) -> None:
    shipped = DEFAULT_CONFIG.read_bytes()
    home = tmp_path / "home"
    root = tmp_path / "ckpts"
    _copy_tiny(tiny_ckpt_root, root, "sam-3d-body-dinov3")
    res = _run(["--ckpt-root", str(root), "--no-examples"], home)
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


def test_setup_succeeds_when_everything_is_present(tmp_path: Path, tiny_ckpt_root: Path) -> None:
    root = tmp_path / "ckpts"
    _copy_tiny(tiny_ckpt_root, root, "sam3", "sam-3d-body-dinov3", "moge-2-vitl-normal")
    res = _run(["--ckpt-root", str(root), "--no-examples"], tmp_path / "home")
    assert res.returncode == 0, res.stderr
    log = res.stderr + res.stdout
    assert "[SKIP] facebook/sam3" in log and "[SKIP] Ruicheng/moge-2-vitl-normal" in log
    assert "All checkpoints present." in log
    assert "setup complete: every checkpoint verified" in log
    assert "tiny test checkpoint: its published size and SHA-256 do not apply" in log


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


def _served(server: FileServer, name: str, data: bytes) -> str:
    """Put ``data`` on the local server as ``name``; returns its URL."""
    (server.folder / name).write_bytes(data)
    return f"{server.url}/{name}"


def test_fetch_example_streams_checks_and_skips_a_good_copy(
    setup: ModuleType, file_server: FileServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = os.urandom(3 * setup.DOWNLOAD_CHUNK + 123)  # several chunks
    cfg = examples_config(
        tmp_path, [entry("downloads/clip.mp4", data, _served(file_server, "clip.mp4", data))]
    )
    (example,) = load_examples(cfg.app.examples_list)
    target = example.path(cfg)
    with caplog.at_level(logging.INFO, logger="body4d.setup"):
        assert setup.fetch_example(example, target) is None
        assert target.read_bytes() == data
        assert hashlib.sha256(target.read_bytes()).hexdigest() == example.sha256
        assert file_server.requests == ["/clip.mp4"]
        assert setup.fetch_example(example, target) is None
    assert file_server.requests == ["/clip.mp4"], "a copy with the right hash is not downloaded again"
    assert f"[SKIP] example Clip already in {target}" in caplog.text
    target.write_bytes(b"stale")
    assert setup.fetch_example(example, target) is None
    assert target.read_bytes() == data and len(file_server.requests) == 2, "a wrong copy is replaced"
    assert sorted(p.name for p in target.parent.iterdir()) == ["clip.mp4"], "no temporary file is left"


def test_a_download_with_another_hash_is_refused_and_not_kept(
    setup: ModuleType, file_server: FileServer, tmp_path: Path
) -> None:
    url = _served(file_server, "changed.mp4", b"what the server has")
    cfg = examples_config(tmp_path, [entry("downloads/changed.mp4", b"what the list expects", url)])
    (example,) = load_examples(cfg.app.examples_list)
    reason = setup.fetch_example(example, example.path(cfg))
    actual = hashlib.sha256(b"what the server has").hexdigest()
    assert reason is not None
    assert reason.startswith(f"{url} has sha256 {actual}, expected {example.sha256} (not kept)")
    assert list((tmp_path / "examples" / "downloads").iterdir()) == [], "neither the clip nor a .part file"


def test_fetch_examples_reports_each_unreachable_clip(
    setup: ModuleType, file_server: FileServer, tmp_path: Path
) -> None:
    cfg = examples_config(
        tmp_path,
        [
            entry("shipped.mp4", b"not downloaded"),
            entry("downloads/gone.mp4", b"gone", f"{file_server.url}/gone.mp4"),
            entry("downloads/ok.mp4", b"ok", _served(file_server, "ok.mp4", b"ok")),
        ],
    )
    failures = setup.fetch_examples(cfg)
    assert len(failures) == 1
    assert failures[0].startswith(
        f"{file_server.url}/gone.mp4 could not be downloaded (HTTPError: HTTP Error 404"
    )
    assert (tmp_path / "examples" / "downloads" / "ok.mp4").read_bytes() == b"ok"
    assert not (tmp_path / "examples" / "shipped.mp4").exists(), "a shipped clip is never fetched"
    assert file_server.requests == ["/gone.mp4", "/ok.mp4"]
    bad = cfg.replace(**{"app.examples_list": str(tmp_path / "none.yaml")})
    (problem,) = setup.fetch_examples(bad)
    assert "cannot read the examples list" in problem


def _examples_settings(tmp_path: Path, server: FileServer, name: str, data: bytes) -> Path:
    """A config file whose examples list holds one clip served by ``server``."""
    listed = tmp_path / "list.yaml"
    listed.write_text(
        yaml.safe_dump({"examples": [entry(f"downloads/{name}", data, _served(server, name, data))]})
    )
    mine = tmp_path / "mine.yaml"
    mine.write_text(f"app:\n  examples_list: {listed}\n  examples_dir: {tmp_path / 'gallery'}\n")
    return mine


def test_examples_flag_fetches_only_the_clips_and_setup_fetches_them_by_default(
    file_server: FileServer, tmp_path: Path
) -> None:
    mine = _examples_settings(tmp_path, file_server, "walk.mp4", b"a walk")
    clip = tmp_path / "gallery" / "downloads" / "walk.mp4"
    home = tmp_path / "home"
    res = _run(["--examples", "--config", str(mine)], home)
    assert res.returncode == 0, res.stderr
    assert clip.read_bytes() == b"a walk"
    assert f"example clips in {tmp_path / 'gallery'}" in res.stderr
    assert not (home / ".config").exists(), "--examples writes no config"
    assert "ckpt_root" not in mine.read_text()
    clip.unlink()
    res = _run(["--ckpt-root", str(tmp_path / "ck"), "--config", str(mine), "--no-examples"], home)
    assert res.returncode == 1 and not clip.exists(), "checkpoints are missing; --no-examples fetched nothing"
    res = _run(["--ckpt-root", str(tmp_path / "ck"), "--config", str(mine)], home)
    assert res.returncode == 1, "checkpoints are still missing"
    assert clip.read_bytes() == b"a walk", "the full setup fetches the examples too"
    assert f"[GET ] {file_server.url}/walk.mp4 -> {clip}" in res.stderr


def test_examples_flag_refuses_the_options_of_the_full_setup(tmp_path: Path) -> None:
    res = _run(["--examples", "--ckpt-root", str(tmp_path)], tmp_path / "home")
    assert res.returncode == 2 and "--examples only fetches the example clips" in res.stderr
    res = _run(["--examples", "--no-examples"], tmp_path / "home")
    assert res.returncode == 2 and "not allowed with argument" in res.stderr
    res = _run([], tmp_path / "home")
    assert res.returncode == 2 and "--ckpt-root is required (or --check to verify, --examples" in res.stderr
