"""App event handlers: widget values → typed requests → results → widget updates.

Plain functions (`load_video`, `make_preview`, `show_frame`, `add_click`, target edits,
  `generate_masks`, `generate_4d`, `cancel_run`, `models_markdown`, ...) that take a `Session`
  and typed values and return dataclasses; they know nothing about Gradio and are tested directly.
`body4d.ui.events.UiEvents` binds them to the widgets.

Pixel coordinates: the frame on screen may be downscaled (`DISPLAY_MAX_SIDE`); clicks are
converted back and stored in the video's own pixel coordinates.

Models: the app loads them once (`app.py`) and passes the shared, read-only `PipelineModels`
in. With SAM-3 loaded, every click goes through the session's own tracking session and the frame
shows the live mask of every target; Mask Generation / Auto-detect / 4D Generation run
`body4d.reconstruct.reconstruct` on the session's run folder, one stage range at a time.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, cast

import numpy as np
from PIL import Image

from body4d.config import Config
from body4d.masks import draw_clicks, masks_to_labels, overlay
from body4d.reconstruct import STAGES, PipelineModels, RunResult, reconstruct
from body4d.run_dir import RunDir
from body4d.session import Session
from body4d.types import Click, Prompts, VideoInfo
from body4d.ui.downloads import BODIES_NAME, zip_run
from body4d.ui.layout import ButtonSpec, LayoutSpec
from body4d.video import VIDEO_EXTENSIONS, Video, VideoError, open_video, probe
from models.registry import SETUP_HINT, CheckpointReport
from models.sam3 import PromptError, TrackerSession

log = logging.getLogger(__name__)

# Frames wider or taller than this are downscaled for the browser (clicks are mapped back).
DISPLAY_MAX_SIDE = 1280
# Longer side of the example-gallery thumbnails.
THUMB_MAX_SIDE = 320
# Codecs and containers every browser plays without conversion.
PLAYABLE_CODECS = ("h264",)
PLAYABLE_CONTAINERS = (".mp4", ".m4v", ".mov")
# Name of the browser-playable copy of the input inside the run folder, and its quality
# (x264 CRF: a preview needs less fidelity than results, and smaller files load faster).
PREVIEW_NAME = "input_preview.mp4"
PREVIEW_CRF = 23
# Uploads decoding at once (cheap: probe + index) and previews encoding at once (CPU-heavy x264).
LOAD_CONCURRENCY = 2
PREVIEW_CONCURRENCY = 1
# Pipeline runs at once over all users: one GPU job at a time (the models are shared).
GPU_CONCURRENCY = 1
# Click/target edits that run SAM-3 at once: tens of ms each, serialised to bound GPU memory.
PROMPT_CONCURRENCY = 1
PERCENT = 100
CENTISECONDS_PER_SECOND = 100
SECONDS_PER_MINUTE = 60
GATED_NOTE = (
    "SAM-3 and SAM-3D-Body are gated: accept their licences on Hugging Face "
    "(facebook/sam3, facebook/sam-3d-body-dinov3) and set HF_TOKEN before running it."
)


class UserError(ValueError):
    """A request the app refuses; the message says what was wrong and what to do."""


# --------------------------------------------------------------------------- capabilities


@dataclass(frozen=True)
class Capabilities:
    """Which model-backed actions are available; a blocker is the reason shown to the user.

    Attributes:
        segment: why clicks cannot make masks and Mask Generation / Auto-detect are off
            (None = available).
        reconstruct: why 4D Generation is off (None = available).
    """

    segment: str | None
    reconstruct: str | None


def capabilities(
    cfg: Config,
    report: CheckpointReport,
    segmenter_loaded: bool = False,
    reconstructor_loaded: bool = False,
    load_error: str | None = None,
) -> Capabilities:
    """Decide what the app can do from the checkpoint report and the models actually loaded.

    Args:
        cfg: app configuration (where the checkpoints should be).
        report: which checkpoints are present.
        segmenter_loaded: SAM-3 (tracker and detector) is loaded.
        reconstructor_loaded: SAM-3D-Body is loaded.
        load_error: why loading the models failed (None = it did not fail).
    """
    missing = {Path(item.path) for item in report.missing}
    sam3_missing = Path(cfg.sam3.ckpt_path) in missing
    body = cfg.sam_3d_body
    body_paths = [body.ckpt_path, body.config_path, body.mhr_path] + (
        [body.fov_path] if body.fov_path else []
    )
    body_missing = any(Path(p) in missing for p in body_paths)
    if sam3_missing:
        segment: str | None = "needs the SAM-3 checkpoint"
    elif load_error is not None:
        segment = "the models failed to load: see the models panel"
    elif not segmenter_loaded:
        segment = "SAM-3 is not loaded"
    else:
        segment = None
    if sam3_missing and body_missing:
        reconstruct: str | None = "needs the SAM-3 and SAM-3D-Body checkpoints"
    elif body_missing:
        reconstruct = "needs the SAM-3D-Body checkpoints"
    elif segment is not None:
        reconstruct = segment
    elif not reconstructor_loaded:
        reconstruct = "SAM-3D-Body is not loaded"
    else:
        reconstruct = None
    return Capabilities(segment=segment, reconstruct=reconstruct)


def _button(label: str, blocker: str | None) -> ButtonSpec:
    if blocker is None:
        return ButtonSpec(label, interactive=True)
    return ButtonSpec(f"{label} ({blocker})", interactive=False)


def layout_spec(
    report: CheckpointReport,
    caps: Capabilities,
    examples: list[tuple[np.ndarray, str]],
    load_error: str | None = None,
) -> LayoutSpec:
    """Everything `build_layout` needs to know: texts, gallery items, button states."""
    can_run = caps.segment is None
    return LayoutSpec(
        models_markdown=models_markdown(report, load_error, loaded=can_run),
        examples=examples,
        auto_detect=_button("Auto-detect people", caps.segment),
        mask_generation=_button("Mask Generation", caps.segment),
        generate_4d=_button("4D Generation", caps.reconstruct),
        cancel=ButtonSpec("Cancel", interactive=True) if can_run else ButtonSpec("Cancel", interactive=False),
    )


TINY_WARNING = (
    "## ⚠️ TINY TEST CHECKPOINTS — RESULTS ARE MEANINGLESS\n"
    "Some checkpoints are tiny random-weight test models (written by `body4d.testing.tiny_checkpoints`). "
    "Masks and 3D bodies made with them are noise. For real results run "
    "`{fix}` and restart the app."
)


def models_markdown(report: CheckpointReport, load_error: str | None = None, loaded: bool = False) -> str:
    """The status panel: one line per checkpoint, and the exact fix when any is missing.

    Args:
        report: which checkpoints are present (tiny test ones are flagged loudly).
        load_error: why the models failed to load (shown with the fix), or None.
        loaded: the models are loaded and the model buttons work.
    """
    fix = SETUP_HINT.format(root=report.ckpt_root)
    if report.ok:
        if load_error is not None:
            head = (
                f"**Models failed to load:** {load_error}\n\n**Fix:** re-download the checkpoints with "
                f"`{fix}` (or repair the file named above) and restart the app. Upload, scrubbing and "
                "click prompts still work."
            )
        elif loaded:
            head = "**Models:** all checkpoints present and loaded: clicks show live masks."
        else:
            head = "**Models:** all checkpoints present."
        if report.uses_tiny:
            head = TINY_WARNING.format(fix=fix) + "\n\n" + head
        return f"{head}\n\n```\n{report.text()}\n```"
    names = ", ".join(item.name for item in report.missing)
    return (
        f"**Models: {len(report.missing)} checkpoint(s) missing** ({names}). Upload, frame scrubbing, "
        "preview and click prompts work now; masks and 3D bodies need the checkpoints.\n\n"
        f"**Fix:** run `{fix}`. {GATED_NOTE}\n\n```\n{report.text()}\n```"
    )


# --------------------------------------------------------------------------- frames and time


def format_time(seconds: Fraction) -> str:
    """``mm:ss.ff`` (ff = hundredths, truncated) of an exact time in seconds."""
    total_cs = math.floor(seconds * CENTISECONDS_PER_SECOND)
    minutes, rest = divmod(total_cs, SECONDS_PER_MINUTE * CENTISECONDS_PER_SECOND)
    secs, cs = divmod(rest, CENTISECONDS_PER_SECOND)
    return f"{minutes:02d}:{secs:02d}.{cs:02d}"


def time_label(index: int, info: VideoInfo) -> str:
    """``"<time of frame index> / <duration>"`` at the video's exact frame rate."""
    return f"{format_time(Fraction(index) / info.fps)} / {format_time(Fraction(info.n_frames) / info.fps)}"


def format_fps(fps: Fraction) -> str:
    """``10``, ``29.97``, ``23.98``: the frame rate with at most two decimals."""
    return f"{float(fps):.2f}".rstrip("0").rstrip(".")


def display_scale(width: int, height: int, max_side: int = DISPLAY_MAX_SIDE) -> float:
    """Display pixels per video pixel (1.0 unless the frame is larger than ``max_side``)."""
    return min(1.0, max_side / max(width, height))


def to_display(rgb: np.ndarray, scale: float) -> np.ndarray:
    """Downscale ``rgb`` by ``scale`` for the browser (unchanged when ``scale == 1``)."""
    if scale >= 1.0:
        return rgb
    h, w = rgb.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))


def display_to_video(x: float, y: float, scale: float, info: VideoInfo) -> tuple[float, float]:
    """Map a click on the displayed frame to video pixels, clamped inside the frame."""
    vx = min(max(x / scale, 0.0), info.width - 1.0)
    vy = min(max(y / scale, 0.0), info.height - 1.0)
    return vx, vy


@dataclass(frozen=True)
class FrameView:
    """A frame ready for the browser.

    Attributes:
        image: RGB ``uint8[h, w, 3]`` at display size, with click markers drawn.
        index: 0-based frame index.
        time: ``mm:ss.ff / mm:ss.ff`` label.
        scale: display pixels per video pixel.
    """

    image: np.ndarray
    index: int
    time: str
    scale: float


def show_frame(session: Session, index: int) -> FrameView:
    """Make ``index`` the current frame and render it with its live masks and clicks.

    Raises:
        UserError: no video loaded.
    """
    info = _require_video(session)
    index = min(max(int(index), 0), info.n_frames - 1)
    session.current_frame = index
    rgb = session.frame(index)
    masks = session.masks.get(index)
    if masks:
        rgb = overlay(rgb, masks_to_labels(masks, (info.height, info.width)))
    clicks = [click for _, click in session.clicks_on(index)]
    if clicks:
        rgb = draw_clicks(rgb, clicks)
    scale = display_scale(info.width, info.height)
    return FrameView(to_display(rgb, scale), index, time_label(index, info), scale)


def _require_video(session: Session) -> VideoInfo:
    if session.info is None:
        raise UserError("no video loaded: upload a video (mp4, mov, avi, mkv, webm) or pick an example first")
    return session.info


# --------------------------------------------------------------------------- loading


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
        VideoError: unreadable, unsupported or too long video (the message says why).
        RunDirError: the output folder is not writable.
    """
    path = Path(path)
    if path.suffix.lower() not in VIDEO_EXTENSIONS:
        raise VideoError(
            f"{path.name} is not a video this app reads: upload one of {', '.join(VIDEO_EXTENSIONS)}"
        )
    source = probe(path)
    limit = cfg.app.max_video_seconds
    if limit and source.duration > limit:
        raise VideoError(
            f"{path.name} lasts {source.duration:.1f} s, longer than the {limit:g} s this app accepts "
            "(app.max_video_seconds): trim the video and upload it again"
        )
    video = open_video(path, max_frames=cfg.video.max_frames, max_side=cfg.video.max_side)
    try:
        run = RunDir.create(cfg.runtime.output_dir, input_path=path, config=cfg)
        run.update_manifest(video=_video_manifest(video.info, source))
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
        + f"Run folder: {run.run_id}. Pick a frame and click on a person to add points."
    )
    log.info("session %s loaded %s into run %s", session.session_id, path, run.run_id)
    return LoadResult(vi, run.run_id, view, transcode, message)


def _video_manifest(delivered: VideoInfo, source: VideoInfo) -> dict[str, Any]:
    return {
        "frames": delivered.n_frames,
        "fps": delivered.fps,
        "width": delivered.width,
        "height": delivered.height,
        "source_width": source.width,
        "source_height": source.height,
        "codec": source.codec,
        "rotation": source.rotation,
    }


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
        UserError: no video loaded.
        VideoError: the video cannot be decoded.
    """
    with session.lock:
        info = _require_video(session)
        path, run, max_side = session.video_path, session.run, session.max_side
    assert path is not None and run is not None
    source = probe(path)
    if not needs_transcode(source, info):
        preview = path
    else:
        video = open_video(path, max_side=max_side)
        try:
            preview = run.write_video(PREVIEW_NAME, _counted(video, on_progress), info.fps, crf=PREVIEW_CRF)
        finally:
            video.close()
        run.add_artefact("preview", PREVIEW_NAME)
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


# --------------------------------------------------------------------------- prompts


@dataclass(frozen=True)
class ClickRequest:
    """A click on the displayed frame.

    Attributes:
        x: column in display pixels.
        y: row in display pixels.
        positive: foreground (True) or background (False) point.
    """

    x: float
    y: float
    positive: bool


@dataclass(frozen=True)
class PromptResult:
    """The frame redrawn after a prompt edit, plus a status sentence."""

    view: FrameView
    message: str


TrackerFactory = Callable[[Video], TrackerSession]


def tracker_factory(cfg: Config, models: PipelineModels | None) -> TrackerFactory | None:
    """A function opening a SAM-3 tracking session on a video, or None without SAM-3."""
    if models is None or models.sam3 is None:
        return None
    sam3, s = models.sam3, cfg.sam3

    def open_tracker(video: Video) -> TrackerSession:
        return sam3.open_session(
            video,
            max_cached_frames=s.max_cached_frames,
            vision_cache_frames=s.vision_cache_frames,
            frame_cache=s.frame_cache,
            mask_threshold=s.mask_threshold,
        )

    return open_tracker


def session_tracker(session: Session, open_tracker: TrackerFactory) -> TrackerSession:
    """The session's tracking session, opened on first use with every click made so far."""
    from body4d.stages.segment import apply_prompts

    if session.tracker is not None:
        return cast(TrackerSession, session.tracker)
    tracker = open_tracker(session.video())
    apply_prompts(tracker, session.prompts())
    session.tracker = tracker
    log.info("session %s: SAM-3 tracking session opened", session.session_id)
    return tracker


def add_click(
    session: Session,
    request: ClickRequest,
    caps: Capabilities,
    report: CheckpointReport,
    open_tracker: TrackerFactory | None = None,
) -> PromptResult:
    """Record a click on the current frame for the current target; redraw masks and markers.

    With ``open_tracker`` (SAM-3 loaded) the clicks of the current target on this frame go to
    the session's tracker first, and the frame shows every target's live mask; a click SAM-3
    refuses is not recorded.

    Raises:
        UserError: no video loaded, or SAM-3 refused the clicks (e.g. only negative ones).
    """
    info = _require_video(session)
    scale = display_scale(info.width, info.height)
    x, y = display_to_video(request.x, request.y, scale, info)
    frame, target = session.current_frame, session.current_target
    click = Click(frame=frame, x=x, y=y, positive=request.positive)
    mask_note = ""
    if open_tracker is not None:
        tracker = session_tracker(session, open_tracker)
        clicks = [c for c in session.targets[target] if c.frame == frame] + [click]
        try:
            mask = tracker.add_points(target, frame, clicks)
        except PromptError as exc:
            raise UserError(str(exc)) from exc
        assert tracker.last_masks is not None
        session.set_masks(frame, tracker.last_masks.masks)
        share = PERCENT * float(mask.mean())
        mask_note = f" Mask of Target {target}: {int(mask.sum())} px ({share:.1f} % of the frame)."
    session.add_click(click)
    view = show_frame(session, frame)
    count = len(session.targets[target])
    kind = "positive" if click.positive else "negative"
    message = (
        f"Target {target}: {kind} click at (x={x:.0f}, y={y:.0f}) on frame {frame} "
        f"({count} click{'s' if count != 1 else ''} on this target).{mask_note}"
    )
    if caps.segment is not None:
        message += f" No mask preview: {_segment_fix(caps, report)}"
    return PromptResult(view, message)


def _segment_fix(caps: Capabilities, report: CheckpointReport) -> str:
    if caps.segment == "needs the SAM-3 checkpoint":
        return (
            f"masks need the SAM-3 checkpoint. Run `{SETUP_HINT.format(root=report.ckpt_root)}` "
            "(SAM-3 is gated: accept its licence on Hugging Face and set HF_TOKEN first)."
        )
    return f"masks are unavailable ({caps.segment})."


def target_choices(session: Session) -> list[tuple[str, int]]:
    """``(label, id)`` per target for the targets list, e.g. ``("Target 3 · 2 clicks", 3)``."""
    out = []
    for tid, clicks in session.targets.items():
        n = len(clicks)
        out.append((f"Target {tid} · {n} click{'s' if n != 1 else ''}", tid))
    return out


def add_target(session: Session) -> str:
    """Start a new target (refused while the current one has no clicks); returns the status."""
    _require_video(session)
    current = session.current_target
    if not session.add_target():
        raise UserError(f"Target {current} has no clicks yet: click on a person before adding another target")
    return f"Added Target {session.current_target}: new clicks go to it."


def select_target(session: Session, target_id: int) -> str:
    """Send new clicks to ``target_id``; returns the status."""
    try:
        session.select_target(int(target_id))
    except KeyError as exc:
        raise UserError(f"{exc.args[0]}: pick one from the targets list") from exc
    return f"Clicks now go to Target {session.current_target}."


def remove_target(session: Session) -> str:
    """Delete the current target and its clicks; returns the status."""
    removed = session.current_target
    session.remove_target(removed)
    return f"Removed Target {removed}; clicks now go to Target {session.current_target}."


def clear_targets(session: Session) -> str:
    """Delete every target and click; returns the status."""
    session.clear_targets()
    return "Cleared all targets; clicks now go to Target 1."


# --------------------------------------------------------------------------- pipeline runs

ProgressFn = Callable[[str, float, str], None]
MASK_GENERATION = "Mask Generation"
AUTO_DETECT = "Auto-detect people"
GENERATE_4D = "4D Generation"


@dataclass(frozen=True)
class MaskOutcome:
    """A finished segmentation run.

    Attributes:
        result: what `reconstruct` reported.
        mask_video: ``video_mask_<run_id>.mp4`` (the Segmentation Result), if written.
        message: status sentence for the user.
    """

    result: RunResult
    mask_video: Path | None
    message: str


@dataclass(frozen=True)
class BodiesOutcome:
    """A finished 4D run.

    Attributes:
        result: what `reconstruct` reported.
        mask_video: the Segmentation Result video, if written.
        downloads: the run's zip and ``bodies.npz``.
        people: targets with a 3D body track.
        meshes: OBJ files written (one per person per frame).
        message: status sentence for the user.
    """

    result: RunResult
    mask_video: Path | None
    downloads: list[Path]
    people: int
    meshes: int
    message: str


def _stage_progress(stop_after: str, progress: ProgressFn | None) -> ProgressFn | None:
    """Map ``(stage, fraction, message)`` of one stage to the whole range up to ``stop_after``."""
    if progress is None:
        return None
    stages = STAGES[: STAGES.index(stop_after) + 1]

    def report(stage: str, fraction: float, message: str) -> None:
        i = stages.index(stage) if stage in stages else len(stages) - 1
        progress(stage, (i + min(max(fraction, 0.0), 1.0)) / len(stages), message)

    return report


def _run_pipeline(
    cfg: Config,
    models: PipelineModels,
    session: Session,
    *,
    prompts: Prompts | None,
    stop_after: str,
    force: bool,
    progress: ProgressFn | None,
) -> tuple[RunDir, RunResult]:
    """Run `reconstruct` on the session's video and run folder with its own decoder.

    The session lock is not held meanwhile (scrubbing and clicks keep working); its ``run_lock``
    keeps a second run off the same folder, and its ``cancel`` flag stops this one.

    Raises:
        UserError: no video loaded, a run of this session is still going, or another video was
            loaded meanwhile (the results stay in the earlier run folder).
        StageCancelled: the user pressed Cancel.
        ValueError: as `reconstruct` (e.g. no targets found), with a sentence.
    """
    with session.lock:
        _require_video(session)
        path, run, max_side = session.video_path, session.run, session.max_side
    assert path is not None and run is not None
    if not session.run_lock.acquire(blocking=False):
        raise UserError("a run is still going for this video: wait for it to finish or press Cancel")
    try:
        session.cancel.clear()
        with open_video(path, max_side=max_side) as video:
            result = reconstruct(
                video,
                run,
                cfg,
                models,
                prompts=prompts,
                stop_after=stop_after,
                force=force,
                progress=_stage_progress(stop_after, progress),
                should_cancel=session.cancel.is_set,
            )
    finally:
        session.run_lock.release()
    with session.lock:
        if session.run is not run:
            raise UserError(
                f"another video was loaded while this run went on: its results stay in run folder {run.run_id}"
            )
    return run, result


def _mask_video(run: RunDir) -> Path | None:
    path = run.path(f"video_mask_{run.run_id}.mp4")
    return path if path.is_file() else None


def _ids(ids: tuple[int, ...] | list[int]) -> str:
    return ", ".join(map(str, ids))


def generate_masks(
    cfg: Config,
    models: PipelineModels,
    session: Session,
    *,
    auto: bool = False,
    progress: ProgressFn | None = None,
) -> MaskOutcome:
    """Segment every frame: from the session's clicks, or automatic people detection (``auto``).

    Masks are always made anew (earlier ones in the run folder are replaced); the run folder
    then marks the later stages stale, so 4D Generation redoes them from the new masks.

    Raises:
        UserError: no video, no clicked target (without ``auto``), or a run still going.
        StageCancelled: cancelled.
        ValueError: SAM-3 refused the prompts (the sentence says why).
    """
    with session.lock:
        _require_video(session)
        prompts = None if auto else session.prompts()
    if prompts is not None and not prompts.obj_ids:
        raise UserError(
            "no targets yet: click on a person in the frame (or press Auto-detect people) before Mask Generation"
        )
    started = time.monotonic()
    run, result = _run_pipeline(
        cfg, models, session, prompts=prompts, stop_after="masks", force=True, progress=progress
    )
    with session.lock:
        session.mask_prompts = prompts
    seconds = time.monotonic() - started
    n = run.manifest["video"]["n_frames"]
    if auto and not result.obj_ids:
        message = (
            f"Auto-detect found nobody in {n} frames ({seconds:.1f} s): click on the people instead, "
            "or lower sam3.detection_threshold."
        )
    elif auto:
        message = (
            f"Auto-detect found {len(result.obj_ids)} people (ids {_ids(result.obj_ids)}) and tracked "
            f"them over {n} frames in {seconds:.1f} s. Check the Segmentation Result, then press 4D Generation."
        )
    else:
        message = (
            f"Mask Generation done in {seconds:.1f} s: target(s) {_ids(result.obj_ids)} tracked over {n} "
            "frames. Check the Segmentation Result, then press 4D Generation."
        )
    log.info("session %s: %s", session.session_id, message)
    return MaskOutcome(result, _mask_video(run), message)


def generate_4d(
    cfg: Config, models: PipelineModels, session: Session, *, progress: ProgressFn | None = None
) -> BodiesOutcome:
    """Make the 3D bodies: the stages after the masks (made first from the clicks if missing).

    Stages already done in the run folder are skipped; after a new Mask Generation the whole
    recipe runs again from those masks. Ends with the run's zip and ``bodies.npz`` for download.

    Raises:
        UserError: no video, no masks and no clicked target, or a run still going.
        StageCancelled: cancelled.
        ValueError: nobody to reconstruct, or SAM-3 refused the prompts (the sentence says why).
    """
    with session.lock:
        info = _require_video(session)
        run = session.run
        assert run is not None
        has_masks = run.is_done("masks")
        prompts = session.mask_prompts if has_masks else session.prompts()
    if not has_masks and prompts is not None and not prompts.obj_ids:
        raise UserError(
            "no targets yet: click on the people to follow (or press Auto-detect people), then 4D Generation"
        )
    started = time.monotonic()
    run, result = _run_pipeline(
        cfg, models, session, prompts=prompts, stop_after="export", force=False, progress=progress
    )
    with session.lock:
        if not has_masks:
            session.mask_prompts = prompts
    zip_path = zip_run(run)
    export = run.manifest["stages"]["export"]
    meshes = int(export.get("files", 0))
    with np.load(run.path(BODIES_NAME)) as bodies:
        people = len(bodies["obj_ids"])
    seconds = time.monotonic() - started
    message = (
        f"4D Generation done in {seconds:.1f} s: {people} {'person' if people == 1 else 'people'}, {meshes} meshes (one OBJ per person per "
        f"frame over {info.n_frames} frames) in run {run.run_id}. Download the zip (whole run) or "
        f"{BODIES_NAME} (parameters, keypoints) below."
    )
    log.info("session %s: %s", session.session_id, message)
    return BodiesOutcome(result, _mask_video(run), [zip_path, run.path(BODIES_NAME)], people, meshes, message)


def cancel_run(session: Session) -> str:
    """Ask the session's running pipeline to stop after its current step; returns the status."""
    session.cancel.set()
    if not session.run_lock.locked():
        return "Nothing is running."
    return (
        "Cancelled: the running stage stops after its current frame (recorded as cancelled in "
        "manifest.json); finished stages are kept, press the button again to continue."
    )


# --------------------------------------------------------------------------- examples


def find_examples(folder: str | Path) -> list[Path]:
    """Video files directly in ``folder`` (sorted by name); none when the folder is missing."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)


def example_thumbnails(paths: list[Path]) -> tuple[list[Path], list[tuple[np.ndarray, str]]]:
    """First-frame thumbnails of the example videos that can be read (others are logged and skipped).

    Returns:
        The readable paths and, in the same order, ``(thumbnail uint8[h, w, 3], caption)``.
    """
    usable: list[Path] = []
    thumbs: list[tuple[np.ndarray, str]] = []
    for path in paths:
        try:
            with open_video(path) as video:
                rgb = video.frame(0)
        except VideoError as exc:
            log.warning("example %s skipped: %s", path, exc)
            continue
        h, w = rgb.shape[:2]
        usable.append(path)
        thumbs.append((to_display(rgb, display_scale(w, h, THUMB_MAX_SIDE)), path.stem))
    return usable, thumbs
