"""App event handlers: widget values → typed requests → results → widget updates.

Two layers:
- plain functions (`load_video`, `make_preview`, `show_frame`, `add_click`, target edits,
  `models_markdown`, ...) that take a `Session` and typed values and return dataclasses; they
  know nothing about Gradio and are tested directly;
- `UiEvents`, which looks up the caller's session in the `SessionStore`, calls those functions,
  turns their results into Gradio updates and their errors into `gr.Error` sentences, and binds
  itself to the widgets of `body4d.ui.layout`.

Pixel coordinates: the frame on screen may be downscaled (`DISPLAY_MAX_SIDE`); clicks are
converted back and stored in the video's own pixel coordinates.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from body4d.config import Config
from body4d.masks import draw_clicks
from body4d.run_dir import RunDir, RunDirError
from body4d.session import Session, SessionStore
from body4d.types import Click, VideoInfo
from body4d.ui.layout import NEGATIVE, ButtonSpec, LayoutSpec, Widgets
from body4d.video import VIDEO_EXTENSIONS, Video, VideoError, open_video, probe
from models.registry import SETUP_HINT, CheckpointReport

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
) -> Capabilities:
    """Decide what the app can do from the checkpoint report and the models actually loaded."""
    missing = {Path(item.path) for item in report.missing}
    sam3_missing = Path(cfg.sam3.ckpt_path) in missing
    body = cfg.sam_3d_body
    body_paths = [body.ckpt_path, body.config_path, body.mhr_path] + (
        [body.fov_path] if body.fov_path else []
    )
    body_missing = any(Path(p) in missing for p in body_paths)
    if sam3_missing:
        segment: str | None = "needs the SAM-3 checkpoint"
    elif not segmenter_loaded:
        segment = "SAM-3 is not loaded in this version of the app"
    else:
        segment = None
    if sam3_missing and body_missing:
        reconstruct: str | None = "needs the SAM-3 and SAM-3D-Body checkpoints"
    elif body_missing:
        reconstruct = "needs the SAM-3D-Body checkpoints"
    elif segment is not None:
        reconstruct = segment
    elif not reconstructor_loaded:
        reconstruct = "SAM-3D-Body is not loaded in this version of the app"
    else:
        reconstruct = None
    return Capabilities(segment=segment, reconstruct=reconstruct)


def _button(label: str, blocker: str | None) -> ButtonSpec:
    if blocker is None:
        return ButtonSpec(label, interactive=True)
    return ButtonSpec(f"{label} ({blocker})", interactive=False)


def layout_spec(
    report: CheckpointReport, caps: Capabilities, examples: list[tuple[np.ndarray, str]]
) -> LayoutSpec:
    """Everything `build_layout` needs to know: texts, gallery items, button states."""
    return LayoutSpec(
        models_markdown=models_markdown(report),
        examples=examples,
        auto_detect=_button("Auto-detect people", caps.segment),
        mask_generation=_button("Mask Generation", caps.segment),
        generate_4d=_button("4D Generation", caps.reconstruct),
        cancel=ButtonSpec("Cancel (nothing is running)", interactive=False),
    )


def models_markdown(report: CheckpointReport) -> str:
    """The status panel: one line per checkpoint and, when any is missing, the exact fix."""
    if report.ok:
        head = "**Models:** all checkpoints present."
        if report.uses_tiny:
            head += " Some are tiny test checkpoints: results are meaningless."
        return f"{head}\n\n```\n{report.text()}\n```"
    names = ", ".join(item.name for item in report.missing)
    fix = SETUP_HINT.format(root=report.ckpt_root)
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
    """Make ``index`` the current frame and render it with the clicks placed on it.

    Raises:
        UserError: no video loaded.
    """
    info = _require_video(session)
    index = min(max(int(index), 0), info.n_frames - 1)
    session.current_frame = index
    rgb = session.frame(index)
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


def add_click(
    session: Session, request: ClickRequest, caps: Capabilities, report: CheckpointReport
) -> PromptResult:
    """Record a click on the current frame for the current target and draw its marker.

    Raises:
        UserError: no video loaded.
    """
    info = _require_video(session)
    scale = display_scale(info.width, info.height)
    x, y = display_to_video(request.x, request.y, scale, info)
    click = Click(frame=session.current_frame, x=x, y=y, positive=request.positive)
    session.add_click(click)
    view = show_frame(session, session.current_frame)
    count = len(session.targets[session.current_target])
    kind = "positive" if click.positive else "negative"
    message = (
        f"Target {session.current_target}: {kind} click at (x={x:.0f}, y={y:.0f}) on frame {click.frame} "
        f"({count} click{'s' if count != 1 else ''} on this target)."
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


# --------------------------------------------------------------------------- Gradio adapter


def _user_message(exc: Exception, path: Path | None = None) -> str:
    """The exception's sentence, with a long upload path shortened to the file name."""
    text = str(exc)
    if path is not None:
        text = text.replace(str(path), path.name)
    return text


class UiEvents:
    """Binds the widgets to the handlers above for every browser session.

    Attributes:
        n_load_outputs: widgets a video load updates (frame, slider, time, targets, status, and
            the five result widgets it empties).

    Args:
        cfg: app configuration.
        store: the per-session state store.
        report: checkpoint status (shown in the status panel).
        caps: which model-backed actions are available.
        examples: example video paths, in gallery order.
    """

    n_load_outputs = 10

    def __init__(
        self,
        cfg: Config,
        store: SessionStore,
        report: CheckpointReport,
        caps: Capabilities,
        examples: list[Path],
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.report = report
        self.caps = caps
        self.examples = examples

    def _session(self, request: gr.Request) -> Session:
        return self.store.get(request.session_hash or "")

    # ------------------------------------------------------------------ events
    def upload(self, path: str | None, request: gr.Request) -> tuple[Any, ...]:
        """File uploaded: load it and reset the page to its frame 0."""
        if not path:
            return tuple(gr.skip() for _ in range(self.n_load_outputs))
        return self._load(Path(path), request)

    def pick_example(self, evt: gr.SelectData, request: gr.Request) -> tuple[Any, ...]:
        """Gallery item clicked: load that example video."""
        index = evt.index if isinstance(evt.index, int) else evt.index[0]
        if not 0 <= index < len(self.examples):
            raise gr.Error(f"example {index} does not exist: reload the page to refresh the gallery")
        return self._load(self.examples[index], request)

    def _load(self, path: Path, request: gr.Request) -> tuple[Any, ...]:
        session = self._session(request)
        try:
            with session.lock:
                result = load_video(self.cfg, session, path)
                choices = target_choices(session)
                current = session.current_target
        except (VideoError, RunDirError) as exc:
            raise gr.Error(_user_message(exc, path)) from exc
        info = result.info
        return (
            result.view.image,
            gr.Slider(
                minimum=0, maximum=max(info.n_frames - 1, 1), value=0, step=1, interactive=info.n_frames > 1
            ),
            result.view.time,
            gr.Radio(choices=choices, value=current),
            result.message,
            None,
            None,
            None,
            None,
            None,
        )

    def preview(self, request: gr.Request, progress: gr.Progress = gr.Progress()) -> Any:  # noqa: B008
        """After a load: the browser-playable preview video."""
        session = self._session(request)

        def report(done: int, total: int) -> None:
            progress((done, total), desc="H.264 preview")

        try:
            path = make_preview(session, on_progress=report)
        except (VideoError, UserError, RunDirError) as exc:
            raise gr.Error(_user_message(exc, session.video_path)) from exc
        return gr.skip() if path is None else str(path)

    def scrub(self, index: float, request: gr.Request) -> tuple[Any, Any]:
        """Slider moved: show that frame."""
        session = self._session(request)
        with session.lock:
            if not session.has_video:
                return gr.skip(), gr.skip()
            view = show_frame(session, int(index))
        return view.image, view.time

    def click(self, point_type: str, evt: gr.SelectData, request: gr.Request) -> tuple[Any, Any, Any]:
        """Frame clicked: record the point and redraw."""
        session = self._session(request)
        if not evt.index or len(evt.index) != 2:
            return gr.skip(), gr.skip(), gr.skip()
        req = ClickRequest(float(evt.index[0]), float(evt.index[1]), point_type != NEGATIVE)
        try:
            with session.lock:
                result = add_click(session, req, self.caps, self.report)
                targets = gr.Radio(choices=target_choices(session), value=session.current_target)
        except UserError as exc:
            raise gr.Error(str(exc)) from exc
        return result.view.image, targets, result.message

    def _targets_event(self, action: Callable[[Session], str], request: gr.Request) -> tuple[Any, Any, Any]:
        session = self._session(request)
        try:
            with session.lock:
                message = action(session)
                targets = gr.Radio(choices=target_choices(session), value=session.current_target)
                image = show_frame(session, session.current_frame).image if session.has_video else gr.skip()
        except UserError as exc:
            raise gr.Error(str(exc)) from exc
        return image, targets, message

    def add_target(self, request: gr.Request) -> tuple[Any, Any, Any]:
        """Add Target clicked."""
        return self._targets_event(add_target, request)

    def select_target(self, target_id: int | None, request: gr.Request) -> tuple[Any, Any, Any]:
        """A target picked in the targets list."""
        if target_id is None:
            return gr.skip(), gr.skip(), gr.skip()
        return self._targets_event(lambda s: select_target(s, target_id), request)

    def remove_target(self, request: gr.Request) -> tuple[Any, Any, Any]:
        """Remove Target clicked."""
        return self._targets_event(remove_target, request)

    def clear_targets(self, request: gr.Request) -> tuple[Any, Any, Any]:
        """Clear Targets clicked."""
        return self._targets_event(clear_targets, request)

    def unload(self, request: gr.Request) -> None:
        """Browser tab closed: drop its session."""
        if request.session_hash:
            self.store.drop(request.session_hash)

    # ------------------------------------------------------------------ wiring
    def bind(self, demo: gr.Blocks, w: Widgets) -> None:
        """Attach every event to the widgets (call once, after `build_layout`)."""
        load_outputs = [
            w.frame,
            w.slider,
            w.time,
            w.targets,
            w.status,
            w.preview_video,
            w.mask_video,
            w.result_video,
            w.viewer3d,
            w.downloads,
        ]
        assert len(load_outputs) == self.n_load_outputs
        light = {"concurrency_limit": None, "show_progress": "hidden"}
        with demo:
            for event in (
                w.upload.upload(
                    self.upload,
                    [w.upload],
                    load_outputs,
                    concurrency_id="load",
                    concurrency_limit=LOAD_CONCURRENCY,
                ),
                w.examples.select(
                    self.pick_example,
                    None,
                    load_outputs,
                    concurrency_id="load",
                    concurrency_limit=LOAD_CONCURRENCY,
                ),
            ):
                event.success(
                    self.preview,
                    None,
                    [w.preview_video],
                    concurrency_id="preview",
                    concurrency_limit=PREVIEW_CONCURRENCY,
                )
            w.slider.change(self.scrub, [w.slider], [w.frame, w.time], trigger_mode="always_last", **light)
            w.frame.select(self.click, [w.point_type], [w.frame, w.targets, w.status], **light)
            prompt_outputs = [w.frame, w.targets, w.status]
            w.add_target.click(self.add_target, None, prompt_outputs, **light)
            w.targets.input(self.select_target, [w.targets], prompt_outputs, **light)
            w.remove_target.click(self.remove_target, None, prompt_outputs, **light)
            w.clear_targets.click(self.clear_targets, None, prompt_outputs, **light)
            demo.unload(self.unload)
