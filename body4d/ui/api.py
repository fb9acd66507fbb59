"""Named API endpoints for scripted use through `gradio_client`: open a video, add points, segment,
reconstruct, fetch the results.

A `gradio_client.Client` is one session (its session hash), kept apart from browser users and
other clients. The endpoints call the same plain handlers as the buttons (`body4d.ui.loading`,
`prompts`, `runs`) and return JSON-ready dicts; points are in video pixels. Files come back as
`gradio.FileData` entries, which the client downloads and returns as local paths. Errors are
`gr.Error` sentences, raised by the client as ``gradio_client.exceptions.AppError``. The pipeline
endpoints share the buttons' GPU queue.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.data_classes import FileData
from gradio.utils import get_upload_folder

from body4d.driver import PipelineModels
from body4d.errors import InputError
from body4d.recipe import STAGES
from body4d.run_dir import RunDir
from body4d.session import Session
from body4d.types import VideoInfo
from body4d.ui.display import display_scale
from body4d.ui.downloads import person_files
from body4d.ui.events import GPU_CONCURRENCY, LOAD_CONCURRENCY, PROMPT_CONCURRENCY, UiEvents
from body4d.ui.loading import load_video
from body4d.ui.prompts import ClickRequest, add_click, add_target, select_target
from body4d.ui.runs import generate_4d, generate_masks

log = logging.getLogger(__name__)


def _file(path: Path | None) -> dict[str, Any] | None:
    """``path`` as a `FileData` the client downloads; None when there is no such file."""
    if path is None or not path.is_file():
        return None
    return FileData(path=str(path)).model_dump()


def run_results(run: RunDir) -> dict[str, Any]:
    """The run's status and every result file that exists, as the ``/results`` endpoint returns it.

    Args:
        run: the session's run folder.

    Returns:
        ``run_id``; ``stages`` (stage name -> ``"done"``, ``"stale"``, ... or None when never run);
        ``mask_video``, ``result_video``, ``scene_glb``, ``zip``, ``bodies`` (files or None); and
        ``people``: per person of ``bodies.npz``, ``{"id", "video", "glb", "bvh", "npz", "json"}``
        (files or None).
    """
    people: dict[int, dict[str, Any]] = {}
    for path in person_files(run):  # people/<id>/<id>.<suffix>
        obj_id = int(path.parent.name)
        entry = people.setdefault(obj_id, {"id": obj_id, "video": _file(run.individual_video_path(obj_id))})
        entry[path.suffix.lstrip(".")] = _file(path)
    return {
        "run_id": run.run_id,
        "stages": {name: run.stage_status(name) for name in STAGES},
        "mask_video": _file(run.mask_video_path()),
        "result_video": _file(run.result_video_path()),
        "scene_glb": _file(run.scene_glb_path()),
        "zip": _file(run.path(RunDir.ZIP)),
        "bodies": _file(run.path(RunDir.BODIES)),
        "people": [people[i] for i in sorted(people)],
    }


@contextlib.contextmanager
def _as_gr_error(endpoint: str, session: Session, path: Path | None = None) -> Iterator[None]:
    """Turn the handlers' errors into `gr.Error` sentences prefixed with the endpoint's name.

    Args:
        endpoint: the endpoint's name (``/segment``).
        session: the caller's session (named in the log).
        path: an uploaded file whose long cache path is shortened to its name in messages.
    """
    try:
        yield
    except ValueError as exc:  # InputError, VideoError, RunDirError, PromptError, reconstruct's sentences
        text = str(exc) if path is None else str(exc).replace(str(path), path.name)
        raise gr.Error(f"{endpoint}: {text}") from exc
    except Exception as exc:  # the run failed inside a model: log it all, tell the caller where to look
        log.exception("session %s: %s failed", session.session_id, endpoint)
        raise gr.Error(
            f"{endpoint} failed ({type(exc).__name__}: {exc}). Details are in the app log; "
            "call it again to retry (finished stages are kept)."
        ) from exc


def _uploaded(path: Path) -> Path:
    """``path`` when it is a file uploaded to this app (inside Gradio's upload folder).

    Raises:
        InputError: any other server path (a run folder's file, ``..``): a client opens only what
            it uploaded itself.
    """
    upload = Path(os.path.realpath(get_upload_folder()))
    if not Path(os.path.realpath(path)).is_relative_to(upload):
        raise InputError(
            f"{path.name} is not a file uploaded to this app: pass the video as handle_file(<local path>) "
            "so that the client uploads it (paths on the server are refused)"
        )
    return path


def _video_points(points: list[Any], info: VideoInfo) -> list[tuple[float, float, bool]]:
    """Check ``[x, y, positive]`` points against the frame size.

    Args:
        points: the points as sent, in video pixels.
        info: the session's video.

    Raises:
        InputError: no points, or one is malformed or outside the frame (the sentence says which).
    """
    if not points:
        raise InputError("no points: give at least one [x, y, positive]")
    out = []
    for point in points:
        try:
            x, y, positive = point
            x, y = float(x), float(y)
        except (TypeError, ValueError) as exc:
            raise InputError(f"point {point!r} is not [x, y, positive] (numbers and a bool)") from exc
        if not (0 <= x < info.width and 0 <= y < info.height):
            raise InputError(
                f"point ({x:g}, {y:g}) is outside the {info.width}×{info.height} frame: "
                f"0 <= x < {info.width} and 0 <= y < {info.height}, in video pixels"
            )
        out.append((x, y, bool(positive)))
    return out


class ScriptApi:
    """The API endpoints of one app, on the sessions, models and capabilities of its `UiEvents`.

    Args:
        events: the app's browser events (config, session store, models, capabilities).
    """

    def __init__(self, events: UiEvents) -> None:
        self.events = events

    def _session(self, request: gr.Request) -> Session:
        return self.events.session_for(request)

    def _models(self, blocker: str | None, endpoint: str) -> PipelineModels:
        if blocker is not None or self.events.models is None:
            raise gr.Error(f"{endpoint} is unavailable: {blocker or 'the models are not loaded'}")
        return self.events.models

    def open_video(self, video: FileData, request: gr.Request) -> dict[str, Any]:
        """Open a video in this client's session: its run folder is created; targets start over.

        Args:
            video: the video file (``gradio_client.handle_file(path)``).

        Returns:
            ``{"run_id", "n_frames", "fps", "width", "height", "message"}``; sizes in video pixels.
        """
        path = Path(FileData.model_validate(video).path)
        session = self._session(request)
        with _as_gr_error("/open_video", session, path), session.lock:
            result = load_video(self.events.cfg, session, _uploaded(path))
        info = result.info
        return {
            "run_id": result.run_id,
            "n_frames": info.n_frames,
            "fps": float(info.fps),
            "width": info.width,
            "height": info.height,
            "message": result.message,
        }

    def add_points(
        self,
        frame: int,
        points: list[tuple[float, float, bool]],
        request: gr.Request,
        target: int | None = None,
    ) -> dict[str, Any]:
        """Click points on one frame for one target (with SAM-3 loaded, its live mask follows).

        Args:
            frame: 0-based frame index.
            points: ``[x, y, positive]`` each, in video pixels; ``positive`` False marks background.
            target: an existing target id to refine; None starts a new target (or uses the
                current one while it has no clicks).

        Returns:
            ``{"target": id the points went to, "targets": [{"id", "clicks"}, ...], "message"}``.
        """
        session = self._session(request)
        with _as_gr_error("/add_points", session), session.lock:
            info = session.require_info()
            if not 0 <= frame < info.n_frames:
                raise InputError(f"frame {frame} is outside the video: frames are 0 to {info.n_frames - 1}")
            clicks = _video_points(points, info)
            if target is not None:
                select_target(session, target)
            elif session.targets[session.current_target]:
                add_target(session)
            session.current_frame = frame
            scale = display_scale(info.width, info.height)
            message = ""
            for x, y, positive in clicks:
                req = ClickRequest(x * scale, y * scale, positive)
                message = add_click(
                    session, req, self.events.caps, self.events.report, self.events.open_tracker
                ).message
            return {
                "target": session.current_target,
                "targets": [{"id": tid, "clicks": len(clicks)} for tid, clicks in session.targets.items()],
                "message": message,
            }

    def segment(self, request: gr.Request, auto: bool = False) -> dict[str, Any]:
        """Mask Generation: segment every frame from the clicked targets, or find everyone (``auto``).

        Args:
            auto: detect and track every person instead of using the clicks.

        Returns:
            ``{"run_id", "targets": [object ids], "mask_video": file or None, "message"}``.
        """
        models = self._models(self.events.caps.segment, "/segment")
        session = self._session(request)
        with _as_gr_error("/segment", session), self.events.cleaning_after():
            outcome = generate_masks(self.events.cfg, models, session, auto=auto)
        return {
            "run_id": outcome.result.run_id,
            "targets": list(outcome.result.obj_ids),
            "mask_video": _file(outcome.mask_video),
            "message": outcome.message,
        }

    def reconstruct(self, request: gr.Request) -> dict[str, Any]:
        """4D Generation: the 3D bodies of every target (masks are made first when missing or stale).

        Returns:
            What ``/results`` returns, plus ``"meshes"`` (OBJ files written) and ``"message"``.
        """
        models = self._models(self.events.caps.reconstruct, "/reconstruct")
        session = self._session(request)
        with _as_gr_error("/reconstruct", session), self.events.cleaning_after():
            outcome = generate_4d(self.events.cfg, models, session)
            run = session.run
            assert run is not None
            return {**run_results(run), "meshes": outcome.meshes, "message": outcome.message}

    def results(self, request: gr.Request, run_id: str | None = None) -> dict[str, Any]:
        """The session's run: stage states and every result file made so far.

        Args:
            run_id: an earlier run of this session (a ``run_id`` an ``/open_video`` of this client
                returned); None = the run of the video loaded now.

        Returns:
            ``{"run_id", "stages", "mask_video", "result_video", "scene_glb", "zip", "bodies",
            "people": [{"id", "video", "glb", "bvh", "npz", "json"}, ...]}`` (files or None).
        """
        session = self._session(request)
        with _as_gr_error("/results", session), session.lock:
            if run_id is None:
                session.require_info()
                assert session.run is not None
                return run_results(session.run)
            if run_id not in session.runs:
                raise InputError(
                    f"run {run_id!r} is not one of this session's runs ({', '.join(session.runs) or 'none yet'}): "
                    "pass a run_id that /open_video returned to this client"
                )
            cfg = self.events.cfg
            return run_results(RunDir.open(cfg.runtime.output_dir, run_id, cfg, clean_scratch=False))


def bind_api(demo: gr.Blocks, events: UiEvents) -> None:
    """Register the API-only endpoints on ``demo`` (call once, after `UiEvents.bind`).

    Args:
        demo: the app's Blocks.
        events: the app's browser events, whose sessions, models and capabilities the API uses.
    """
    api = ScriptApi(events)
    gpu: dict[str, Any] = {"concurrency_id": "gpu", "concurrency_limit": GPU_CONCURRENCY}
    # With SAM-3 loaded, points run the model: they share the clicks' small pool.
    prompt: dict[str, Any] = (
        {"concurrency_limit": None}
        if events.open_tracker is None
        else {"concurrency_id": "prompt", "concurrency_limit": PROMPT_CONCURRENCY}
    )
    with demo:
        gr.api(
            api.open_video, api_name="open_video", concurrency_id="load", concurrency_limit=LOAD_CONCURRENCY
        )
        gr.api(api.add_points, api_name="add_points", **prompt)
        gr.api(api.segment, api_name="segment", **gpu)
        gr.api(api.reconstruct, api_name="reconstruct", **gpu)
        gr.api(api.results, api_name="results", concurrency_limit=None)
