"""The Gradio adapter of the app: sessions looked up per browser, handler results turned into
widget updates, errors into `gr.Error` sentences, and the events bound to `body4d.ui.layout`.

The behaviour itself lives in plain handler modules (no Gradio), one per job: `body4d.ui.loading`
(upload, preview), `display` (frames), `prompts` (clicks, targets), `runs` (Mask Generation,
Auto-detect, 4D Generation, Cancel). The queue's concurrency limits are set here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

from body4d.checkpoints import CheckpointReport
from body4d.config import Config
from body4d.driver import PipelineModels
from body4d.errors import InputError
from body4d.jobs import Cancelled, ProgressFn
from body4d.run_dir import RunDirError
from body4d.session import Session, SessionStore
from body4d.ui.display import show_frame
from body4d.ui.layout import NEGATIVE, Widgets
from body4d.ui.loading import load_video, make_preview
from body4d.ui.prompts import (
    ClickRequest,
    add_click,
    add_target,
    clear_targets,
    remove_target,
    select_target,
    target_choices,
    tracker_factory,
)
from body4d.ui.runs import cancel_run, generate_4d, generate_masks
from body4d.ui.status import AUTO_DETECT, GENERATE_4D, MASK_GENERATION, Capabilities
from body4d.video import VideoError
from models.frames import PromptError

log = logging.getLogger(__name__)

# Uploads decoding at once (cheap: probe + index) and previews encoding at once (CPU-heavy x264).
LOAD_CONCURRENCY = 2
PREVIEW_CONCURRENCY = 1
# Pipeline runs at once over all users: one GPU job at a time (the models are shared).
GPU_CONCURRENCY = 1
# Click/target edits that run SAM-3 at once: tens of ms each, serialised to bound GPU memory.
PROMPT_CONCURRENCY = 1
# The 4D Result choice that shows every person (the other choices are object ids).
ALL_PEOPLE = "All people"


def _user_message(exc: Exception, path: Path | None = None) -> str:
    """The exception's sentence, with a long upload path shortened to the file name."""
    text = str(exc)
    if path is not None:
        text = text.replace(str(path), path.name)
    return text


def _gradio_progress(progress: gr.Progress) -> ProgressFn:
    def report(stage: str, fraction: float, message: str) -> None:
        progress(fraction, desc=f"{stage}: {message}")

    return report


def _cancelled(label: str) -> str:
    return f"{label} cancelled. Finished stages are kept: press {label} again to continue."


def _path_or_none(path: Path | None) -> str | None:
    return None if path is None else str(path)


class UiEvents:
    """Binds the widgets to the plain handler functions for every browser session.

    Attributes:
        n_load_outputs: widgets a video load updates (frame, slider, time, targets, status, and
            the six result widgets it empties).

    Args:
        cfg: app configuration.
        store: the per-session state store.
        report: checkpoint status (shown in the status panel).
        caps: which model-backed actions are available.
        examples: example video paths, in gallery order.
        models: the networks loaded once by the app, shared read-only (None = not loaded).
    """

    n_load_outputs = 11

    def __init__(
        self,
        cfg: Config,
        store: SessionStore,
        report: CheckpointReport,
        caps: Capabilities,
        examples: list[Path],
        models: PipelineModels | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.report = report
        self.caps = caps
        self.examples = examples
        self.models = models
        self.open_tracker = tracker_factory(models) if caps.segment is None else None

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
            gr.update(choices=[], value=None, visible=False),
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
        except (VideoError, InputError, RunDirError) as exc:
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
                result = add_click(session, req, self.caps, self.report, self.open_tracker)
                targets = gr.Radio(choices=target_choices(session), value=session.current_target)
        except InputError as exc:
            raise gr.Error(str(exc)) from exc
        return result.view.image, targets, result.message

    def _targets_event(self, action: Callable[[Session], str], request: gr.Request) -> tuple[Any, Any, Any]:
        session = self._session(request)
        try:
            with session.lock:
                message = action(session)
                targets = gr.Radio(choices=target_choices(session), value=session.current_target)
                image = show_frame(session, session.current_frame).image if session.has_video else gr.skip()
        except InputError as exc:
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

    def mask_generation(
        self,
        request: gr.Request,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> tuple[Any, Any]:
        """Mask Generation clicked: segment the video from the clicks; show the mask video."""
        return self._masks(MASK_GENERATION, request, progress, auto=False)

    def auto_detect(
        self,
        request: gr.Request,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> tuple[Any, Any]:
        """Auto-detect people clicked: find and track everyone; show the mask video."""
        return self._masks(AUTO_DETECT, request, progress, auto=True)

    def _masks(self, label: str, request: gr.Request, progress: gr.Progress, auto: bool) -> tuple[Any, Any]:
        models = self._models(self.caps.segment, label)
        session = self._session(request)
        outcome = self._guard(
            label,
            session,
            lambda: generate_masks(self.cfg, models, session, auto=auto, progress=_gradio_progress(progress)),
        )
        if outcome is None:
            return gr.skip(), _cancelled(label)
        return _path_or_none(outcome.mask_video), outcome.message

    def generate_4d(
        self,
        request: gr.Request,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> tuple[Any, Any, Any, Any, Any, Any]:
        """4D Generation clicked: 3D bodies for every target; show the 4D result video (all people,
        or each person alone), the animated GLB; offer the zip, bodies.npz and the bundles."""
        models = self._models(self.caps.reconstruct, GENERATE_4D)
        session = self._session(request)
        outcome = self._guard(
            GENERATE_4D,
            session,
            lambda: generate_4d(self.cfg, models, session, progress=_gradio_progress(progress)),
        )
        if outcome is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), _cancelled(GENERATE_4D)
        glb = _path_or_none(outcome.scene_glb)
        video = _path_or_none(outcome.result_video)
        choices = [(ALL_PEOPLE, ALL_PEOPLE)] + [(f"Person {i}", str(i)) for i in outcome.result.obj_ids]
        return (
            _path_or_none(outcome.mask_video),
            video,
            gr.update(choices=choices, value=ALL_PEOPLE, visible=video is not None),
            gr.update(value=glb, visible=glb is not None),
            [str(p) for p in outcome.downloads],
            outcome.message,
        )

    def show_result(self, choice: str | None, request: gr.Request) -> Any:
        """4D Result shows: all people, or one person alone (their own video)."""
        session = self._session(request)
        with session.lock:
            run = session.run
        if run is None or not choice:
            return gr.skip()
        path = run.result_video_path() if choice == ALL_PEOPLE else run.individual_video_path(int(choice))
        return _path_or_none(path) if path is not None and path.is_file() else gr.skip()

    def cancel(self, request: gr.Request) -> str:
        """Cancel clicked: stop this session's run (Gradio also drops its queued jobs)."""
        return cancel_run(self._session(request))

    def _models(self, blocker: str | None, label: str) -> PipelineModels:
        if blocker is not None or self.models is None:
            raise gr.Error(f"{label} is unavailable: {blocker or 'the models are not loaded'}")
        return self.models

    def _guard(self, label: str, session: Session, action: Callable[[], Any]) -> Any:
        """Run ``action``; None when cancelled, errors as `gr.Error` sentences."""
        try:
            return action()
        except Cancelled:
            log.info("session %s: %s cancelled", session.session_id, label)
            return None
        except (InputError, PromptError, VideoError, RunDirError) as exc:
            raise gr.Error(f"{label}: {exc}") from exc
        except ValueError as exc:  # reconstruct's input errors (e.g. nobody found) carry a sentence
            raise gr.Error(f"{label}: {exc}") from exc
        except Exception as exc:  # the run failed inside a model: log it all, tell the user where to look
            log.exception("session %s: %s failed", session.session_id, label)
            where = f" and {session.run.root / 'manifest.json'}" if session.run is not None else ""
            raise gr.Error(
                f"{label} failed ({type(exc).__name__}: {exc}). Details are in the app log{where}; "
                "press the button again to retry (finished stages are kept)."
            ) from exc

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
            w.result_choice,
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
            # With SAM-3 loaded, clicks and target removals run the model: they share a small pool.
            prompt = (
                light
                if self.open_tracker is None
                else {
                    "concurrency_id": "prompt",
                    "concurrency_limit": PROMPT_CONCURRENCY,
                    "show_progress": "hidden",
                }
            )
            w.frame.select(self.click, [w.point_type], [w.frame, w.targets, w.status], **prompt)
            prompt_outputs = [w.frame, w.targets, w.status]
            w.add_target.click(self.add_target, None, prompt_outputs, **light)
            w.targets.input(self.select_target, [w.targets], prompt_outputs, **light)
            w.remove_target.click(self.remove_target, None, prompt_outputs, **prompt)
            w.clear_targets.click(self.clear_targets, None, prompt_outputs, **prompt)
            gpu = {"concurrency_id": "gpu", "concurrency_limit": GPU_CONCURRENCY}
            runs = [
                w.mask_generation.click(self.mask_generation, None, [w.mask_video, w.status], **gpu),
                w.auto_detect.click(self.auto_detect, None, [w.mask_video, w.status], **gpu),
                w.generate_4d.click(
                    self.generate_4d,
                    None,
                    [w.mask_video, w.result_video, w.result_choice, w.viewer3d, w.downloads, w.status],
                    **gpu,
                ),
            ]
            w.result_choice.input(self.show_result, [w.result_choice], [w.result_video], **light)
            w.cancel.click(self.cancel, None, [w.status], cancels=runs, **light)
            demo.unload(self.unload)
