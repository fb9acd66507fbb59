"""What the page shows for a session, and reopening a session's or the server's earlier runs.

`page_state` describes every widget for the session as it is (used after a reload and when a
run is reopened); `recent_runs` lists the runs that can be reopened; `reopen_run` loads one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from body4d.config import Config
from body4d.run_dir import MANIFEST, RunDir, RunDirError
from body4d.session import Session
from body4d.ui.display import FrameView, show_frame
from body4d.ui.downloads import current_body_ids, run_downloads
from body4d.ui.prompts import target_choices
from body4d.video import VideoError, open_video

log = logging.getLogger(__name__)

# The 4D Result choice that shows every person (the other choices are object ids).
ALL_PEOPLE = "All people"
# The last stage of a finished run, and the one after which its masks can be shown.
FINISHED_STAGE = "bundle"
MASKS_STAGE = "masks"


@dataclass(frozen=True)
class PageState:
    """Every widget's value for one session.

    Attributes:
        view: the current frame (None without a video).
        n_frames: frames of the loaded video (0 without one).
        targets: the targets list ``(label, id)`` and the selected id.
        current_target: the target clicks go to.
        preview: the browser-playable input video.
        mask_video: the Segmentation Result video.
        result_video: the 4D Result video (all people).
        result_ids: people with a 4D result (the "4D Result shows" choices).
        scene_glb: the animated GLB of every person.
        downloads: the zip, ``bodies.npz`` and each person's bundle files.
    """

    view: FrameView | None
    n_frames: int
    targets: list[tuple[str, int]]
    current_target: int
    preview: Path | None = None
    mask_video: Path | None = None
    result_video: Path | None = None
    result_ids: list[int] = field(default_factory=list)
    scene_glb: Path | None = None
    downloads: list[Path] = field(default_factory=list)


def result_choices(obj_ids: list[int]) -> list[tuple[str, str]]:
    """The "4D Result shows" choices: all people, then each person alone."""
    return [(ALL_PEOPLE, ALL_PEOPLE)] + [(f"Person {i}", str(i)) for i in obj_ids]


def page_state(session: Session) -> PageState:
    """What the page shows for ``session`` now (caller holds ``session.lock``)."""
    targets = target_choices(session)
    if not session.has_video:
        return PageState(None, 0, targets, session.current_target)
    assert session.info is not None
    view = show_frame(session, session.current_frame)
    run = session.run
    state = PageState(view, session.info.n_frames, targets, session.current_target, session.preview_path)
    if run is None:
        return state
    finished = run.is_done(FINISHED_STAGE)
    ids = sorted(int(i) for i in current_body_ids(run)) if finished else []
    return PageState(
        view,
        session.info.n_frames,
        targets,
        session.current_target,
        session.preview_path,
        run.mask_video_path() if run.is_done(MASKS_STAGE) else None,
        run.result_video_path() if finished else None,
        ids,
        run.scene_glb_path() if finished else None,
        run_downloads(run) if finished else [],
    )


@dataclass(frozen=True)
class RunEntry:
    """A run that can be reopened: its id, what it was made from and how far it got."""

    run_id: str
    input_name: str
    finished: bool

    @property
    def label(self) -> str:
        """``"20261203-114000-ab12 · street.mp4 · 4D done"``."""
        return f"{self.run_id} · {self.input_name} · {'4D done' if self.finished else 'masks done'}"


def _entry(run: RunDir) -> RunEntry | None:
    """The run as a list entry, or None when not even its masks are done."""
    if not run.is_done(MASKS_STAGE):
        return None
    source = run.manifest.get("input") or "?"
    return RunEntry(run.run_id, Path(source).name, run.is_done(FINISHED_STAGE))


def recent_runs(cfg: Config, session: Session) -> list[RunEntry]:
    """Runs the session can reopen, newest first: its own with masks done, and with
    ``app.list_server_runs`` every such run in ``runtime.output_dir``."""
    out_dir = Path(cfg.runtime.output_dir)
    ids = list(session.runs)
    if cfg.app.list_server_runs and out_dir.is_dir():
        ids += [p.parent.name for p in out_dir.glob(f"*/{MANIFEST}")]
    entries = []
    for run_id in sorted(set(ids), reverse=True):
        try:
            entry = _entry(RunDir.open(out_dir, run_id, cfg, clean_scratch=False))
        except RunDirError as exc:  # a half-written or foreign folder: not offered
            log.debug("run %s not listed: %s", run_id, exc)
            continue
        if entry is not None:
            entries.append(entry)
    return entries


def reopen_run(cfg: Config, session: Session, run_id: str) -> str:
    """Load an earlier run into ``session``: its input video, masks and results; returns the status.

    The targets start empty (the run's masks are shown; new clicks correct them).

    Raises:
        RunDirError: no such run, or it is not one the session may open.
        VideoError: the run's input video is gone or unreadable.
    """
    if run_id not in {e.run_id for e in recent_runs(cfg, session)}:
        raise RunDirError(f"run {run_id} is not in the recent-runs list: pick one from the list")
    run = RunDir.open(cfg.runtime.output_dir, run_id, cfg, clean_scratch=False)
    source = run.manifest.get("input")
    if not source or not Path(source).exists():
        raise VideoError(
            f"the input video of run {run_id} is no longer on the server: upload it again to make a new run"
        )
    video = open_video(source, max_frames=cfg.video.max_frames, max_side=cfg.video.max_side)
    session.set_video(video, Path(source), run, cfg.video.max_side)
    preview = run.path(RunDir.PREVIEW)
    session.preview_path = preview if preview.is_file() else Path(source)
    log.info("session %s reopened run %s", session.session_id, run_id)
    done = "its 4D result" if run.is_done(FINISHED_STAGE) else "its masks (press 4D Generation to continue)"
    return f"Reopened run {run_id} ({Path(source).name}) with {done}."
