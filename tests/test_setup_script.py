"""scripts/setup.py: the user config, the example clips, and checkpoints installed from a local fake
Hub (tests/fake_hub.py) or a mirror, then verified; the real tiny checkpoints are what is served."""

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

import fsspec
import pytest
import torch
import yaml

from body4d.checkpoint_verify import NAMES, DownloadRecord, checkpoints
from body4d.config import DEFAULT_CONFIG, load_config
from body4d.examples import file_sha256, load_examples
from models.errors import TINY_MARKER
from tests.conftest import FileServer
from tests.fake_hub import FakeHub, FakeHubServer
from tests.test_examples import entry, examples_config

SETUP = Path(__file__).resolve().parents[1] / "scripts" / "setup.py"
# Hub repository -> its folder under the checkpoint root (and among the session's tiny checkpoints).
REPOS = {
    "facebook/sam3": "sam3",
    "facebook/sam-3d-body-dinov3": "sam-3d-body-dinov3",
    "Ruicheng/moge-2-vitl-normal": "moge-2-vitl-normal",
    "kaihuac/diffusion-vas-amodal-segmentation": "diffusion-vas-amodal-segmentation",
    "kaihuac/diffusion-vas-content-completion": "diffusion-vas-content-completion",
    "depth-anything/Depth-Anything-V2-Large-hf": "depth-anything-v2-large-hf",
}
# What the config file of in-process runs holds before setup writes paths.ckpt_root into it.
CONFIG_TEXT = "# written by setup\n"
# Bytes of the tiny model.ckpt (48,339,183) sent before the fake Hub drops the connection.
CUT = 5_000_000


@pytest.fixture(scope="module")
def setup() -> Iterator[ModuleType]:
    """scripts/setup.py imported as a module (it is not part of the package)."""
    spec = importlib.util.spec_from_file_location("body4d_setup_script", SETUP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


@pytest.fixture
def hub(tiny_ckpt_root: Path) -> Iterator[FakeHub]:
    """The fake Hub serving every tiny checkpoint as its real repository."""
    with FakeHubServer(FakeHub({repo: tiny_ckpt_root / folder for repo, folder in REPOS.items()})) as served:
        yield served


def _run(args: list[str], home: Path, **extra_env: str) -> subprocess.CompletedProcess:
    """Run setup offline with ``home`` as HOME and no BODY4D_* / XDG / HF_TOKEN from the caller."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("BODY4D_", "HF_")) and k != "XDG_CONFIG_HOME"
    }
    env |= {"HF_HUB_OFFLINE": "1", "HF_HOME": str(home / "hf"), "HOME": str(home), **extra_env}
    return subprocess.run(
        [sys.executable, str(SETUP), *args], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.fixture
def run(
    setup: ModuleType,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
):
    """``run(*args, hub=None) -> (exit code, table, log)``: setup's ``main`` in this process with
    ``--config tmp_path/body4d.yaml`` (created holding one comment), against ``hub`` (a `FakeHub`)
    when given, with no token."""
    (tmp_path / "body4d.yaml").write_text(CONFIG_TEXT)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_TOKEN_PATH", str(tmp_path / "no-token"))

    def _main(*args: str, hub: FakeHub | None = None) -> tuple[int, str, str]:
        if hub is not None:  # what HF_ENDPOINT sets when huggingface_hub is imported
            monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", hub.url)
            template = f"{hub.url}/{{repo_id}}/resolve/{{revision}}/{{filename}}"
            monkeypatch.setattr("huggingface_hub.constants.HUGGINGFACE_CO_URL_TEMPLATE", template)
        caplog.clear()
        extra = ""
        with caplog.at_level(logging.INFO, logger="body4d.setup"):
            try:
                code = setup.main([*args, "--config", str(tmp_path / "body4d.yaml")])
            except SystemExit as exc:  # argparse (its message is on stderr), or setup's own message
                code, extra = (exc.code, "") if isinstance(exc.code, int) else (1, f"{exc.code}\n")
        out, err = capsys.readouterr()
        return code, out, caplog.text + err + extra

    return _main


def _rows(table: str) -> dict[str, str]:
    """The table's rows by checkpoint name, each with its continuation lines."""
    rows: dict[str, str] = {}
    name = None
    for line in table.splitlines():
        first = line.split(maxsplit=1)[0] if line.strip() else ""
        if not line.startswith(" ") and first in NAMES:
            name = first
            rows[name] = line
        elif name is not None and line.startswith(" "):
            rows[name] += "\n" + line
    return rows


def _tree(root: Path) -> list[tuple[str, int, int]]:
    """Every file under ``root`` with its size and modification time."""
    return sorted(
        (p.relative_to(root).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
    )


def _copy_tiny(tiny_ckpt_root: Path, root: Path, *folders: str) -> None:
    """Real tiny checkpoints (the released layouts, random weights) copied into ``root``."""
    for folder in folders:
        shutil.copytree(tiny_ckpt_root / folder, root / folder)


def test_offline_setup_writes_the_user_config_skips_verified_and_fails_loudly(
    tmp_path: Path, tiny_ckpt_root: Path
) -> None:
    shipped = DEFAULT_CONFIG.read_bytes()
    home = tmp_path / "home"
    root = tmp_path / "ckpts"
    _copy_tiny(tiny_ckpt_root, root, "sam-3d-body-dinov3")
    res = _run(["--ckpt-root", str(root), "--no-examples"], home)
    assert res.returncode == 1
    log = res.stderr
    user = home / ".config" / "body4d" / "body4d.yaml"
    assert f"config {user}: paths.ckpt_root = {root}" in log
    assert (
        f"[SKIP] sam-3d-body (facebook/sam-3d-body-dinov3) verified in {root / 'sam-3d-body-dinov3'}" in log
    )
    assert (
        "[BLOCKED] facebook/sam3 could not be downloaded from https://huggingface.co (OfflineModeIsEnabled"
        in log
    )
    rows = _rows(res.stdout)
    assert list(rows) == ["sam3", "sam-3d-body", "moge"]
    assert rows["sam3"].split()[1] == "MISSING" and rows["moge"].split()[1] == "MISSING"
    assert f"fix: python scripts/setup.py --ckpt-root {root} --only sam3" in rows["sam3"]
    assert rows["sam-3d-body"].split()[1] == "tiny" and "TINY TEST CHECKPOINT" in rows["sam-3d-body"]
    assert "setup incomplete: not verified: sam3, moge" in log
    assert "the app reads" not in log, "the app finds the user config by itself"
    assert DEFAULT_CONFIG.read_bytes() == shipped, "the shipped config is never written"
    cfg = load_config(env={"HOME": str(home)})
    assert cfg.paths.ckpt_root == str(root)
    assert cfg.sam3.ckpt_path == str(root / "sam3")


def test_setup_from_the_hub_installs_what_the_loaders_read_verified_then_skips_it(
    tmp_path: Path, hub: FakeHub, run, setup: ModuleType
) -> None:
    root = tmp_path / "ckpts"
    env = {
        "HF_HUB_OFFLINE": "0",
        "HF_ENDPOINT": hub.url,
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_TOKEN": "hf_test",
    }
    res = _run(["--ckpt-root", str(root), "--with-completion", "--no-examples"], tmp_path / "home", **env)
    assert res.returncode == 0, res.stdout + res.stderr
    rows = _rows(res.stdout)
    assert list(rows) == list(NAMES) and all(row.split()[1] == "tiny" for row in rows.values()), res.stdout
    assert "setup complete: every checkpoint verified" in res.stderr
    cfg = load_config(overrides={"paths.ckpt_root": str(root), "completion.enable": True}, env={})
    for checkpoint in checkpoints(cfg):
        installed = {
            p.relative_to(checkpoint.folder).as_posix() for p in checkpoint.folder.rglob("*") if p.is_file()
        }
        wanted = {*checkpoint.files, TINY_MARKER}
        records = {DownloadRecord.path(Path(), f).as_posix() for f in wanted}
        assert installed == wanted | records, "only the loaders' files (and their records), no partial file"
        weights = next(f for f in checkpoint.files if f.endswith((".safetensors", ".pt", ".ckpt")))
        record = DownloadRecord.read(checkpoint.folder, weights)
        assert record is not None and record.sha256 == file_sha256(checkpoint.files[weights])
    assert not (root / "sam3" / "vocab.json").exists(), "a file the loaders do not read is not fetched"
    assert {r.auth for r in hub.requests if r.server == "hub"} == {True}, "HF_TOKEN goes to the Hub"
    cdn = [r for r in hub.requests if r.server == "cdn"]
    assert cdn and not any(r.auth for r in cdn), "and never to the CDN"

    before, served = _tree(root), len(hub.requests)
    code, table, _ = run("--check", "--ckpt-root", str(root), "--with-completion")
    assert code == 0 and all(row.split()[1] == "tiny" for row in _rows(table).values())
    assert _tree(root) == before, "--check writes nothing"
    code, table, log = run("--ckpt-root", str(root), "--with-completion", "--no-examples", hub=hub)
    assert code == 0, log
    assert all(f"[SKIP] {name} (" in log for name in NAMES)
    assert len(hub.requests) == served and _tree(root) == before, "verified: nothing is asked of the Hub"

    from models.depth import load as load_depth
    from models.moge import load as load_moge
    from models.sam_3d_body.checkpoint import load as load_body

    load_body(cfg.sam_3d_body, "cpu", torch.float32)  # the loaders accept what was installed
    load_moge(cfg.camera, "cpu", torch.float32)
    load_depth(cfg.completion.model_path_depth, "cpu", torch.float32)


def test_an_interrupted_download_resumes_on_the_next_run(tmp_path: Path, hub: FakeHub, run) -> None:
    hub.cut_after[("facebook/sam-3d-body-dinov3", "model.ckpt")] = CUT
    args = ("--ckpt-root", str(tmp_path / "c"), "--only", "sam-3d-body")
    code, table, log = run(*args, hub=hub)
    assert code == 1
    size = (hub.repos["facebook/sam-3d-body-dinov3"] / "model.ckpt").stat().st_size
    assert (
        f"[BLOCKED] facebook/sam-3d-body-dinov3/model.ckpt: the download stopped after {CUT:,} of {size:,} bytes"
        in log
    )
    assert "run setup again to resume it" in log and _rows(table)["sam-3d-body"].split()[1] == "MISSING"
    partial_dir = tmp_path / "c" / "sam-3d-body-dinov3" / ".cache" / "body4d" / "partial"
    (partial,) = partial_dir.iterdir()
    assert partial.stat().st_size == CUT
    code, table, log = run(*args, hub=hub)
    assert code == 0, log
    assert f"facebook/sam-3d-body-dinov3/model.ckpt (resuming at {CUT:,} bytes)" in log
    assert hub.gets("model.ckpt") == ["", f"bytes={CUT}-"], "the second run asks only for the rest"
    assert _rows(table)["sam-3d-body"].split()[1] == "tiny"
    assert not [p for p in partial_dir.rglob("*") if p.is_file()], "no partial file is left"


def test_a_file_damaged_in_transit_is_not_installed(tmp_path: Path, hub: FakeHub, run) -> None:
    hub.corrupt.add(("Ruicheng/moge-2-vitl-normal", "model.pt"))
    args = ("--ckpt-root", str(tmp_path / "c"), "--only", "moge")
    code, _, log = run(*args, hub=hub)
    assert code == 1
    served = (hub.repos["Ruicheng/moge-2-vitl-normal"] / "model.pt").read_bytes()
    damaged = hashlib.sha256(bytes([served[0] ^ 0xFF]) + served[1:]).hexdigest()
    assert (
        f"Ruicheng/moge-2-vitl-normal/model.pt: sha256 {damaged} is not the {hashlib.sha256(served).hexdigest()} "
        "the source lists (damaged in transit): not installed; run setup again"
    ) in log
    model = tmp_path / "c" / "moge-2-vitl-normal" / "model.pt"
    assert not model.exists()
    code, table, _ = run("--check", *args)
    assert code == 1 and "missing model.pt" in _rows(table)["moge"]
    hub.corrupt.clear()
    code, table, log = run(*args, hub=hub)
    assert code == 0 and model.read_bytes() == served, log


def test_a_file_damaged_on_disk_is_reported_by_check_and_only_it_is_fetched_again(
    tmp_path: Path, hub: FakeHub, run
) -> None:
    args = ("--ckpt-root", str(tmp_path / "c"), "--only", "depth")
    assert run(*args, hub=hub)[0] == 0
    weights = tmp_path / "c" / "depth-anything-v2-large-hf" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # in the tensor data: only the sha256 can tell
    weights.write_bytes(bytes(data))
    code, table, _ = run("--check", *args)
    row = _rows(table)["depth"]
    assert code == 1 and row.split()[1] == "BROKEN"
    assert f"model.safetensors: sha256 {file_sha256(weights)} differs from the" in row
    assert "the source reported at download (damaged since, or a bad download)" in row
    code, table, log = run(*args, hub=hub)
    assert code == 0, log
    assert len(hub.gets("model.safetensors")) == 2 and len(hub.gets("config.json")) == 1, "only it again"


@pytest.mark.parametrize(
    ("switch", "token", "answer", "access"),
    [
        ("gated", None, 401, "no token was sent"),
        ("gated", "hf_test", 403, "the token sent (HF_TOKEN, else hf auth login) has no access"),
        ("unauthorized", None, 401, "no token was sent"),
    ],
)
def test_a_refused_repository_names_the_licence_page_and_hf_token(
    tmp_path: Path,
    hub: FakeHub,
    run,
    monkeypatch: pytest.MonkeyPatch,
    switch: str,
    token: str | None,
    answer: int,
    access: str,
) -> None:
    getattr(hub, switch).add("facebook/sam3")
    if token is not None:
        monkeypatch.setenv("HF_TOKEN", token)
    code, table, log = run("--ckpt-root", str(tmp_path / "c"), "--only", "sam3", hub=hub)
    assert code == 1
    assert (
        f"[BLOCKED] facebook/sam3 is gated and {access}: accept its licence at https://huggingface.co/facebook/sam3 "
        "and export HF_TOKEN with a token of that account"
    ) in log
    assert _rows(table)["sam3"].split()[1] == "MISSING"
    refused = [r for r in hub.requests if "/resolve/" in r.path]
    assert refused and refused[0].auth == (token is not None)
    assert (refused[0].path, answer) in hub.answers


def test_only_installs_just_those_and_an_unknown_name_is_a_usage_error(
    tmp_path: Path, hub: FakeHub, run
) -> None:
    root = tmp_path / "c"
    code, table, log = run("--ckpt-root", str(root), "--only", "depth", "moge", hub=hub)
    assert code == 0, log
    assert list(_rows(table)) == ["moge", "depth"], "in NAMES order"
    assert sorted(p.name for p in root.iterdir()) == ["depth-anything-v2-large-hf", "moge-2-vitl-normal"]
    assert not any("/api/models/facebook/" in r.path for r in hub.requests)
    code, _, log = run("--check", "--only", "sam4")
    assert code == 2 and "invalid choice: 'sam4'" in log and "'vas-completion'" in log


def _mirror(tiny_ckpt_root: Path, mirror: Path, *folders: str) -> None:
    """A backup of a checkpoint root: the tiny folders with the download records setup writes."""
    _copy_tiny(tiny_ckpt_root, mirror, *folders)
    for file in mirror.rglob("*"):
        if file.is_file() and file.suffix in (".safetensors", ".pt", ".ckpt"):
            folder = next(mirror / f for f in folders if file.is_relative_to(mirror / f))
            DownloadRecord("c" * 40, file_sha256(file)).write(folder, file.relative_to(folder).as_posix())


def test_from_a_folder_installs_verified_copies_and_refuses_damaged_ones(
    tmp_path: Path, tiny_ckpt_root: Path, run
) -> None:
    mirror = tmp_path / "mirror"
    _mirror(tiny_ckpt_root, mirror, "moge-2-vitl-normal", "depth-anything-v2-large-hf")
    root = tmp_path / "c"
    code, table, log = run("--ckpt-root", str(root), "--from", str(mirror), "--only", "moge", "depth")
    assert code == 0, log
    assert {n: r.split()[1] for n, r in _rows(table).items()} == {"moge": "tiny", "depth": "tiny"}
    assert f"[COPY] {mirror}/moge-2-vitl-normal/model.pt" in log
    assert (root / "moge-2-vitl-normal" / "model.pt").read_bytes() == (
        mirror / "moge-2-vitl-normal" / "model.pt"
    ).read_bytes()
    record = DownloadRecord.read(root / "depth-anything-v2-large-hf", "model.safetensors")
    assert record is not None and record.sha256 == file_sha256(
        root / "depth-anything-v2-large-hf" / "model.safetensors"
    )
    assert not (root / "depth-anything-v2-large-hf" / "preprocessor_config.json").exists(), (
        "only what loaders read"
    )

    weights = mirror / "depth-anything-v2-large-hf" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    model = mirror / "moge-2-vitl-normal" / "model.pt"
    model.write_bytes(model.read_bytes()[:4096])  # truncated, and it has no record to say so
    DownloadRecord.path(mirror / "moge-2-vitl-normal", "model.pt").unlink()
    other = tmp_path / "d"
    code, table, log = run("--ckpt-root", str(other), "--from", str(mirror), "--only", "moge", "depth")
    assert code == 1
    assert (
        f"{mirror}/depth-anything-v2-large-hf/model.safetensors: sha256 {file_sha256(weights)} is not the"
        in log
    )
    assert not (other / "depth-anything-v2-large-hf" / "model.safetensors").exists(), "not installed"
    rows = _rows(table)
    assert rows["depth"].split()[1] == "MISSING"
    assert (
        rows["moge"].split()[1] == "BROKEN"
        and "model.pt: torch.load(weights_only=True) fails" in rows["moge"]
    )


def test_from_an_fsspec_url(tmp_path: Path, tiny_ckpt_root: Path, setup: ModuleType) -> None:
    fs = fsspec.filesystem("memory")
    src = tiny_ckpt_root / "depth-anything-v2-large-hf"
    for file in src.iterdir():
        fs.pipe_file(f"/backup/depth-anything-v2-large-hf/{file.name}", file.read_bytes())
    try:
        (depth,) = checkpoints(load_config(overrides={"paths.ckpt_root": str(tmp_path)}, env={}), ["depth"])
        result, failure = setup.install(depth, setup.MirrorSource("memory://backup"))
        assert failure is None and result.status == "tiny", result.problems
        assert (depth.folder / "config.json").read_bytes() == (src / "config.json").read_bytes()
    finally:
        fs.rm("/backup", recursive=True)
    with pytest.raises(
        SystemExit, match=r"--from gs://bucket/prefix needs a file system client: pip install -e '\.\[gcs\]'"
    ):
        setup.MirrorSource("gs://bucket/prefix")
    with pytest.raises(SystemExit, match="no such folder"):
        setup.MirrorSource(str(tmp_path / "nowhere"))


def test_check_on_an_empty_root_lists_every_checkpoint_missing_and_writes_nothing(
    tmp_path: Path, run
) -> None:
    code, table, log = run("--check", "--ckpt-root", str(tmp_path / "none"), "--with-completion")
    assert code == 1
    rows = _rows(table)
    assert list(rows) == list(NAMES) and all(r.split()[1] == "MISSING" for r in rows.values())
    assert f"{tmp_path / 'none' / 'sam3'} not found" in rows["sam3"]
    assert "setup incomplete: not verified: sam3, sam-3d-body, moge, vas-amodal, vas-completion, depth" in log
    assert not (tmp_path / "none").exists(), "nothing written"
    assert (tmp_path / "body4d.yaml").read_text() == CONFIG_TEXT, "not even the config"


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
