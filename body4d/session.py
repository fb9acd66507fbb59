"""Per-browser-session state and a thread-safe store of sessions keyed by session id.

One `Session` holds everything a user builds up in the app: the loaded video (a lazily decoded
`Video` that can be reopened from its path), the run folder, the frame on screen, the click
prompts of every target, the SAM-3 tracking session that turns clicks into live masks (opened
lazily on the session's video), the masks shown on prompted frames, and the flag that cancels
its pipeline run. The app creates one `SessionStore` and passes it to the UI handlers; nothing
here is a module global, so many users can work at once without seeing each other's data.

A session is keyed by the browser's own key (kept in its local storage, so a reload finds the
same session again); each page load's Gradio session hash is an alias of that key.

Target ids start at 1 and are never renumbered: removing target 2 of 1, 2, 3 leaves 1 and 3, and
the next new target is 4. Only "clear all targets" (or a new video) starts again at 1.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from body4d.errors import InputError
from body4d.run_dir import RunDir
from body4d.types import Click, Prompts, VideoInfo
from body4d.video import Video, open_video
from models.frames import FrameSource

log = logging.getLogger(__name__)

FIRST_TARGET_ID = 1
# A session nobody touched for this long is dropped (its decoder closed) on the next store access.
DEFAULT_IDLE_SECONDS = 2 * 60 * 60
# Upper bound on live sessions; beyond it the least recently used one is dropped.
DEFAULT_MAX_SESSIONS = 64


class Tracker(Protocol):
    """What a session needs of a SAM-3 tracking session (`models.sam3.TrackerSession`)."""

    @property
    def obj_ids(self) -> list[int]: ...

    def remove_object(self, obj_id: int) -> None: ...

    def clear(self) -> None: ...


@dataclass
class Session:
    """What one browser session has loaded and prompted so far (guard with ``lock``).

    Attributes:
        session_id: the browser session hash (unique per page load).
        video_path: the uploaded video file or frame folder, or None before an upload.
        info: the video as the pipeline sees it (after ``video.max_side`` downscaling).
        max_side: the ``video.max_side`` the video was opened with (needed to reopen it).
        run: the run folder created for this video.
        preview_path: browser-playable H.264 version of the video, once made.
        current_frame: 0-based index of the frame on screen.
        targets: clicks per target id, in creation order; always holds ``current_target``.
        current_target: the target new clicks go to.
        next_id: the id the next added target gets.
        last_used: `time.monotonic()` of the last access (for idle eviction).
        tracker: the SAM-3 tracking session on this video (None until the first click with
            SAM-3 loaded, and after `close()`); it holds the same targets as ``targets``.
        masks: live masks per prompted frame, ``{frame: {target_id: bool[H, W]}}`` in video pixels.
        mask_prompts: what the run's masks were made from (None = automatic people detection);
            meaningful once its ``masks`` stage is done.
        runs: ids of the run folders this session made, oldest first (the recent-runs list).
        owners: owner cookies of the clients that used this session (`body4d.ui.access`): they
            may download the files of ``runs``.
        pending: runs asked for (button pressed) that have not started yet (queued).
        cancel: set by the Cancel button while a run is going or queued; the running pipeline
            polls it, a queued run sees it when it starts; cleared when that run ends.
        run_lock: held while a pipeline runs on this session's run folder.
        display_cache: ``(index, uint8[h, w, 3])``, the last frame shown, at the size the browser
            gets (`body4d.ui.display.display_frame`); None after `close()`.
    """

    session_id: str
    video_path: Path | None = None
    info: VideoInfo | None = None
    max_side: int = 0
    run: RunDir | None = None
    preview_path: Path | None = None
    current_frame: int = 0
    targets: dict[int, list[Click]] = field(default_factory=lambda: {FIRST_TARGET_ID: []})
    current_target: int = FIRST_TARGET_ID
    next_id: int = FIRST_TARGET_ID + 1
    last_used: float = field(default_factory=time.monotonic)
    tracker: Tracker | None = field(default=None, repr=False, compare=False)
    masks: dict[int, dict[int, np.ndarray]] = field(default_factory=dict, repr=False, compare=False)
    mask_prompts: Prompts | None = None
    runs: list[str] = field(default_factory=list)
    owners: set[str] = field(default_factory=set)
    pending: int = 0
    cancel: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)
    run_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)
    _video: Video | None = field(default=None, repr=False, compare=False)
    display_cache: tuple[int, np.ndarray] | None = field(default=None, repr=False, compare=False)
    _frame_cache: tuple[int, np.ndarray] | None = field(default=None, repr=False, compare=False)

    # ------------------------------------------------------------------ video
    @property
    def busy(self) -> bool:
        """A run of this session is going or queued."""
        return self.run_lock.locked() or self.pending > 0

    def unload_video(self) -> None:
        """Forget the loaded video (the upload was removed); its run folder stays on disk."""
        self.close()
        self.video_path = None
        self.info = None
        self.run = None
        self.preview_path = None
        self.current_frame = 0
        self.mask_prompts = None
        self.clear_targets()

    @property
    def has_video(self) -> bool:
        """A video is loaded."""
        return self.info is not None

    def require_info(self) -> VideoInfo:
        """The loaded video's info.

        Raises:
            InputError: no video loaded (the message asks for one).
        """
        if self.info is None:
            raise InputError(
                "no video loaded: upload a video (mp4, mov, avi, mkv, webm) or pick an example first"
            )
        return self.info

    def set_video(self, video: Video, path: Path, run: RunDir, max_side: int) -> None:
        """Switch to a freshly opened video: prompts, frame and preview start over."""
        self.close()
        self._video = video
        self.video_path = path
        self.info = video.info
        self.max_side = max_side
        self.run = run
        if run.run_id not in self.runs:
            self.runs.append(run.run_id)
        self.preview_path = None
        self.current_frame = 0
        self.mask_prompts = None
        self.clear_targets()

    def video(self) -> Video:
        """The open decoder, reopened from ``video_path`` after `close()` or eviction.

        Raises:
            RuntimeError: no video loaded yet.
        """
        if self._video is None:
            if self.video_path is None:
                raise RuntimeError("no video is loaded in this session")
            self._video = open_video(self.video_path, max_side=self.max_side)
        return self._video

    def frame(self, index: int) -> np.ndarray:
        """Frame ``index`` as RGB ``uint8[H, W, 3]`` (the last one is cached for redraws)."""
        if self._frame_cache is not None and self._frame_cache[0] == index:
            return self._frame_cache[1]
        rgb = self.video().frame(index)
        self._frame_cache = (index, rgb)
        return rgb

    def frame_source(self) -> FrameSource:
        """The loaded video as SAM-3 reads it: the frame on screen from the cache (it is not
        decoded twice), any other frame decoded without replacing it there."""
        return _SessionFrames(self)

    def close(self) -> None:
        """Release the decoder, the cached frames and the tracker (all can be reopened later)."""
        if self._video is not None:
            self._video.close()
        self._video = None
        self._frame_cache = None
        self.display_cache = None
        self.tracker = None

    # ------------------------------------------------------------------ prompts
    def add_click(self, click: Click) -> None:
        """Append ``click`` to the current target."""
        self.targets[self.current_target].append(click)

    def clicks_on(self, frame: int) -> list[tuple[int, Click]]:
        """``(target_id, click)`` for every click of every target on ``frame``."""
        return [(tid, c) for tid, clicks in self.targets.items() for c in clicks if c.frame == frame]

    def add_target(self) -> bool:
        """Start a new target and make it current; refused (False) while the current one has no clicks."""
        if not self.targets[self.current_target]:
            return False
        new_id = self.next_id
        self.targets[new_id] = []
        self.current_target = new_id
        self.next_id += 1
        return True

    def select_target(self, target_id: int) -> None:
        """Send new clicks to ``target_id``.

        Raises:
            KeyError: no such target.
        """
        if target_id not in self.targets:
            raise KeyError(f"there is no target {target_id}; targets are {list(self.targets)}")
        self.current_target = target_id

    def remove_target(self, target_id: int) -> None:
        """Delete ``target_id`` and its clicks; ids of the others stay as they are.

        The last remaining target becomes current; removing the only target starts over as
        `clear_targets` does (an empty Target 1).

        Raises:
            KeyError: no such target.
        """
        if target_id not in self.targets:
            raise KeyError(f"there is no target {target_id}; targets are {list(self.targets)}")
        if self.tracker is not None and target_id in self.tracker.obj_ids:
            self.tracker.remove_object(target_id)
        for frame_masks in self.masks.values():
            frame_masks.pop(target_id, None)
        del self.targets[target_id]
        if not self.targets:
            self.clear_targets()
            return
        if self.current_target not in self.targets:
            self.current_target = next(reversed(self.targets))

    def clear_targets(self) -> None:
        """Drop every target, click and live mask; the next target is 1 again."""
        if self.tracker is not None:
            self.tracker.clear()
        self.masks.clear()
        self.targets = {FIRST_TARGET_ID: []}
        self.current_target = FIRST_TARGET_ID
        self.next_id = FIRST_TARGET_ID + 1

    def set_masks(self, frame: int, masks: dict[int, np.ndarray]) -> None:
        """Remember the live masks of every target on ``frame`` (the tracker's last answer)."""
        self.masks[frame] = {tid: m for tid, m in masks.items() if tid in self.targets}

    def prompts(self) -> Prompts:
        """The clicks of every target that has any, as the frozen `Prompts` the pipeline takes."""
        return Prompts({tid: tuple(clicks) for tid, clicks in self.targets.items() if clicks})


class _SessionFrames:
    """`Session.frame_source`: the session's video, reading the cached frame when it is asked for."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def __len__(self) -> int:
        return self._session.require_info().n_frames

    def frame(self, index: int) -> np.ndarray:
        cached = self._session._frame_cache
        if cached is not None and cached[0] == index:
            return cached[1]
        return self._session.video().frame(index)


class SessionStore:
    """Thread-safe map from session id to `Session`, dropping idle and surplus sessions.

    Args:
        idle_seconds: drop sessions unused for longer than this.
        max_sessions: keep at most this many sessions (least recently used dropped first).
        clock: monotonic time source in seconds (injectable for tests).
    """

    def __init__(
        self,
        idle_seconds: float = DEFAULT_IDLE_SECONDS,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if idle_seconds <= 0 or max_sessions < 1:
            raise ValueError("idle_seconds must be positive and max_sessions at least 1")
        self.idle_seconds = idle_seconds
        self.max_sessions = max_sessions
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        self._aliases: dict[str, str] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def __contains__(self, session_id: object) -> bool:
        with self._lock:
            return session_id in self._sessions

    def owns(self, owner: str, run_id: str) -> bool:
        """A live session used by ``owner`` (an owner cookie) made or reopened run ``run_id``."""
        with self._lock:
            sessions = list(self._sessions.values())
        return any(owner in s.owners and run_id in s.runs for s in sessions)

    def in_use(self) -> list[Path]:
        """The run folders, videos and previews that live sessions have loaded (kept by retention)."""
        with self._lock:
            sessions = list(self._sessions.values())
        return [
            path
            for s in sessions
            for path in (s.run.root if s.run is not None else None, s.video_path, s.preview_path)
            if path is not None
        ]

    def alias(self, alias: str, session_id: str) -> None:
        """Make ``alias`` (a page load's session hash) name the session ``session_id`` (the
        browser's key): a reloaded page gets its session back."""
        if not alias or not session_id:
            raise ValueError("alias and session id must be non-empty")
        with self._lock:
            self._aliases[alias] = session_id

    def unalias(self, alias: str) -> None:
        """Forget ``alias`` (the page closed); the session itself stays until it idles out."""
        with self._lock:
            self._aliases.pop(alias, None)

    def resolve(self, alias: str) -> str:
        """The session id ``alias`` names (itself when it is no alias)."""
        with self._lock:
            return self._aliases.get(alias, alias)

    def get(self, session_id: str) -> Session:
        """The session of ``session_id`` (or of the alias it is), created on first use; marks it
        as used now."""
        if not session_id:
            raise ValueError("a session id is required (Gradio passes request.session_hash)")
        now = self._clock()
        with self._lock:
            session_id = self._aliases.get(session_id, session_id)
            session = self._sessions.pop(session_id, None)
            if session is None:
                session = Session(session_id=session_id)
                log.debug("new session %s", session_id)
            session.last_used = now
            self._sessions[session_id] = session  # re-insert: dict order = least recently used first
            dropped = self._evict(now, keep=session_id)
        for old in dropped:
            self._close(old)
        return session

    def drop(self, session_id: str) -> None:
        """Forget ``session_id`` (or the session its alias names) and release its decoder."""
        with self._lock:
            session_id = self._aliases.get(session_id, session_id)
            session = self._sessions.pop(session_id, None)
            self._aliases = {a: sid for a, sid in self._aliases.items() if sid != session_id}
        if session is not None:
            self._close(session)

    def _evict(self, now: float, keep: str | None) -> list[Session]:
        """Remove idle and surplus sessions (caller holds the lock); returns them for closing."""
        dropped = [
            s for sid, s in self._sessions.items() if sid != keep and now - s.last_used > self.idle_seconds
        ]
        for s in dropped:
            del self._sessions[s.session_id]
        while len(self._sessions) > self.max_sessions:
            oldest = next(iter(self._sessions))
            dropped.append(self._sessions.pop(oldest))
        if dropped:
            gone = {s.session_id for s in dropped}
            self._aliases = {a: sid for a, sid in self._aliases.items() if sid not in gone}
        return dropped

    @staticmethod
    def _close(session: Session) -> None:
        log.info("session %s dropped", session.session_id)
        with session.lock:
            session.close()
