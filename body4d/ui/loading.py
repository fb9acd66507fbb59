"""Loading a video into a session: probe, open, create its run folder; then a browser-playable preview.

`load_video` is quick (probe + index) and shows frame 0; `make_preview` runs after it and, when the
browser cannot play the file as it is, encodes an H.264 copy into the run folder.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from body4d.config import Config
from body4d.disk_use import estimate_disk, shortfall
from body4d.memory import format_bytes
from body4d.run_dir import RunDir
from body4d.session import Session
from body4d.types import VideoInfo
from body4d.ui.display import FrameView, format_fps, format_time, show_frame
from body4d.video import VIDEO_EXTENSIONS, Video, VideoError, open_configured, open_video, probe

log = logging.getLogger(__name__)

# Codecs and containers every browser plays without conversion.
PLAYABLE_CODECS = ("h264",)
PLAYABLE_CONTAINERS = (".mp4", ".m4v", ".mov")
# Name of the browser-playable copy of the input inside the run folder, and its quality
# (x264 CRF: a preview needs less fidelity than results, and smaller files load faster).
PREVIEW_CRF = 23
# app.max_upload_mb is in MB of 2**20 bytes (as the upload widget's own limit in app.py).
BYTES_PER_MB = 2**20


@dataclass(frozen=True)
class LoadResult:
    """A freshly loaded video.

    Attributes:
        info: the video as the pipeline sees it.
        run_id: the run folder created for it.
        view: frame 0.
        needs_transcode: the browser cannot play the file as is; `make_preview` converts it.
        message: one-paragraph status for the user.
    """

    info: VideoInfo
    run_id: str
    view: FrameView
    needs_transcode: bool
    message: str


def needs_transcode(source: VideoInfo, delivered: VideoInfo) -> bool:
    """The preview must be re-encoded: the browser cannot play the file, or frames were downscaled.

    Browsers play H.264 in mp4/mov containers as is; anything else gets an H.264 copy, and so does
    a video downscaled by ``video.max_side`` (the preview must match the frames clicked on).

    Args:
        source: the file as probed.
        delivered: the frames as the session decodes them.
    """
    playable = source.codec in PLAYABLE_CODECS and source.path.suffix.lower() in PLAYABLE_CONTAINERS
    return not playable or (delivered.width, delivered.height) != (source.width, source.height)


def load_video(cfg: Config, session: Session, path: str | Path) -> LoadResult:
    """Probe and open an uploaded video, create its run folder and show frame 0.

    Args:
        cfg: app configuration (video limits, output folder).
        session: the caller's session; its prompts start over.
        path: the uploaded file.

    Raises:
        VideoError: unreadable, unsupported, too large (``app.max_upload_mb``,
            ``limits.max_frame_pixels``) or too long video (the message says why).
        RunDirError: the output folder is not writable.
    """
    path = Path(path)
    if path.suffix.lower() not in VIDEO_EXTENSIONS:
        raise VideoError(
            f"{path.name} is not a video this app reads: upload one of {', '.join(VIDEO_EXTENSIONS)}"
        )
    # The upload widget enforces this too; checked again here for uploads through the API.
    max_mb = cfg.app.max_upload_mb
    if max_mb and path.is_file() and path.stat().st_size > max_mb * BYTES_PER_MB:
        raise VideoError(
            f"{path.name} is {path.stat().st_size / BYTES_PER_MB:.1f} MB, more than the {max_mb:g} MB this "
            "app accepts (app.max_upload_mb): upload a shorter or more compressed video"
        )
    source = probe(path, max_pixels=cfg.limits.max_frame_pixels)
    limit = cfg.app.max_video_seconds
    if limit and source.duration > limit:
        raise VideoError(
            f"{path.name} lasts {source.duration:.1f} s, longer than the {limit:g} s this app accepts "
            "(app.max_video_seconds): trim the video and upload it again"
        )
    video = open_configured(path, cfg)
    try:
        run = RunDir.create(cfg.runtime.output_dir, input_path=path, config=cfg)
        run.set_video(video.info, source)
    except BaseException:
        video.close()
        raise
    session.set_video(video, path, run, cfg.video.max_side)
    view = show_frame(session, 0)
    transcode = needs_transcode(source, video.info)
    vi = video.info
    message = (
        f"Loaded {path.name}: {vi.n_frames} frames at {format_fps(vi.fps)} fps, {vi.width}×{vi.height}, "
        f"{format_time(Fraction(vi.n_frames) / vi.fps)} ({source.codec}). "
        + ("Making a browser-playable H.264 preview… " if transcode else "")
        + f"Run folder: {run.run_id}. {disk_note(cfg, vi)} Pick a frame and click on a person to add points."
    )
    log.info("session %s loaded %s into run %s", session.session_id, path, run.run_id)
    return LoadResult(vi, run.run_id, view, transcode, message)


def disk_note(cfg: Config, info: VideoInfo) -> str:
    """The disk use a run of the video is expected to take (`body4d.disk_use`), for one person and
    per person more, and a warning when the output folder's disk has less free space than that."""
    one = estimate_disk(cfg, info.n_frames, info.height, info.width, 1)
    more = estimate_disk(cfg, info.n_frames, info.height, info.width, 2).total - one.total
    note = f"Estimated disk use for one person: {one.describe()}; each more person adds {format_bytes(more)}."
    problem = shortfall(one, Path(cfg.runtime.output_dir))
    return f"{note} Warning: {problem}." if problem else note


def make_preview(session: Session, on_progress: Callable[[int, int], None] | None = None) -> Path | None:
    """A browser-playable version of the session's video: the file itself, or an H.264 copy.

    The copy is written to ``<run>/input_preview.mp4`` with a decoder of its own, so the
    session stays usable (scrubbing, clicks) while it encodes.

    Args:
        session: the caller's session.
        on_progress: called with ``(frames_done, total)`` while encoding.

    Returns:
        The preview path, or None when the session switched to another video meanwhile.

    Raises:
        InputError: no video loaded.
        VideoError: the video cannot be decoded.
    """
    with session.lock:
        info = session.require_info()
        path, run, max_side = session.video_path, session.run, session.max_side
    assert path is not None and run is not None
    source = probe(path)
    if not needs_transcode(source, info):
        preview = path
    elif run.path(RunDir.PREVIEW).is_file():  # a reopened run: written before (atomically)
        preview = run.path(RunDir.PREVIEW)
    else:
        video = open_video(path, max_side=max_side)
        try:
            preview = run.write_video(RunDir.PREVIEW, _counted(video, on_progress), info.fps, crf=PREVIEW_CRF)
        finally:
            video.close()
        run.record_artefacts("preview", [RunDir.PREVIEW])
        log.info("preview %s written (%d frames)", preview, info.n_frames)
    with session.lock:
        if session.run is not run:
            return None
        session.preview_path = preview
    return preview


def _counted(video: Video, on_progress: Callable[[int, int], None] | None) -> Iterator[np.ndarray]:
    total = len(video)
    for i, frame in enumerate(video):
        if on_progress is not None:
            on_progress(i, total)
        yield frame
