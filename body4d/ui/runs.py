"""Pipeline runs from the app: Mask Generation, Auto-detect people, 4D Generation, and Cancel.

The only ui module that calls `body4d.driver.reconstruct`: each run covers one stage range
on the session's run folder, with a decoder of its own, so scrubbing and clicks keep working.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from body4d.config import Config
from body4d.driver import PipelineModels, reconstruct
from body4d.errors import InputError
from body4d.jobs import Cancelled, Job, ProgressFn
from body4d.recipe import STAGES
from body4d.retention import run_lock
from body4d.run_dir import RunDir
from body4d.session import Session
from body4d.stages.complete import estimate
from body4d.stages.occlusion import mask_stats
from body4d.types import Prompts, RunResult
from body4d.ui.downloads import DOWNLOADS_STAGE, run_downloads, zip_run
from body4d.video import open_video

log = logging.getLogger(__name__)


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
        result_video: the 4D Result video (meshes over the footage), if rendered.
        scene_glb: the animated GLB of every person (the 3D viewer), if written.
        downloads: the run's zip, ``bodies.npz`` and each person's bundle files.
        people: targets with a 3D body track.
        meshes: OBJ files written (one per person per frame).
        message: status sentence for the user.
    """

    result: RunResult
    mask_video: Path | None
    result_video: Path | None
    scene_glb: Path | None
    downloads: list[Path]
    people: int
    meshes: int
    message: str


def _stage_progress(steps: tuple[str, ...], progress: ProgressFn | None) -> ProgressFn | None:
    """Map ``(step, fraction, message)`` of one step to the whole run of ``steps`` (equal shares)."""
    if progress is None:
        return None

    def report(step: str, fraction: float, message: str) -> None:
        i = steps.index(step) if step in steps else len(steps) - 1
        progress(step, (i + min(max(fraction, 0.0), 1.0)) / len(steps), message)

    return report


@contextlib.contextmanager
def running(session: Session) -> Iterator[RunDir]:
    """Hold the session's ``run_lock`` for a whole run (pipeline and zip); yields its run folder.

    A Cancel pressed while the run was queued stops it before it starts; the cancel flag is
    cleared when the run ends, so it never stops a later run. The run's retention lock is held
    meanwhile (`body4d.retention.run_lock`): the run folder is never cleaned while it runs.

    Raises:
        InputError: no video loaded, or a run of this session is still going.
        Cancelled: Cancel was pressed while the run waited in the queue.
    """
    with session.lock:
        session.require_info()
        run = session.run
    assert run is not None
    if not session.run_lock.acquire(blocking=False):
        raise InputError("a run is still going for this video: wait for it to finish or press Cancel")
    try:
        if session.cancel.is_set():
            raise Cancelled("cancelled before it started")
        with run_lock(run.root.parent, run.run_id):
            yield run
    finally:
        session.cancel.clear()
        session.run_lock.release()


def _run_pipeline(
    cfg: Config,
    models: PipelineModels,
    session: Session,
    run: RunDir,
    *,
    prompts: Prompts | None,
    stop_after: str,
    force: bool,
    progress: ProgressFn | None,
) -> RunResult:
    """Run `reconstruct` on the session's video into ``run`` with a decoder of its own (inside
    `running`).

    The session lock is not held meanwhile (scrubbing and clicks keep working); its ``cancel``
    flag stops the run.

    Raises:
        InputError: another video was loaded meanwhile (the results stay in the earlier run folder).
        Cancelled: the user pressed Cancel.
        ValueError: as `reconstruct` (e.g. no targets found), with a sentence.
    """
    with session.lock:
        path, max_side = session.video_path, session.max_side
    assert path is not None
    with open_video(path, max_side=max_side) as video:
        result = reconstruct(
            video,
            run,
            cfg,
            models,
            prompts=prompts,
            stop_after=stop_after,
            force=force,
            progress=progress,
            should_cancel=session.cancel.is_set,
        )
    with session.lock:
        if session.run is not run:
            raise InputError(
                f"another video was loaded while this run went on: its results stay in run folder {run.run_id}"
            )
    return result


def _people(n: int) -> str:
    return f"{n} {'person' if n == 1 else 'people'}"


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

    Args:
        cfg: app configuration.
        models: the shared networks (SAM-3 with its detector).
        session: the caller's session.
        auto: detect and track every person instead of using the clicks.
        progress: called with ``(stage, fraction of the run, message)``.

    Raises:
        InputError: no video, no clicked target (without ``auto``), or a run still going.
        Cancelled: cancelled.
        ValueError: SAM-3 refused the prompts (the sentence says why).
    """
    with session.lock:
        session.require_info()
        prompts = None if auto else session.prompts()
    if prompts is not None and not prompts.obj_ids:
        raise InputError(
            "no targets yet: click on a person in the frame (or press Auto-detect people) before Mask Generation"
        )
    started = time.monotonic()
    with running(session) as run:
        result = _run_pipeline(
            cfg,
            models,
            session,
            run,
            prompts=prompts,
            stop_after="masks",
            force=True,
            progress=_stage_progress(("masks",), progress),
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
            f"Auto-detect found {_people(len(result.obj_ids))} (ids {_ids(result.obj_ids)}) and tracked "
            f"them over {n} frames in {seconds:.1f} s. Check the Segmentation Result, then press 4D Generation."
        )
    else:
        message = (
            f"Mask Generation done in {seconds:.1f} s: target(s) {_ids(result.obj_ids)} tracked over {n} "
            "frames. Check the Segmentation Result, then press 4D Generation. To correct one target, select "
            "it, click on any frame and press Re-track Target: only it is tracked again."
        )
    if result.obj_ids:
        message += " " + completion_estimate(cfg, run)
    log.info("session %s: %s", session.session_id, message)
    return MaskOutcome(result, run.mask_video_path(), message)


def completion_estimate(cfg: Config, run: RunDir) -> str:
    """Whether occlusion completion will run in 4D Generation and, when on, its extra work
    estimated from the masks (the keypoint prior of the first recovery pass is not known yet)."""
    section = cfg.completion
    if not section.enable:
        return "Occlusion completion is off (completion.enable: false): hidden frames are interpolated."
    seg = run.load_masks()
    labels = seg.track.labels
    n, height, width = labels.shape
    stats = mask_stats(
        (np.asarray(labels[i]) for i in range(n)), seg.track.obj_ids, n, section.contact_radius
    )
    work = estimate(stats, n, width, height, section)
    return (
        f"Occlusion completion is on ({section.mode}): {work['windows']} window(s), "
        f"{work['candidate_frames']} person-frames to check, about {work['amodal_unet_evaluations']:,} UNet "
        f"frame-evaluations for the amodal masks and up to {work['max_completion_unet_evaluations']:,} more "
        "to complete the hidden ones."
    )


def generate_4d(
    cfg: Config, models: PipelineModels, session: Session, *, progress: ProgressFn | None = None
) -> BodiesOutcome:
    """Make the 3D bodies: the stages after the masks (made first from the clicks if missing).

    Stages already done in the run folder are skipped; after a new Mask Generation the whole
    recipe runs again from those masks. When the clicked targets changed since the masks were made
    from clicks (a target added, removed or re-clicked), the masks are made again from the clicks
    first, so that 4D Generation never uses stale masks. Ends with the run's zip and ``bodies.npz``.

    Args:
        cfg: app configuration.
        models: the shared networks (SAM-3, SAM-3D-Body, the camera model).
        session: the caller's session.
        progress: called with ``(stage, fraction of the run, message)``.

    Raises:
        InputError: no video, no masks and no clicked target, or a run still going.
        Cancelled: cancelled.
        ValueError: nobody to reconstruct, or SAM-3 refused the prompts (the sentence says why).
    """
    with session.lock:
        info = session.require_info()
        run = session.run
        assert run is not None
        has_masks = run.is_done("masks")
        clicked = session.prompts()
        changed = has_masks and session.mask_prompts is not None and clicked != session.mask_prompts
        prompts = session.mask_prompts if has_masks and not changed else clicked
    if (not has_masks or changed) and not prompts.obj_ids:
        raise InputError(
            "no targets yet: click on the people to follow (or press Auto-detect people), then 4D Generation"
        )
    started = time.monotonic()
    steps = (*STAGES, DOWNLOADS_STAGE)
    report = _stage_progress(steps, progress)
    with running(session) as run:
        if changed:  # the clicks changed since Mask Generation: new masks first (later stages go stale)
            _run_pipeline(
                cfg, models, session, run, prompts=prompts, stop_after="masks", force=True, progress=report
            )
        result = _run_pipeline(
            cfg, models, session, run, prompts=prompts, stop_after=STAGES[-1], force=False, progress=report
        )
        with session.lock:
            if not has_masks or changed:
                session.mask_prompts = prompts
        zip_run(run, zip_meshes=cfg.app.zip_meshes, job=Job(DOWNLOADS_STAGE, report, session.cancel.is_set))
    export = run.manifest["stages"]["export"]
    meshes = int(export.get("files", 0))
    with np.load(run.path(RunDir.BODIES)) as bodies:
        people = len(bodies["obj_ids"])
    seconds = time.monotonic() - started
    complete = run.manifest["stages"]["complete"]
    occlusion = (
        f"Occlusion completion: {complete['person_frames_completed']} person-frame(s) completed "
        f"({complete['unet_evaluations']:,} UNet frame-evaluations). "
        if complete.get("enabled")
        else "Occlusion completion was off. "
    )
    remade = (
        "The targets changed since Mask Generation, so the masks were made again first. " if changed else ""
    )
    message = remade + (
        f"4D Generation done in {seconds:.1f} s: {_people(people)}, "
        f"{meshes} meshes (one OBJ per person per frame over {info.n_frames} frames) in run {run.run_id}. "
        f"{occlusion}Download the zip (whole run) or {RunDir.BODIES} (parameters, keypoints) below."
    )
    log.info("session %s: %s", session.session_id, message)
    return BodiesOutcome(
        result,
        run.mask_video_path(),
        run.result_video_path(),
        run.scene_glb_path(),
        run_downloads(run),
        people,
        meshes,
        message,
    )


def cancel_run(session: Session) -> str:
    """Ask the session's run to stop after its current step (or not to start, when it is still
    queued); returns the status."""
    if not session.busy:
        return "Nothing is running."
    session.cancel.set()
    if not session.run_lock.locked():
        return "Cancelled: your queued run will not start."
    return (
        "Cancelled: the running stage stops after its current frame (recorded as cancelled in "
        "manifest.json); finished stages are kept, press the button again to continue."
    )
