"""The Gradio adapter of the app: sessions looked up per browser, handler results turned into
widget updates, and the events bound to `body4d.ui.layout`.

The behaviour itself lives in plain handler modules (no Gradio), one per job: `body4d.ui.loading`
(upload, preview), `display` (frames), `prompts` (clicks, targets), `runs` (Mask Generation,
Auto-detect, 4D Generation, Cancel), `page` (what a session shows, recent runs). The queue's
concurrency limits are set here.

Every handler returns ``{widget: update}`` for the widgets it changes. An error never reaches
the widgets: it becomes the Status sentence and a toast, and every other widget keeps its value.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.utils import get_upload_folder

from body4d.checkpoints import CheckpointReport
from body4d.config import Config
from body4d.driver import PipelineModels
from body4d.errors import InputError
from body4d.jobs import Cancelled, ProgressFn
from body4d.retention import clean_outputs
from body4d.session import Session, SessionStore
from body4d.ui.access import request_owner
from body4d.ui.display import show_frame
from body4d.ui.layout import NEGATIVE, Widgets
from body4d.ui.loading import load_video, make_preview
from body4d.ui.page import ALL_PEOPLE, PageState, page_state, recent_runs, reopen_run, result_choices
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
from body4d.ui.repair import repair_target
from body4d.ui.runs import cancel_run, generate_4d, generate_masks
from body4d.ui.status import AUTO_DETECT, GENERATE_4D, MASK_GENERATION, REPAIR, Capabilities
from body4d.ui.system import Platform, system_status
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
# Errors a user can fix (bad file, no clicks, ...): logged as one line, shown as their sentence.
USER_ERRORS = (InputError, PromptError, VideoError, ValueError)
# The session key a browser keeps in its local storage (a session survives a reload).
BROWSER_KEY_BYTES = 24
BROWSER_KEY = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
SECONDS_PER_MINUTE = 60

Updates = dict[Any, Any]


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


@dataclass
class _GpuJob:
    """The run holding the GPU: whose, what and since when (for the queue message)."""

    session_id: str
    label: str
    started: float


class UiEvents:
    """Binds the widgets to the plain handler functions for every browser session.

    Args:
        cfg: app configuration.
        store: the per-session state store.
        report: checkpoint status (shown in the status panel).
        caps: which model-backed actions are available.
        examples: example video paths, in gallery order.
        models: the networks loaded once by the app, shared read-only (None = not loaded).
        platform: device, precision and renderer for the system panel (None = no panel updates).
    """

    def __init__(
        self,
        cfg: Config,
        store: SessionStore,
        report: CheckpointReport,
        caps: Capabilities,
        examples: list[Path],
        models: PipelineModels | None = None,
        platform: Platform | None = None,
    ) -> None:
        self.cfg = cfg
        self.platform = platform
        self.store = store
        self.report = report
        self.caps = caps
        self.examples = examples
        self.models = models
        self.open_tracker = tracker_factory(models) if caps.segment is None else None
        self._w: Widgets | None = None
        self._gpu_job: _GpuJob | None = None
        self._gpu_lock = threading.Lock()
        self._clean_lock = threading.Lock()

    # ------------------------------------------------------------------ retention
    def clean_outputs(self) -> None:
        """Apply the retention limits (``app.retention_*``) to the run folders and Gradio's cache,
        keeping what live sessions have loaded; skipped while another clean is going."""
        if not self._clean_lock.acquire(blocking=False):
            return
        try:
            app = self.cfg.app
            clean_outputs(
                self.cfg.runtime.output_dir,
                get_upload_folder(),
                max_run_hours=app.retention_run_hours,
                max_cache_hours=app.retention_cache_hours,
                max_total_gb=app.retention_gb,
                keep=self.store.in_use(),
            )
        except OSError:  # a full or read-only disk must not stop the app: the next clean retries
            log.exception("retention: cleaning %s failed", self.cfg.runtime.output_dir)
        finally:
            self._clean_lock.release()

    @contextlib.contextmanager
    def cleaning_after(self) -> Iterator[None]:
        """Clean the outputs in the background once the block (a pipeline run) ends, however."""
        try:
            yield
        finally:
            threading.Thread(target=self.clean_outputs, name="body4d-retention-run", daemon=True).start()

    def start_retention(self) -> threading.Thread:
        """Clean the outputs now and every ``app.retention_every_minutes``, in a daemon thread."""
        every_s = self.cfg.app.retention_every_minutes * SECONDS_PER_MINUTE

        def loop() -> None:
            while True:
                self.clean_outputs()
                time.sleep(every_s)

        thread = threading.Thread(target=loop, name="body4d-retention", daemon=True)
        thread.start()
        return thread

    @property
    def w(self) -> Widgets:
        """The bound widgets (`bind` must have run)."""
        if self._w is None:
            raise RuntimeError("UiEvents.bind(demo, widgets) must be called before the handlers")
        return self._w

    def session_for(self, request: gr.Request, key: str | None = None) -> Session:
        """The caller's session (by ``key``, else its session hash); the caller's owner cookie
        may download its runs from now on."""
        session = self.store.get(key or request.session_hash or "")
        owner = request_owner(request)
        if owner is not None:
            with session.lock:
                session.owners.add(owner)
        return session

    def _fail(self, label: str | None, session: Session, exc: Exception, path: Path | None = None) -> Updates:
        """The error as the Status sentence and a toast; every other widget keeps its value."""
        text = _user_message(exc, path)
        if isinstance(exc, USER_ERRORS):
            log.info("session %s: %s refused: %s", session.session_id, label or "request", text)
            message = f"{label}: {text}" if label else text
        else:  # a failure inside a model or the disk: log it all, tell the user where to look
            log.error("session %s: %s failed", session.session_id, label or "request", exc_info=exc)
            where = f" and {session.run.root / 'manifest.json'}" if session.run is not None else ""
            message = (
                f"{label or 'The request'} failed ({type(exc).__name__}: {text}). Details are in the app "
                f"log{where}; press the button again to retry (finished stages are kept)."
            )
        gr.Warning(message)
        return {self.w.status: message}

    # ------------------------------------------------------------------ page
    def _page(self, state: PageState, message: str) -> Updates:
        """Every widget a load, a reload or a reopened run sets."""
        w = self.w
        n = state.n_frames
        video = _path_or_none(state.result_video)
        glb = _path_or_none(state.scene_glb)
        return {
            w.frame: None if state.view is None else state.view.image,
            w.slider: gr.Slider(
                minimum=0,
                maximum=max(n - 1, 1),
                value=0 if state.view is None else state.view.index,
                step=1,
                interactive=n > 1,
            ),
            w.time: "" if state.view is None else state.view.time,
            w.targets: gr.Radio(choices=state.targets, value=state.current_target),
            w.status: message,
            w.preview_video: _path_or_none(state.preview),
            w.mask_video: _path_or_none(state.mask_video),
            w.result_video: video,
            w.result_choice: gr.update(
                choices=result_choices(state.result_ids) if video else [],
                value=ALL_PEOPLE if video else None,
                visible=video is not None,
            ),
            w.viewer3d: glb,
            w.downloads: [str(p) for p in state.downloads] or None,
        }

    @staticmethod
    def _unchanged(widget: Any) -> Updates:
        """Nothing changes (Gradio needs at least one of the event's outputs in the answer)."""
        return {widget: gr.skip()}

    def _system(self) -> Updates:
        """The system panel now (GPU memory and where the models are change between runs)."""
        if self.platform is None:
            return {}
        return {self.w.system: system_status(self.platform, self.models).markdown()}

    def _runs_choices(self, session: Session) -> Any:
        entries = recent_runs(self.cfg, session)
        return gr.update(choices=[(e.label, e.run_id) for e in entries], value=None, visible=bool(entries))

    def restore(self, key: str | None, request: gr.Request) -> Updates:
        """Page loaded: find the browser's session (by the key in its local storage) and show it."""
        early = request.session_hash
        if early and early in self.store and self.store.get(early).has_video:
            key = early  # a video was uploaded before this event ran: that session is the page's
        elif not key or not BROWSER_KEY.match(key):
            key = secrets.token_urlsafe(BROWSER_KEY_BYTES)
        if early and early != key:
            self.store.alias(early, key)
        session = self.session_for(request, key)
        with session.lock:
            if not session.has_video:
                return {
                    self.w.browser_key: key,
                    self.w.recent_runs: self._runs_choices(session),
                    **self._system(),
                }
            state = page_state(session)
            assert session.video_path is not None
            name = session.video_path.name
        message = (
            f"Welcome back: {name} is still loaded (run {session.run.run_id if session.run else '?'}), "
            "with your targets and results."
        )
        return {
            **self._page(state, message),
            self.w.browser_key: key,
            self.w.recent_runs: self._runs_choices(session),
            **self._system(),
        }

    # ------------------------------------------------------------------ loading
    def upload(self, path: str | None, request: gr.Request) -> Updates:
        """File uploaded: load it and reset the page to its frame 0."""
        if not path:
            return self._unchanged(self.w.status)
        return self._load(Path(path), request)

    def pick_example(self, evt: gr.SelectData, request: gr.Request) -> Updates:
        """Gallery item clicked: load that example video."""
        index = evt.index if isinstance(evt.index, int) else evt.index[0]
        if not 0 <= index < len(self.examples):
            session = self.session_for(request)
            return self._fail(None, session, InputError("that example does not exist: reload the page"))
        return self._load(self.examples[index], request)

    def _load(self, path: Path, request: gr.Request) -> Updates:
        session = self.session_for(request)
        try:
            with session.lock:
                result = load_video(self.cfg, session, path)
                state = page_state(session)
        except Exception as exc:  # noqa: BLE001 - every failure becomes the status sentence
            with session.lock:
                kept = session.video_path.name if session.video_path is not None else None
            out = self._fail(None, session, exc, path)
            if kept:
                out[self.w.status] += f" ({kept} is still loaded.)"
            return {**out, self.w.upload: None}
        return {**self._page(state, result.message), self.w.recent_runs: self._runs_choices(session)}

    def remove_upload(self, request: gr.Request) -> Updates:
        """× on the upload: forget the video (its run folder stays in the recent-runs list)."""
        session = self.session_for(request)
        with session.lock:
            if not session.has_video:
                return self._unchanged(self.w.status)
            name = session.video_path.name if session.video_path else "the video"
            session.unload_video()
            state = page_state(session)
        return {
            **self._page(state, f"{name} removed. Upload a video or pick an example to start."),
            self.w.recent_runs: self._runs_choices(session),
        }

    def preview(self, request: gr.Request, progress: gr.Progress = gr.Progress()) -> Updates:  # noqa: B008
        """After a load: the browser-playable preview video (nothing after a refused upload, which
        left the session as it was)."""
        session = self.session_for(request)
        with session.lock:
            if not session.has_video or session.preview_path is not None:
                return self._unchanged(self.w.status)

        def report(done: int, total: int) -> None:
            progress((done, total), desc="H.264 preview")

        try:
            path = make_preview(session, on_progress=report)
        except Exception as exc:  # noqa: BLE001 - every failure becomes the status sentence
            return self._fail("Preview", session, exc, session.video_path)
        if path is None:
            return self._unchanged(self.w.status)
        return {
            self.w.preview_video: str(path),
            self.w.status: "Browser preview ready. Pick a frame and click on a person to add points.",
        }

    def reopen(self, run_id: str | None, request: gr.Request) -> Updates:
        """A recent run picked: load it with its results."""
        if not run_id:
            return self._unchanged(self.w.status)
        session = self.session_for(request)
        if session.busy:
            return self._fail(None, session, InputError("a run is going: wait for it or press Cancel first"))
        try:
            with session.lock:
                message = reopen_run(self.cfg, session, run_id)
                state = page_state(session)
        except Exception as exc:  # noqa: BLE001 - every failure becomes the status sentence
            return self._fail("Reopen", session, exc)
        return {**self._page(state, message), self.w.recent_runs: self._runs_choices(session)}

    # ------------------------------------------------------------------ frames and prompts
    def scrub(self, index: float, request: gr.Request) -> Updates:
        """Slider moved: show that frame."""
        session = self.session_for(request)
        with session.lock:
            if not session.has_video:
                return self._unchanged(self.w.frame)
            view = show_frame(session, int(index))
        return {self.w.frame: view.image, self.w.time: view.time}

    def click(self, point_type: str, evt: gr.SelectData, request: gr.Request) -> Updates:
        """Frame clicked: record the point and redraw."""
        session = self.session_for(request)
        if not evt.index or len(evt.index) != 2:
            return self._unchanged(self.w.status)
        req = ClickRequest(float(evt.index[0]), float(evt.index[1]), point_type != NEGATIVE)
        try:
            with session.lock:
                result = add_click(session, req, self.caps, self.report, self.open_tracker)
                targets = gr.Radio(choices=target_choices(session), value=session.current_target)
        except Exception as exc:  # noqa: BLE001 - every failure becomes the status sentence
            return self._fail(None, session, exc)
        return {self.w.frame: result.view.image, self.w.targets: targets, self.w.status: result.message}

    def _targets_event(self, action: Callable[[Session], str], request: gr.Request) -> Updates:
        session = self.session_for(request)
        try:
            with session.lock:
                message = action(session)
                targets = gr.Radio(choices=target_choices(session), value=session.current_target)
                image = show_frame(session, session.current_frame).image if session.has_video else None
        except Exception as exc:  # noqa: BLE001 - every failure becomes the status sentence
            return self._fail(None, session, exc)
        out = {self.w.targets: targets, self.w.status: message}
        return out if image is None else {**out, self.w.frame: image}

    def add_target(self, request: gr.Request) -> Updates:
        """Add Target clicked."""
        return self._targets_event(add_target, request)

    def select_target(self, target_id: int | None, request: gr.Request) -> Updates:
        """A target picked in the targets list."""
        if target_id is None:
            return self._unchanged(self.w.status)
        return self._targets_event(lambda s: select_target(s, target_id), request)

    def remove_target(self, request: gr.Request) -> Updates:
        """Remove Target clicked."""
        return self._targets_event(remove_target, request)

    def clear_targets(self, request: gr.Request) -> Updates:
        """Clear Targets clicked."""
        return self._targets_event(clear_targets, request)

    # ------------------------------------------------------------------ runs
    def _run_buttons(self, enabled: bool) -> Updates:
        w, caps = self.w, self.caps
        return {
            w.mask_generation: gr.update(interactive=enabled and caps.segment is None),
            w.auto_detect: gr.update(interactive=enabled and caps.segment is None),
            w.repair: gr.update(interactive=enabled and caps.segment is None),
            w.generate_4d: gr.update(interactive=enabled and caps.reconstruct is None),
        }

    def begin_run(self, request: gr.Request) -> Updates:
        """A run button pressed: disable the run buttons and say whether the run waits for the GPU."""
        session = self.session_for(request)
        with session.lock:
            if not session.has_video:
                return self._unchanged(self.w.status)  # the run itself says what is missing
            session.pending += 1
        with self._gpu_lock:
            job = self._gpu_job
        if job is not None and job.session_id != session.session_id:
            waited = time.monotonic() - job.started
            message = (
                f"Queued: another user is running a job ({job.label}, for {waited:.0f} s). Yours starts when "
                "it finishes; the queue position is shown above. Cancel takes it out of the queue."
            )
        else:
            message = "Starting…"
        return {**self._run_buttons(False), self.w.status: message}

    def end_run(self, request: gr.Request) -> Updates:
        """A run ended (done, failed or cancelled): the run buttons work again."""
        session = self.session_for(request)
        return {**self._run_buttons(True), self.w.recent_runs: self._runs_choices(session), **self._system()}

    def _pipeline(
        self, label: str, blocker: str | None, request: gr.Request, action: Callable[..., Any]
    ) -> Any:
        """Run ``action(models, session)`` holding the GPU; the outcome, or Updates on failure."""
        session = self.session_for(request)
        with session.lock:
            session.pending = max(0, session.pending - 1)
        if blocker is not None or self.models is None:
            reason = blocker or "the models are not loaded"
            return self._fail(label, session, InputError(f"unavailable: {reason}"))
        with self._gpu_lock:
            self._gpu_job = _GpuJob(session.session_id, label, time.monotonic())
        try:
            with self.cleaning_after():
                return action(self.models, session)
        except Cancelled:
            log.info("session %s: %s cancelled", session.session_id, label)
            return {self.w.status: _cancelled(label)}
        except Exception as exc:
            return self._fail(label, session, exc)
        finally:
            with self._gpu_lock:
                self._gpu_job = None

    def mask_generation(self, request: gr.Request, progress: gr.Progress = gr.Progress()) -> Updates:  # noqa: B008
        """Mask Generation clicked: segment the video from the clicks; show the mask video."""
        return self._masks(MASK_GENERATION, request, progress, auto=False)

    def auto_detect(self, request: gr.Request, progress: gr.Progress = gr.Progress()) -> Updates:  # noqa: B008
        """Auto-detect people clicked: find and track everyone; show the mask video."""
        return self._masks(AUTO_DETECT, request, progress, auto=True)

    def _new_masks(self, session: Session, mask_video: Path | None, message: str) -> Updates:
        """New masks: the Segmentation Result video, the current frame redrawn with them, the status."""
        with session.lock:
            image = show_frame(session, session.current_frame).image
        return {self.w.mask_video: _path_or_none(mask_video), self.w.frame: image, self.w.status: message}

    def _masks(self, label: str, request: gr.Request, progress: gr.Progress, auto: bool) -> Updates:
        def action(models: PipelineModels, session: Session) -> Updates:
            outcome = generate_masks(
                self.cfg, models, session, auto=auto, progress=_gradio_progress(progress)
            )
            return self._new_masks(session, outcome.mask_video, outcome.message)

        return self._pipeline(label, self.caps.segment, request, action)

    def repair(self, request: gr.Request, progress: gr.Progress = gr.Progress()) -> Updates:  # noqa: B008
        """Re-track Target clicked: re-propagate the selected target alone from its new clicks."""

        def action(models: PipelineModels, session: Session) -> Updates:
            with session.lock:
                target = session.current_target
            outcome = repair_target(self.cfg, models, session, target, progress=_gradio_progress(progress))
            return self._new_masks(session, outcome.mask_video, outcome.message)

        return self._pipeline(REPAIR, self.caps.segment, request, action)

    def generate_4d(self, request: gr.Request, progress: gr.Progress = gr.Progress()) -> Updates:  # noqa: B008
        """4D Generation clicked: 3D bodies for every target; show the 4D result video (all people,
        or each person alone), the animated GLB; offer the zip, bodies.npz and the bundles."""

        def action(models: PipelineModels, session: Session) -> Updates:
            outcome = generate_4d(self.cfg, models, session, progress=_gradio_progress(progress))
            glb = _path_or_none(outcome.scene_glb)
            video = _path_or_none(outcome.result_video)
            w = self.w
            return {
                w.mask_video: _path_or_none(outcome.mask_video),
                w.result_video: video,
                w.result_choice: gr.update(
                    choices=result_choices(list(outcome.result.obj_ids)),
                    value=ALL_PEOPLE,
                    visible=video is not None,
                ),
                w.viewer3d: glb,
                w.downloads: [str(p) for p in outcome.downloads],
                w.status: outcome.message,
            }

        return self._pipeline(GENERATE_4D, self.caps.reconstruct, request, action)

    def show_result(self, choice: str | None, request: gr.Request) -> Updates:
        """4D Result shows: all people, or one person alone (their own video)."""
        session = self.session_for(request)
        with session.lock:
            run = session.run
        if run is None or not choice:
            return self._unchanged(self.w.result_video)
        path = run.result_video_path() if choice == ALL_PEOPLE else run.individual_video_path(int(choice))
        return {self.w.result_video: str(path)} if path is not None and path.is_file() else {}

    def cancel(self, request: gr.Request) -> Updates:
        """Cancel clicked: stop this session's running or queued run."""
        return {self.w.status: cancel_run(self.session_for(request))}

    def unload(self, request: gr.Request) -> None:
        """Browser tab closed or reloaded: release the session's decoder and tracker (reopened on
        use) and forget this page load; the session itself stays for a reload."""
        if not request.session_hash:
            return
        key = self.store.resolve(request.session_hash)
        self.store.unalias(request.session_hash)
        if key in self.store:
            session = self.store.get(key)
            with session.lock:
                if not session.busy:
                    session.close()

    # ------------------------------------------------------------------ wiring
    def bind(self, demo: gr.Blocks, w: Widgets) -> None:
        """Attach every event to the widgets (call once, after `build_layout`)."""
        self._w = w
        page_outputs = [
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
            w.recent_runs,
        ]
        # The page's own events stay off the public API (scripts use body4d.ui.api's endpoints).
        private = {"api_visibility": "private"}
        light = {"concurrency_limit": None, "show_progress": "hidden", **private}
        load = {"concurrency_id": "load", "concurrency_limit": LOAD_CONCURRENCY, **private}
        preview = {"concurrency_id": "preview", "concurrency_limit": PREVIEW_CONCURRENCY, **private}
        with demo:
            demo.load(self.restore, [w.browser_key], [w.browser_key, w.system, *page_outputs], **light)
            for event in (
                w.upload.upload(self.upload, [w.upload], [*page_outputs, w.upload], **load),
                w.examples.select(self.pick_example, None, page_outputs, **load),
            ):
                event.success(self.preview, None, [w.preview_video, w.status], **preview)
            w.upload.clear(self.remove_upload, None, page_outputs, **light)
            w.recent_runs.input(self.reopen, [w.recent_runs], page_outputs, **load).success(
                self.preview, None, [w.preview_video, w.status], **preview
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
                    **private,
                }
            )
            prompt_outputs = [w.frame, w.targets, w.status]
            w.frame.select(self.click, [w.point_type], prompt_outputs, **prompt)
            w.add_target.click(self.add_target, None, prompt_outputs, **light)
            w.targets.input(self.select_target, [w.targets], prompt_outputs, **light)
            w.remove_target.click(self.remove_target, None, prompt_outputs, **prompt)
            w.clear_targets.click(self.clear_targets, None, prompt_outputs, **prompt)
            buttons = [w.mask_generation, w.auto_detect, w.repair, w.generate_4d]
            gpu = {"concurrency_id": "gpu", "concurrency_limit": GPU_CONCURRENCY, **private}
            for button, handler, outputs in (
                (w.mask_generation, self.mask_generation, [w.mask_video, w.frame, w.status]),
                (w.auto_detect, self.auto_detect, [w.mask_video, w.frame, w.status]),
                (w.repair, self.repair, [w.mask_video, w.frame, w.status]),
                (
                    w.generate_4d,
                    self.generate_4d,
                    [w.mask_video, w.result_video, w.result_choice, w.viewer3d, w.downloads, w.status],
                ),
            ):
                button.click(self.begin_run, None, [*buttons, w.status], **light).then(
                    handler, None, outputs, **gpu
                ).then(self.end_run, None, [*buttons, w.recent_runs, w.system], **light)
            w.result_choice.input(self.show_result, [w.result_choice], [w.result_video], **light)
            w.cancel.click(self.cancel, None, [w.status], **light)
            demo.unload(self.unload)
