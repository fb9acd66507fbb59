"""The driver shared by the app and the CLI: walks the stage table (`body4d.recipe.RECIPE`).

The input video is checked first (`RunDir.bind_input`): a run folder is resumed only with the
video it was made from. For every row up to ``stop_after``: a row already done in the run folder
with the same settings (its config section's fingerprint) and the same inputs (the identities of
what it read: the input video, earlier rows' results) is skipped and its saved result is read
back only if a later row needs it (resume); otherwise the row's artefacts are cleared, it runs
with the results it needs (handed on in memory), is saved with a new result identity, and the
rows that read it (directly or through others) are marked stale; rows that do not read it stay
done. Progress, cancellation (`body4d.jobs.Cancelled`) and the manifest's stage records are
handled here, once.

Mask repairs (`repair_masks`: one target corrected after the masks stage) mark the rows that read
the masks stale while keeping the masks revision each last ran on. Such a row with an
``incremental`` predicate that holds for its (unchanged) settings then runs incrementally: it gets
its previous result and the person-frames the repairs changed since (`body4d.recipe.Incremental`),
its artefacts are not cleared, and the later rows stay able to run incrementally too. Anything else
that makes a row run (new masks, changed settings, ``force``, a failed or cancelled run) is a whole
run, and every later row runs whole after it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from body4d import memory
from body4d.checkpoints import checkpoint_report
from body4d.config import Config
from body4d.errors import InputError
from body4d.jobs import CancelFn, Job, ProgressFn
from body4d.recipe import RECIPE, STAGES, Incremental, Stage
from body4d.run_dir import MASKS_REVISION, RunDir, RunDirError, disk_full, frame_runs
from body4d.stages.repair import MaskRepair, repair_target
from body4d.stages.segment import apply_prompts
from body4d.types import Click, MaskTrack, Prompts, RunResult, Segmentation
from body4d.video import Video

if TYPE_CHECKING:
    from body4d.stages.complete import CompletionModels
    from models.moge import MoGe
    from models.sam3 import Sam3Models
    from models.sam_3d_body import SAM3DBody

log = logging.getLogger(__name__)

# Headless runs log progress every this fraction of a stage.
LOG_PROGRESS_STEP = 0.1


@dataclass
class PipelineModels:
    """Networks loaded once per process and shared read-only; None = not needed or not loaded."""

    sam3: Sam3Models | None = None
    body: SAM3DBody | None = None
    moge: MoGe | None = None
    completion: CompletionModels | None = None
    # Where they live and when the completion networks move (`body4d.memory`); None: as loaded.
    placement: memory.Placement | None = None


def load_models(
    cfg: Config,
    *,
    sam3: bool = True,
    detector: bool = True,
    body: bool = True,
    camera: bool = True,
    completion: bool | None = None,
) -> PipelineModels:
    """Load the networks a run needs on ``runtime.device`` (each with its own config section).

    Args:
        cfg: the configuration.
        sam3: the SAM-3 tracker (clicks, propagation); ``detector`` adds automatic people detection.
        body: SAM-3D-Body (recover, refine, smooth, export).
        camera: MoGe-2 (skipped when ``camera.ckpt_path`` is empty: the default intrinsics are used).
        completion: Depth Anything V2 + both Diffusion-VAS pipelines; None = ``completion.enable``.

    Returns:
        The networks, placed by the GPU memory plan (``runtime.offload``, `body4d.memory.place`).

    Raises:
        models.errors.CheckpointError: a checkpoint is missing or does not fit (names path and fix).
        ValueError: an unusable device or precision.
    """
    from models.devices import DTYPES, resolve_device, resolve_dtype

    device = resolve_device(cfg.runtime.device)
    dtype = resolve_dtype(cfg.runtime.dtype, device)
    models = PipelineModels()
    if sam3:
        from models import sam3 as sam3_adapter

        models.sam3 = sam3_adapter.load(cfg.sam3, device, dtype, with_detector=detector)
    if body:
        from models import sam_3d_body
        from models.sam_3d_body.checkpoint import backbone_dtype

        encoder_dtype = DTYPES[backbone_dtype(cfg.sam_3d_body.dtype, device)]
        models.body = sam_3d_body.load(cfg.sam_3d_body, device, encoder_dtype)
    if camera and cfg.camera.ckpt_path:
        from models import moge

        models.moge = moge.load(cfg.camera, device, dtype)
    if cfg.completion.enable if completion is None else completion:
        from body4d.stages.complete import CompletionModels
        from models import depth, diffusion_vas

        c = cfg.completion
        home = memory.load_device(cfg.runtime.offload, device)
        models.completion = CompletionModels(
            depth=depth.load(c.model_path_depth, home, dtype),
            amodal=diffusion_vas.load(c.model_path_mask, home, dtype),
            content=diffusion_vas.load(c.model_path_rgb, home, dtype),
        )
    models.placement = memory.place(models, device, cfg.runtime)
    return models


def reconstruct(
    video: Video,
    run: RunDir,
    cfg: Config,
    models: PipelineModels,
    *,
    prompts: Prompts | None = None,
    masks_dir: Path | None = None,
    stop_after: str = STAGES[-1],
    force: bool = False,
    progress: ProgressFn | None = None,
    should_cancel: CancelFn | None = None,
    recipe: tuple[Stage, ...] = RECIPE,
) -> RunResult:
    """Run the recipe on ``video`` into ``run`` up to ``stop_after``.

    Args:
        video: the opened input.
        run: the run folder (new, or an earlier one to resume).
        cfg: validated configuration (each stage receives its own section).
        models: loaded networks (`load_models`).
        prompts: clicks per object id; None = automatic people detection (ignored with masks_dir).
        masks_dir: folder of palette PNGs (one per frame, pixel = id) replacing segmentation.
        stop_after: last stage to run (a row name of ``recipe``).
        force: re-run stages already done in ``run``.
        progress: ``progress(stage, fraction, message)``; default: log lines.
        should_cancel: polled often; True stops the current stage (recorded as cancelled).
        recipe: the stage table.

    Raises:
        ValueError: an unknown ``stop_after``, bad masks folder or prompts; a stage's own errors
            (recorded in the manifest as failed).
        body4d.jobs.Cancelled: ``should_cancel`` returned True (recorded as cancelled).
    """
    names = [s.name for s in recipe]
    if stop_after not in names:
        raise ValueError(f"stop_after must be one of {', '.join(names)}, got {stop_after!r}")
    run.bind_input(video)
    ckpts = checkpoint_report(cfg)
    run.set_checkpoints(
        {i.name: {"path": str(i.path), "present": i.present, "tiny": i.tiny} for i in ckpts.items}
    )
    if ckpts.uses_tiny:
        log.warning("TINY TEST CHECKPOINTS in use (random weights): the results of this run are meaningless")
    report = progress or _log_progress()
    results: dict[str, Any] = {
        "video": video,
        "prompts": prompts,
        "masks_dir": masks_dir,
        "scratch": run.scratch,
        "queue_depth": cfg.runtime.queue_depth,
    }
    loaders: dict[str, Stage] = {}  # done rows, read back when a later row needs them

    def value(name: str) -> Any:
        if name not in results:
            results[name] = _load(loaders.pop(name), run)
        return results[name]

    done: list[str] = []
    try:
        for stage in recipe[: names.index(stop_after) + 1]:
            section = getattr(cfg, stage.section) if stage.section else None
            settings = settings_fingerprint(section) if stage.rerun_on_change else None
            read = _input_identities(stage, run, names)
            changed = _changed_inputs(run.stage_inputs(stage.name), read)
            settings_kept = run.stage_settings(stage.name) in (None, settings)
            if run.is_done(stage.name) and not force and settings_kept and not changed:
                log.info("stage %s already done in %s: skipped", stage.name, run.run_id)
                loaders[stage.name] = stage
            else:
                if run.is_done(stage.name) and not force:
                    log.info(
                        "stage %s: %s changed since it ran: running it again",
                        stage.name,
                        f"its {stage.section} settings" if not settings_kept else " and ".join(changed),
                    )
                inputs = {name: value(name) for name in stage.needs}
                model = getattr(models, stage.model) if stage.model else None
                incremental = _incremental(stage, run, section, settings, force)
                if stage.incremental is not None:
                    inputs["incremental"] = incremental
                if incremental is None:
                    run.clear(stage.name, stage.artefacts)
                else:
                    log.info(
                        "stage %s: redoing only what mask repairs changed (people %s)",
                        stage.name,
                        ", ".join(map(str, incremental.changed)),
                    )
                with run.stage(stage.name) as extra, memory.for_stage(models, stage.model) as placed:
                    extra.update(placed)
                    job = Job(stage.name, report, should_cancel)
                    job.report(0.0, "started")
                    share = stage.save_share
                    result = stage.run(inputs, model, section, job.span(0.0, 1.0 - share) if share else job)
                    extra.update(stage.save(run, result, inputs, job.span(1.0 - share, 1.0)) or {})
                    if settings is not None:
                        extra["settings"] = settings
                    extra["inputs"] = read
                    if stage.incremental is not None:
                        extra[MASKS_REVISION] = run.masks_revision()
                        extra["incremental"] = incremental is not None
                run.record_artefacts(stage.name, stage.artefacts)
                readers = _readers_of(stage.name, recipe)
                run.invalidate(*readers, changes_known=incremental is not None)
                if incremental is None:  # their results are of inputs that are gone (e.g. people)
                    for reader in recipe:
                        if reader.name in readers:
                            run.clear(reader.name, reader.artefacts)
                results[stage.name] = result
            done.append(stage.name)
    finally:
        shutil.rmtree(run.path(RunDir.SCRATCH), ignore_errors=True)
    manifest = run.manifest
    obj_ids = tuple(manifest["stages"].get("masks", {}).get("obj_ids", []))
    return RunResult(run.run_id, run.root, obj_ids, tuple(done), manifest["artefacts"])


def _incremental(
    stage: Stage, run: RunDir, section: Any, settings: str | None, force: bool
) -> Incremental | None:
    """The row's `Incremental` input when only mask repairs changed its inputs since it ran, else None."""
    if stage.incremental is None or force or not stage.incremental(section):
        return None
    revision = run.stage_masks_revision(stage.name)
    if run.stage_status(stage.name) != "stale" or revision is None:
        return None
    if run.stage_settings(stage.name) not in (None, settings):
        return None
    return Incremental(_load(stage, run), run.mask_changes_since(revision))


def _input_identities(stage: Stage, run: RunDir, names: Sequence[str]) -> dict[str, str | None]:
    """The identity of everything ``stage`` reads that a resume keeps: the input video's
    fingerprint and the results of earlier rows (the run's other inputs, prompts and a masks
    folder, are only read by a masks stage that runs, which a resume does not repeat)."""
    return {
        name: run.input_identity() if name == "video" else run.stage_output(name)
        for name in stage.needs
        if name == "video" or name in names
    }


def _changed_inputs(recorded: dict[str, str | None] | None, current: dict[str, str | None]) -> list[str]:
    """The inputs whose identity differs from the one recorded (none for a stage that recorded none)."""
    if recorded is None:
        return []
    return [f"its input {name!r}" for name, identity in current.items() if recorded.get(name) != identity]


def _load(stage: Stage, run: RunDir) -> Any:
    """The saved result of a done ``stage``, or `RunDirError` naming its files and the fix.

    A stage that a resume can redo (``rerun_on_change``) is marked stale first, so that resuming
    again redoes it; the masks need ``--force`` with what they were made from.
    """
    try:
        return stage.load(run)
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
        if isinstance(exc, RunDirError) or disk_full(exc) is not None:
            raise
        files = ", ".join(run.rel(run.path(a)) for a in stage.artefacts)
        if stage.rerun_on_change:
            run.invalidate(stage.name)
            fix = f"it will run again: resume with body4d run --resume {run.run_id}"
        else:
            fix = f"redo it with body4d run --resume {run.run_id} --force, or start a new run"
        raise RunDirError(
            f"the saved result of stage {stage.name} in {run.root} ({files}) cannot be read "
            f"({type(exc).__name__}: {exc}): {fix}"
        ) from exc


def repair_masks(
    video: Video,
    run: RunDir,
    cfg: Config,
    models: PipelineModels,
    target: int,
    clicks: Sequence[Click],
    *,
    from_frames: Sequence[int] | None = None,
    progress: ProgressFn | None = None,
    should_cancel: CancelFn | None = None,
    recipe: tuple[Stage, ...] = RECIPE,
) -> MaskRepair:
    """Correct one target of the finished masks of ``run`` (`body4d.stages.repair`), saved at once.

    Only ``target`` is tracked again with SAM-3, from all of ``clicks``; every other target keeps
    its masks except where the target's new mask now covers it. The changed frames are rewritten,
    the repair is recorded in the masks stage's manifest entry (``repairs``) and the rows that
    read the masks become stale, so that the next `reconstruct` redoes only the changed
    person-frames where it can (module docstring).

    Args:
        video: the run's video.
        run: a run folder whose masks stage is done.
        cfg: the configuration (``repair`` and ``sam3`` sections).
        models: loaded networks with SAM-3 (``load_models(..., sam3=True, detector=False)``).
        target: the object id to correct, in the masks or new (a person who appeared later).
        clicks: every click of ``target`` (its earlier ones and the correcting ones).
        from_frames: the frames of the correcting clicks (default: every frame of ``clicks``);
            propagation starts at the earliest.
        progress: ``progress("masks", fraction, message)``; default: log lines.
        should_cancel: polled every frame; True stops the repair with nothing changed.
        recipe: the stage table (which rows read the masks).

    Returns:
        The `MaskRepair`: span re-propagated and person-frames changed.

    Raises:
        InputError: the masks stage is not done, or there are no clicks.
        PromptError: a click outside the video, a bad id, or only negative clicks for a new target.
        body4d.jobs.Cancelled: ``should_cancel`` returned True (nothing was written).
    """
    run.check_input(video)
    if not run.is_done("masks"):
        raise InputError(
            "there are no finished masks to correct yet: run Mask Generation first "
            "(body4d run --stop-after masks), then correct a target"
        )
    if not clicks:
        raise InputError(
            f"target {target} has no clicks: click on the frame where its mask is wrong (positive on "
            "the person, negative on what is not them), then repair it"
        )
    if models.sam3 is None:
        raise RuntimeError("the SAM-3 model is not loaded: load_models(..., sam3=True)")
    tracker = models.sam3.open_session(video)
    apply_prompts(tracker, Prompts({target: tuple(clicks)}))
    seg = run.load_masks()
    frames = sorted(set(from_frames) if from_frames else {c.frame for c in clicks})
    new = target not in seg.track.obj_ids
    repair = repair_target(
        tracker,
        seg.track.labels,
        target,
        (frames[0], frames[-1]),
        new=new,
        agree_iou=cfg.repair.agree_iou,
        agree_frames=cfg.repair.agree_frames,
        job=Job("masks", progress or _log_progress(), should_cancel),
    )
    obj_ids = tuple(sorted(set(seg.track.obj_ids) | {target}))
    first = {**seg.first_frames, target: min(frames[0], seg.first_frames.get(target, frames[0]))}
    repaired = Segmentation(MaskTrack(obj_ids, seg.track.labels), dict(sorted(first.items())), seg.mode)
    record = {
        "target": target,
        "new": new,
        "frames": list(repair.span),
        "changed": {str(obj_id): frame_runs(f) for obj_id, f in repair.changed.items()},
    }
    stale = _readers_of("masks", recipe) if repair.changed else ()
    run.save_mask_repair(repaired, record, video, video.info.fps, stale)
    log.info(
        "target %d re-propagated over frames %d-%d: %d frame(s) changed",
        target,
        *repair.span,
        repair.frames_changed,
    )
    return repair


def _readers_of(name: str, recipe: tuple[Stage, ...]) -> list[str]:
    """The rows that read ``name``'s result, directly or through other rows, in table order."""
    readers = {name}
    for stage in recipe:
        if readers & set(stage.needs):
            readers.add(stage.name)
    return [s.name for s in recipe if s.name in readers - {name}]


def settings_fingerprint(section: Any) -> str | None:
    """A short hash of a config section (None for none): a finished stage whose section has
    changed since it ran is run again on resume."""
    if section is None:
        return None
    text = json.dumps(dataclasses.asdict(section), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _log_progress(step: float = LOG_PROGRESS_STEP) -> ProgressFn:
    """Progress as log lines: one per stage start and per ``step`` of progress (headless runs)."""
    last: dict[str, float] = {}

    def report(stage: str, fraction: float, message: str) -> None:
        if stage not in last or fraction >= min(1.0, last[stage] + step):
            last[stage] = fraction
            log.info("%s %3.0f%% %s", stage, 100 * fraction, message)

    return report
