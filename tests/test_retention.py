"""Retention on real folders: old, new, running and stale runs, the size limit, Gradio cache entries."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from body4d.config import Config, ConfigError, load_config
from body4d.retention import BYTES_PER_GB, UNLOCKED_RUN_GRACE_S, clean_outputs, lock_path, run_lock
from body4d.run_dir import MANIFEST, RunDir

HOUR = 60 * 60
NOW = time.time()
MB = 2**20
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def cfg() -> Config:
    return load_config(env={})


def age(path: Path, hours: float) -> Path:
    """Make everything under ``path`` (and itself) last modified ``hours`` before `NOW`."""
    stamp = NOW - hours * HOUR
    for p in [*path.rglob("*"), path]:
        os.utime(p, (stamp, stamp))
    return path


def make_run(out: Path, cfg: Config, hours: float, *, size: int = 1000, running: bool = False) -> RunDir:
    """A real run folder with ``size`` bytes of results, last written ``hours`` ago."""
    run = RunDir.create(out, cfg, input_path="clip.mp4")
    run.write_bytes(RunDir.BODIES, b"\0" * size)
    if running:  # a stage that began and has not ended: a run going on, or what a crash leaves
        path = run.path(MANIFEST)
        manifest = json.loads(path.read_text())
        manifest["stages"]["masks"] = {"status": "running", "started": "2026-01-01T00:00:00Z"}
        path.write_text(json.dumps(manifest))
    age(run.root, hours)
    return run


def cache_entry(cache: Path, name: str, hours: float, size: int = 1000) -> Path:
    """A Gradio cache entry: ``<sha256>/<name>``."""
    entry = cache / hashlib.sha256(name.encode()).hexdigest()
    entry.mkdir(parents=True)
    (entry / name).write_bytes(b"\0" * size)
    return age(entry, hours)


def clean(out: Path, cache: Path | None = None, **limits: float):
    kwargs = {"max_run_hours": 0.0, "max_cache_hours": 0.0, "max_total_gb": 0.0} | limits
    return clean_outputs(out, cache, now=NOW, **kwargs)


@pytest.fixture
def other_process_lock() -> Iterator[Callable[[Path, str], subprocess.Popen]]:
    """Start a process holding a run's lock: ``hold(out, run_id)`` returns it (killed at the end)."""
    procs: list[subprocess.Popen] = []

    def hold(out: Path, run_id: str) -> subprocess.Popen:
        code = (
            "import sys, time\nfrom body4d.retention import run_lock\n"
            "with run_lock(sys.argv[1], sys.argv[2]):\n    print('locked', flush=True)\n    time.sleep(120)\n"
        )
        env = dict(os.environ, PYTHONPATH=str(REPO))
        proc = subprocess.Popen(
            [sys.executable, "-c", code, str(out), run_id], stdout=subprocess.PIPE, text=True, env=env
        )
        procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        return proc

    yield hold
    for proc in procs:
        proc.kill()
        proc.wait()


def test_age_limit_deletes_old_and_stale_runs_never_one_in_progress(
    tmp_path, cfg, other_process_lock
) -> None:
    out = tmp_path / "out"
    old = make_run(out, cfg, hours=100)
    new = make_run(out, cfg, hours=1)
    locked_here = make_run(out, cfg, hours=100, running=True)
    locked_there = make_run(out, cfg, hours=100, running=True)
    crashed = make_run(out, cfg, hours=100, running=True)
    cli_going = make_run(out, cfg, hours=0.1, running=True)  # no lock (the CLI): recently written
    cli_dead = make_run(out, cfg, hours=100, running=True)  # no lock, silent for 100 h
    (out / "notes").mkdir()  # not a run folder: never touched
    age(out / "notes", 100)

    owner = other_process_lock(out, locked_there.run_id)
    dead = other_process_lock(out, crashed.run_id)
    dead.kill()
    dead.wait()
    assert lock_path(out, crashed.run_id).exists(), "a crashed owner leaves its lock file behind"
    gone = {old, crashed, cli_dead}
    freed = sum(p.stat().st_size for r in gone for p in r.root.rglob("*") if p.is_file())
    with run_lock(out, locked_here.run_id):
        done = clean(out, max_run_hours=48)
    assert owner.poll() is None, "the owner of locked_there was alive all along"

    assert sorted(done.deleted) == sorted(r.root for r in gone)
    assert all(not r.root.exists() for r in gone) and not lock_path(out, crashed.run_id).exists()
    for kept in (new, locked_here, locked_there, cli_going):
        assert (kept.root / RunDir.BODIES).is_file(), kept.run_id
    assert set(done.protected) == {locked_here.run_id, locked_there.run_id, cli_going.run_id}
    assert (out / "notes").is_dir()
    assert done.freed == freed


def test_size_limit_deletes_the_oldest_first_until_within_it(tmp_path, cfg) -> None:
    out, cache = tmp_path / "out", tmp_path / "out" / ".gradio_cache"
    oldest = make_run(out, cfg, hours=5, size=MB)
    upload = cache_entry(cache, "walker.mp4", hours=4, size=MB)
    middle = make_run(out, cfg, hours=3, size=MB)
    newest = make_run(out, cfg, hours=1, size=MB)
    running = make_run(out, cfg, hours=6, size=MB, running=True)

    with run_lock(out, running.run_id):
        # Room for 2 of the 5 (a run also holds its 256 KiB disk-full reserve: 1.25 MB each).
        done = clean(out, cache, max_total_gb=3 * MB / BYTES_PER_GB)
    assert done.deleted == [oldest.root, upload, middle.root], "oldest first; the running run stays"
    assert newest.root.is_dir() and running.root.is_dir()
    assert 2.5 * MB <= done.kept_bytes <= 3 * MB
    assert done.freed >= 3 * MB

    again = clean(out, cache, max_total_gb=3 * MB / BYTES_PER_GB)
    assert again.deleted == [] and again.freed == 0, "within the limit: nothing more goes"


def test_cache_entries_age_out_and_what_live_sessions_use_is_kept(tmp_path, cfg) -> None:
    out, cache = tmp_path / "out", tmp_path / "cache"
    old_upload = cache_entry(cache, "old.mp4", hours=30)
    new_upload = cache_entry(cache, "new.mp4", hours=2)
    in_use = cache_entry(cache, "loaded.mp4", hours=30)
    foreign = cache / "someone-elses-file"  # a GRADIO_TEMP_DIR shared with other programs
    foreign.write_bytes(b"x")
    age(foreign, 100)
    loaded_run = make_run(out, cfg, hours=100)

    done = clean(
        out, cache, max_cache_hours=24, max_run_hours=48, keep=[in_use / "loaded.mp4", loaded_run.root]
    )
    assert done.deleted == [old_upload]
    assert new_upload.is_dir() and in_use.is_dir() and foreign.is_file() and loaded_run.root.is_dir()
    assert set(done.protected) == {in_use.name, loaded_run.run_id}


def test_zero_means_no_limit(tmp_path, cfg) -> None:
    out, cache = tmp_path / "out", tmp_path / "cache"
    run = make_run(out, cfg, hours=10_000, size=MB)
    entry = cache_entry(cache, "a.mp4", hours=10_000)
    assert clean(out, cache).deleted == []
    assert run.root.is_dir() and entry.is_dir()


def test_unlocked_grace_is_what_keeps_a_cli_run(tmp_path, cfg) -> None:
    out = tmp_path / "out"
    fresh = make_run(out, cfg, hours=0, running=True)
    stale = make_run(out, cfg, hours=UNLOCKED_RUN_GRACE_S / HOUR + 1, running=True)
    done = clean(out, max_total_gb=1 / BYTES_PER_GB)  # over the limit: everything deletable goes
    assert done.deleted == [stale.root] and fresh.root.is_dir()


def test_retention_keys_are_validated() -> None:
    cfg = load_config(env={}, overrides=["app.retention_run_hours=72", "app.retention_gb=50"])
    assert (cfg.app.retention_run_hours, cfg.app.retention_gb, cfg.app.retention_cache_hours) == (72, 50, 24)
    with pytest.raises(ConfigError) as err:
        load_config(env={}, overrides=["app.retention_gb=-1", "app.retention_every_minutes=0"])
    text = str(err.value)
    assert "app.retention_gb" in text and "use 0 (no size limit) or a size in GB" in text
    assert "app.retention_every_minutes" in text and "use a positive number of minutes" in text


def test_the_app_cleans_after_a_run_and_keeps_what_live_sessions_loaded(tmp_path, monkeypatch) -> None:
    from body4d.checkpoints import checkpoint_report
    from body4d.session import SessionStore
    from body4d.ui.events import UiEvents
    from body4d.ui.status import capabilities

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "cache"))
    cfg = load_config(
        env={},
        overrides=[
            f"runtime.output_dir={tmp_path / 'out'}",
            f"paths.ckpt_root={tmp_path / 'ckpt'}",
            "app.retention_run_hours=48",
        ],
    )
    out = Path(cfg.runtime.output_dir)
    old, loaded = make_run(out, cfg, hours=100), make_run(out, cfg, hours=100)
    upload = cache_entry(tmp_path / "cache", "walker.mp4", hours=100)
    store = SessionStore()
    store.get("live").run = loaded  # a session that has the old run open
    report = checkpoint_report(cfg)
    events = UiEvents(cfg, store, report, capabilities(cfg, report), [])

    with events.cleaning_after():  # a pipeline run: nothing is cleaned while it goes
        assert old.root.is_dir() and upload.is_dir()
    deadline = time.monotonic() + 10
    while (old.root.exists() or upload.exists()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not old.root.exists() and not upload.exists(), "cleaned in the background after the run"
    assert loaded.root.is_dir(), "a live session's run is kept"
