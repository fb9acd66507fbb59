"""Retention of the outputs folder: old run folders and Gradio cache entries are deleted, oldest first.

`clean_outputs` applies the ``app.retention_*`` limits to ``runtime.output_dir``: every run folder
and Gradio cache entry last written more than its age limit ago goes; then, while the folder is
larger than ``app.retention_gb``, the oldest of what is left goes. A run in progress is never
deleted, nor anything the caller names as in use (the runs and uploads of live app sessions).

A run is in progress when a stage of its manifest says ``running`` and its owner is alive. The
app, ``body4d run`` and ``body4d batch`` hold `run_lock` for every run they make: an ``flock`` on
``<output_dir>/.locks/<run_id>.lock``, released by the kernel when the owner dies, so a run whose
manifest says ``running`` while nobody holds its lock is stale (its process crashed) and may go. A
run made by a process that takes no lock (a library call of `body4d.driver.reconstruct`) counts as
in progress while it wrote a file within `UNLOCKED_RUN_GRACE_S`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

from body4d.run_dir import MANIFEST, RUN_ID_RE

log = logging.getLogger(__name__)

LOCKS_DIRNAME = ".locks"
# A run that takes no lock (made by a library call) but says ``running`` is treated as alive while
# it wrote a file this recently: every stage writes per-frame files far more often than hourly.
UNLOCKED_RUN_GRACE_S = 60 * 60
# Gradio names each cache entry by the SHA-256 of its content (64 hex digits); nothing else in
# the cache folder is touched, so a GRADIO_TEMP_DIR shared with other programs is safe.
GRADIO_ENTRY_RE = re.compile(r"^[0-9a-f]{64}$")
SECONDS_PER_HOUR = 60 * 60
BYTES_PER_GB = 2**30
BYTES_PER_MB = 2**20


@dataclass(frozen=True)
class Entry:
    """One deletable item: a run folder or a Gradio cache entry.

    Attributes:
        path: the folder.
        kind: ``"run"`` or ``"cache"``.
        newest: the newest modification time of anything inside (seconds since the epoch).
        size: bytes of every file inside.
    """

    path: Path
    kind: str
    newest: float
    size: int


@dataclass(frozen=True)
class Cleaned:
    """What `clean_outputs` did.

    Attributes:
        deleted: the folders deleted, oldest first.
        freed: bytes deleted.
        kept_bytes: bytes left in the runs and the cache.
        protected: names of the run folders and cache entries left alone (in progress or in use).
    """

    deleted: list[Path]
    freed: int
    kept_bytes: int
    protected: list[str]


def lock_path(output_dir: Path, run_id: str) -> Path:
    """``<output_dir>/.locks/<run_id>.lock``: the file whose ``flock`` marks the run in progress."""
    return Path(output_dir) / LOCKS_DIRNAME / f"{run_id}.lock"


@contextlib.contextmanager
def run_lock(output_dir: str | Path, run_id: str) -> Iterator[None]:
    """Hold the run's lock while the block runs: retention never deletes the run meanwhile.

    Args:
        output_dir: ``runtime.output_dir``.
        run_id: the run folder's name.
    """
    path = lock_path(Path(output_dir), run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the flock


def _lock_held(path: Path) -> bool:
    """Someone (this process included) holds the flock on ``path``."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _says_running(run: Path) -> bool:
    """A stage of the run's manifest is ``running`` (an unreadable manifest says nothing)."""
    try:
        stages = json.loads((run / MANIFEST).read_text(encoding="utf-8")).get("stages") or {}
    except (OSError, ValueError, AttributeError):
        return False
    return any(isinstance(st, dict) and st.get("status") == "running" for st in stages.values())


def in_progress(output_dir: Path, entry: Entry, now: float) -> bool:
    """The run is being made: its lock is held, or it says ``running`` with no lock file and wrote
    a file within `UNLOCKED_RUN_GRACE_S` (a run without a lock, made by the CLI)."""
    lock = lock_path(output_dir, entry.path.name)
    if _lock_held(lock):
        return True
    if not _says_running(entry.path):
        return False
    return not lock.exists() and now - entry.newest < UNLOCKED_RUN_GRACE_S


def _measure(path: Path, kind: str) -> Entry:
    """The folder's size and newest modification time (its own included; vanished files skipped)."""
    newest, size = path.stat().st_mtime, 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.stat(os.path.join(root, name), follow_symlinks=False)
            except FileNotFoundError:  # a temporary file renamed meanwhile
                continue
            size += st.st_size
            newest = max(newest, st.st_mtime)
    return Entry(path, kind, newest, size)


def entries(output_dir: Path, cache_dir: Path | None) -> list[Entry]:
    """Every run folder of ``output_dir`` and every Gradio entry of ``cache_dir``, oldest first."""
    found = []
    if output_dir.is_dir():
        found += [_measure(p, "run") for p in output_dir.iterdir() if p.is_dir() and RUN_ID_RE.match(p.name)]
    if cache_dir is not None and cache_dir.is_dir():
        found += [
            _measure(p, "cache") for p in cache_dir.iterdir() if p.is_dir() and GRADIO_ENTRY_RE.match(p.name)
        ]
    return sorted(found, key=lambda e: e.newest)


def clean_outputs(
    output_dir: str | Path,
    cache_dir: str | Path | None,
    *,
    max_run_hours: float,
    max_cache_hours: float,
    max_total_gb: float,
    keep: Collection[Path] = (),
    now: float | None = None,
) -> Cleaned:
    """Delete old run folders and Gradio cache entries until within the limits (0 = no limit).

    Args:
        output_dir: ``runtime.output_dir``.
        cache_dir: Gradio's cache folder (``GRADIO_TEMP_DIR``), or None.
        max_run_hours: a run folder last written longer ago than this goes.
        max_cache_hours: a cache entry last written longer ago than this goes.
        max_total_gb: then the oldest go until runs and cache together are no larger.
        keep: folders or files in use (a live session's run folder, its upload): the run folder
            or cache entry holding one is kept.
        now: the time to age against (seconds since the epoch; default now).

    Returns:
        What was deleted and kept.
    """
    output_dir = Path(output_dir)
    now = time.time() if now is None else now
    kept_paths = [Path(p) for p in keep]
    found = entries(output_dir, None if cache_dir is None else Path(cache_dir))
    protected: list[str] = []
    candidates: list[Entry] = []
    for entry in found:
        used = any(p == entry.path or entry.path in p.parents for p in kept_paths)
        if used or (entry.kind == "run" and in_progress(output_dir, entry, now)):
            protected.append(entry.path.name)
        else:
            candidates.append(entry)
    total = sum(e.size for e in found)
    limit = {"run": max_run_hours, "cache": max_cache_hours}
    doomed = [
        e for e in candidates if limit[e.kind] > 0 and now - e.newest > limit[e.kind] * SECONDS_PER_HOUR
    ]
    left = total - sum(e.size for e in doomed)
    if max_total_gb > 0:
        for entry in candidates:
            if left <= max_total_gb * BYTES_PER_GB:
                break
            if entry not in doomed:
                doomed.append(entry)
                left -= entry.size
    deleted, freed = [], 0
    for entry in sorted(doomed, key=lambda e: e.newest):
        shutil.rmtree(entry.path, ignore_errors=True)
        if entry.kind == "run":
            lock_path(output_dir, entry.path.name).unlink(missing_ok=True)
        age_h = (now - entry.newest) / SECONDS_PER_HOUR
        log.info(
            "retention: deleted %s %s (%.1f MB, %.1f h old)",
            entry.kind,
            entry.path,
            entry.size / BYTES_PER_MB,
            age_h,
        )
        deleted.append(entry.path)
        freed += entry.size
    if deleted:
        log.info(
            "retention: %d deleted (%.1f MB freed), %.1f MB kept, in use or in progress: %s",
            len(deleted),
            freed / BYTES_PER_MB,
            (total - freed) / BYTES_PER_MB,
            ", ".join(protected) or "none",
        )
    return Cleaned(deleted, freed, total - freed, protected)
