"""The recipe as data: one `Stage` row per step, walked in order by `body4d.driver.reconstruct`.

    masks    SAM-3 propagation (prompts or automatic people), or masks imported from a folder
    camera   MoGe-2 intrinsics once per video (or the documented default)
    recover  SAM-3D-Body per target per frame, batched over frames x targets
    complete occlusion completion (Diffusion-VAS) on the windows where someone may be hidden
    refine   SAM-3D-Body again, only for the completed person-frames
    smooth   per-identity temporal consistency over the whole sequence (+ keypoints)
    export   OBJ + camera JSON per person per frame
    render   the 4D result videos: meshes over the footage, all people and each alone
    bundle   per person: animated GLB, npz, json (which frames are real); the scene GLB

A row names what it reads (the run's inputs ``video``, ``prompts``, ``masks_dir``, ``scratch``,
``queue_depth`` (`body4d.overlap`), or earlier rows by name), the network and config section it takes, a ``run`` function
``(inputs, model, section, job) -> result`` that writes nothing, and how its result is saved to and
loaded from the run folder (`body4d.run_dir.RunDir`, which owns every path, including the row's
``artefacts``). Adding a stage is adding a row.

After a mask repair (`body4d.driver.repair_masks`: one target corrected, the others untouched) the
rows that can redo only what changed say so (``incremental``): ``recover`` estimates only the
changed person-frames, ``smooth`` re-smooths only the changed people (whole, as smoothing is per
identity over the sequence), ``export`` rewrites only their OBJs; ``complete`` and ``refine`` pass
the changes on while completion is off (with completion on, ``complete`` runs whole, since whether
a person is hidden depends on the others' masks, and so does everything after it). ``render`` and
``bundle`` run again over everyone (cheap).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from body4d.errors import InputError
from body4d.export import camera_json, obj_meshes, obj_workers
from body4d.jobs import Job
from body4d.masks import color_for, label_volume, read_mask_folder
from body4d.run_dir import LABELS_IN_MEMORY_MAX_BYTES, RunDir
from body4d.stages.bundle import person_bundles
from body4d.stages.camera import estimate_camera
from body4d.stages.complete import complete_occlusions, disabled_report
from body4d.stages.consistency import make_consistent
from body4d.stages.meshes import meshes_by_frame, track_meshes
from body4d.stages.overlay import render_frames
from body4d.stages.recover import (
    FrameInput,
    recover_bodies,
    recover_changed,
    recover_completed,
    refit_keypoints,
)
from body4d.stages.segment import apply_prompts, segment_video
from body4d.types import BodyTrack, Completion, Intrinsics, PersonBundle, Segmentation

Inputs = Mapping[str, Any]
# The person-frames whose masks changed: {object id: frames}.
Changes = Mapping[int, frozenset[int]]
# An exported mesh: (object id, frame, OBJ bytes, camera record).
MeshItem = tuple[int, int, bytes, dict[str, Any]]
# A 4D result frame: (index, background, all people drawn, {object id: the person alone}).
RenderedFrame = tuple[int, np.ndarray, np.ndarray, dict[int, np.ndarray]]


@dataclass(frozen=True)
class Stage:
    """One step of the recipe.

    Attributes:
        name: the stage's name (manifest, ``--stop-after``, progress).
        needs: what ``run`` reads: run inputs or the names of earlier rows.
        run: ``run(inputs, model, section, job) -> result``; pure (writes nothing).
        save: ``save(run_dir, result, inputs, job) -> extra manifest fields`` (or None); ``job``
            reports the save's own progress (its share of the stage is ``save_share``).
        load: ``load(run_dir) -> result`` when the stage is already done (resume).
        artefacts: `RunDir` names the stage writes (cleared before it runs again).
        model: the `PipelineModels` field it needs (None: no network).
        section: the config section it receives (None: none).
        rerun_on_change: a finished row runs again on resume when its section has changed.
        save_share: the part of the stage's progress bar its save takes (0: saving is quick).
        incremental: None: the row always runs whole. Otherwise a predicate on its section: True
            when the row can redo only what mask repairs changed. Its ``run`` then always finds
            ``inputs["incremental"]``: an `Incremental` (its previous result and the changed
            person-frames) when only repairs changed its inputs since it last ran, else None (a
            whole run). An incremental run's artefacts are not cleared first: its ``save`` replaces
            only what changed.
    """

    name: str
    needs: tuple[str, ...]
    run: Callable[[Inputs, Any, Any, Job], Any]
    save: Callable[[RunDir, Any, Inputs, Job], dict[str, Any] | None]
    load: Callable[[RunDir], Any]
    artefacts: tuple[str, ...]
    model: str | None = None
    section: str | None = None
    rerun_on_change: bool = True
    save_share: float = 0.0
    incremental: Callable[[Any], bool] | None = None


@dataclass(frozen=True)
class Incremental:
    """What a row redoing only the changes of mask repairs receives as ``inputs["incremental"]``.

    Attributes:
        previous: the row's own result from before the repairs (its ``load``).
        changed: the person-frames whose masks the repairs changed since the row last ran.
    """

    previous: Any
    changed: Changes


def _always(_section: Any) -> bool:
    return True


# ------------------------------------------------------------------------------------ masks
def _segment(inputs: Inputs, sam3: Any, section: Any, job: Job) -> Segmentation:
    video = inputs["video"]
    info = video.info
    labels = label_volume(len(video), info.height, info.width, inputs["scratch"], LABELS_IN_MEMORY_MAX_BYTES)
    if inputs["masks_dir"] is not None:
        return read_mask_folder(Path(inputs["masks_dir"]), labels)
    if sam3 is None:
        raise RuntimeError("the SAM-3 model is not loaded: load_models(..., sam3=True)")
    prompts = inputs["prompts"]
    session = sam3.open_session(video)
    if prompts is not None:
        apply_prompts(session, prompts)
    result = segment_video(
        session,
        detect=None if prompts is not None else sam3.detect,
        redetect_every=section.redetect_every,
        redetect_iou=section.redetect_iou,
        job=job,
        out=labels,
    )
    return Segmentation(result.track, result.first_frames, "prompts" if prompts is not None else "auto")


def _save_masks(run: RunDir, seg: Segmentation, inputs: Inputs, job: Job) -> dict[str, Any]:
    video = inputs["video"]

    def saved(done: int, total: int) -> None:
        job.check()
        job.report(done / total, f"saving frame {done}/{total}: masks and the mask video")

    run.save_masks(seg, video, video.info.fps, on_frame=saved)
    return {"obj_ids": list(seg.track.obj_ids), "repairs": []}  # new masks: no repairs yet


# ----------------------------------------------------------------------------------- camera
def _camera(inputs: Inputs, moge: Any, section: Any, job: Job) -> Intrinsics:
    job.report(0.0, "estimating intrinsics")
    return estimate_camera(inputs["video"], moge, section)


def _save_camera(run: RunDir, K: Intrinsics, _inputs: Inputs, _job: Job) -> None:
    run.save_camera(K)


# ---------------------------------------------------------------------------------- recover
def _recover(inputs: Inputs, body: Any, section: Any, job: Job) -> dict[int, BodyTrack]:
    video, seg = inputs["video"], inputs["masks"]
    if not seg.track.obj_ids:
        raise InputError(
            "segmentation found no targets in the video: click on the people to follow, or lower "
            "sam3.detection_threshold for automatic detection"
        )
    _require_body(body)
    labels = seg.track.labels
    options = {
        "batch_size": section.batch_size,
        "inference_type": section.inference_type,
        "job": job,
        "queue_depth": inputs["queue_depth"],
    }
    incremental: Incremental | None = inputs["incremental"]
    if incremental is None:
        frames = (FrameInput(i, frame, np.asarray(labels[i])) for i, frame in enumerate(video))
        return recover_bodies(frames, len(video), inputs["camera"], body, **options)
    wanted = sorted(set().union(*incremental.changed.values()))
    frames = (FrameInput(i, video.frame(i), np.asarray(labels[i])) for i in wanted)
    return recover_changed(
        incremental.previous, frames, incremental.changed, len(video), inputs["camera"], body, **options
    )


def _save_recovered(run: RunDir, tracks: dict[int, BodyTrack], inputs: Inputs, job: Job) -> dict[str, Any]:
    """``bodies_raw.npz``, how many person-frames SAM-3D-Body estimated in this run (each
    estimate is one valid row: every valid row of a whole run, the changed ones of an incremental
    run) and the batch size used (`Job.notes`)."""
    run.save_tracks(RunDir.BODIES_RAW, tracks)
    incremental: Incremental | None = inputs["incremental"]
    estimated = 0
    for obj_id, track in tracks.items():
        rows = track.valid
        if incremental is not None:
            rows = rows & np.isin(track.frames, list(incremental.changed.get(obj_id, ())))
        estimated += int(rows.sum())
    return {"person_frames_estimated": estimated, **job.notes}


# --------------------------------------------------------------------------------- complete
def _complete(inputs: Inputs, models: Any, section: Any, job: Job) -> Completion:
    if not section.enable:
        return Completion((), disabled_report())
    if models is None:
        raise RuntimeError("the Diffusion-VAS models are not loaded: load_models(..., completion=True)")
    video, seg = inputs["video"], inputs["masks"]
    return complete_occlusions(video.frame, seg.track, inputs["recover"], models, section, job)


def _save_completion(run: RunDir, completion: Completion, _inputs: Inputs, job: Job) -> dict[str, Any]:
    run.save_completion(completion)
    report = completion.report
    work = {key: report[key] for key in ("enabled", "unet_evaluations", "person_frames_completed")}
    if report["enabled"]:
        work.update(
            mode=report["mode"],
            depth_frames=report["depth_frames"],
            amodal_windows=report["amodal"]["windows"],
            completion_windows=report["completion"]["windows"],
        )
    return {**work, **job.notes}  # the batch_windows used, when the networks ran


# ----------------------------------------------------------------------------------- refine
def _refine(inputs: Inputs, body: Any, section: Any, job: Job) -> dict[int, BodyTrack]:
    completion: Completion = inputs["complete"]
    if not completion.frames:
        return inputs["recover"]
    _require_body(body)
    return recover_completed(
        inputs["recover"],
        completion.frames,
        inputs["camera"],
        body,
        batch_size=section.batch_size,
        inference_type=section.inference_type,
        job=job,
    )


def _save_refined(run: RunDir, tracks: dict[int, BodyTrack], inputs: Inputs, job: Job) -> dict[str, Any]:
    run.save_tracks(RunDir.BODIES_COMPLETED, tracks)
    return {"person_frames_recovered": len(inputs["complete"].frames), **job.notes}


# ----------------------------------------------------------------------------------- smooth
def _smooth(inputs: Inputs, body: Any, section: Any, job: Job) -> dict[int, BodyTrack]:
    _require_body(body)
    fps = float(inputs["video"].info.fps)
    K = inputs["camera"]
    tracks = inputs["refine"]
    incremental: Incremental | None = inputs["incremental"]
    redo = _resmoothed(tracks, incremental)
    out = {}
    for k, (obj_id, track) in enumerate(tracks.items()):
        job.check()
        if obj_id in redo:
            out[obj_id] = refit_keypoints(make_consistent(track, section, fps), body, K)
        else:
            out[obj_id] = incremental.previous[obj_id]
        job.report((k + 1) / len(tracks), f"person {obj_id}")
    return out


def _resmoothed(tracks: dict[int, BodyTrack], incremental: Incremental | None) -> list[int]:
    """The people smoothed (again): everyone in a whole run, else the changed and the new ones."""
    if incremental is None:
        return list(tracks)
    return [i for i in tracks if i in incremental.changed or i not in incremental.previous]


def _save_smoothed(run: RunDir, tracks: dict[int, BodyTrack], inputs: Inputs, _job: Job) -> dict[str, Any]:
    run.save_tracks(RunDir.BODIES, tracks)
    return {"people_smoothed": _resmoothed(tracks, inputs["incremental"])}


# ----------------------------------------------------------------------------------- export
@dataclass(frozen=True)
class MeshExport:
    """OBJs still to be written: lazy items and whose files they replace.

    Attributes:
        items: every exported person-frame (of ``people`` only, when given).
        people: the ids whose earlier files are removed first (None: a whole run, whose
            artefacts the driver has cleared).
    """

    items: Iterator[MeshItem]
    people: frozenset[int] | None


def _export(inputs: Inputs, body: Any, section: Any, job: Job) -> MeshExport:
    """Every valid person-frame as an OBJ (``cam_t`` applied) and its camera record, lazily; in an
    incremental run only those of the changed people, of people new since, and none of people gone."""
    bodies: dict[int, BodyTrack] = inputs["smooth"]
    incremental: Incremental | None = inputs["incremental"]
    people = None
    if incremental is not None:  # previous: the ids with exported files
        people = frozenset(incremental.changed) | (incremental.previous ^ frozenset(bodies))
        bodies = {i: t for i, t in bodies.items() if i in people}
    if not section.obj:
        return MeshExport(iter(()), people)
    _require_body(body)
    items = _obj_items(bodies, inputs["camera"], body, obj_workers(section.obj_workers), job)
    return MeshExport(items, people)


def _save_meshes(run: RunDir, export: MeshExport, _inputs: Inputs, _job: Job) -> dict[str, Any]:
    if export.people is not None:
        run.clear_people((RunDir.MESHES, RunDir.FOCALS), export.people)
    written = run.save_meshes(export.items)
    return {"files": run.mesh_count(), "written": written}


def _obj_items(
    bodies: dict[int, BodyTrack], K: Intrinsics, body: Any, workers: int, job: Job
) -> Iterator[MeshItem]:
    total = sum(int(t.valid.sum()) for t in bodies.values())

    def meshes() -> Iterator[tuple[tuple[int, int, dict[str, Any]], np.ndarray, tuple[int, int, int]]]:
        for obj_id, track in bodies.items():
            color = color_for(obj_id)
            for row, frame, verts in track_meshes(track, body):
                job.check()
                camera = camera_json(float(track.focal[row]), K.principal_point, track.cam_t[row])
                yield (obj_id, frame, camera), verts, color

    for done, ((obj_id, frame, camera), obj) in enumerate(
        obj_meshes(meshes(), body.faces, workers=workers, expected=total), start=1
    ):
        yield obj_id, frame, obj, camera
        job.report(done / max(total, 1), f"person {obj_id}")


# ----------------------------------------------------------------------------------- render
@dataclass(frozen=True)
class Rendering:
    """The 4D result, still to be encoded: lazy frames and what to write of them."""

    frames: Iterator[RenderedFrame]
    obj_ids: tuple[int, ...]
    individual: bool
    jpgs: bool


def _render(inputs: Inputs, body: Any, section: Any, job: Job) -> Rendering | None:
    """The 4D result frames, lazily (encoded by the save as they come); None when off."""
    if not section.enable:
        return None
    _require_body(body)
    from body4d.render import get_renderer

    video, bodies, K = inputs["video"], inputs["smooth"], inputs["camera"]
    n = len(video)
    frames = render_frames(
        video,
        meshes_by_frame(bodies, body, n),
        get_renderer(),
        np.asarray(K.K),
        body.faces,
        background=section.background,
        individual=section.individual,
    )
    return Rendering(_reporting(frames, job, n), tuple(bodies), section.individual, section.frames)


def _reporting(items: Iterator[RenderedFrame], job: Job, n: int) -> Iterator[RenderedFrame]:
    for item in items:
        job.check()
        yield item
        job.report((item[0] + 1) / max(n, 1), f"frame {item[0] + 1}/{n}")


def _save_render(run: RunDir, rendering: Rendering | None, inputs: Inputs, _job: Job) -> dict[str, Any]:
    if rendering is None:
        return {"frames": 0}
    fps = inputs["video"].info.fps
    ids = rendering.obj_ids
    n = run.save_render(
        rendering.frames,
        fps,
        ids,
        individual=rendering.individual,
        jpgs=rendering.jpgs,
        queue_depth=inputs["queue_depth"],
    )
    return {"frames": n, "individual": list(ids) if rendering.individual else []}


# ----------------------------------------------------------------------------------- bundle
def _bundle(inputs: Inputs, body: Any, section: Any, job: Job) -> tuple[list[PersonBundle], bytes | None]:
    _require_body(body)
    video = inputs["video"]
    job.report(0.0, "animated GLB, npz and json per person")
    result = person_bundles(
        inputs["smooth"],
        inputs["complete"],
        inputs["camera"],
        body,
        float(video.info.fps),
        len(video),
        section,
    )
    job.report(1.0, f"{len(result[0])} people")
    return result


def _save_bundles(
    run: RunDir, result: tuple[list[PersonBundle], bytes | None], _inputs: Inputs, _job: Job
) -> dict[str, Any]:
    bundles, scene = result
    return {"people": run.save_bundles(bundles, scene), "glb": scene is not None}


def _require_body(body: Any) -> None:
    if body is None:
        raise RuntimeError("the SAM-3D-Body model is not loaded: load_models(..., body=True)")


RECIPE: tuple[Stage, ...] = (
    Stage(
        "masks",
        needs=("video", "prompts", "masks_dir", "scratch"),
        run=_segment,
        save=_save_masks,
        load=RunDir.load_masks,
        artefacts=(RunDir.IMAGES, RunDir.MASKS, RunDir.MASKS_VIS, RunDir.MASK_VIDEO, RunDir.SEGMENTATION),
        model="sam3",
        section="sam3",
        # The masks also come from prompts or an imported folder, which a resume does not repeat:
        # new masks are asked for explicitly (Mask Generation, --force).
        rerun_on_change=False,
        # Writing every frame's masks (and images, when on) and the overlay video takes about as
        # long as tracking.
        save_share=0.5,
    ),
    Stage(
        "camera",
        needs=("video",),
        run=_camera,
        save=_save_camera,
        load=RunDir.load_camera,
        artefacts=(RunDir.CAMERA,),
        model="moge",
        section="camera",
    ),
    Stage(
        "recover",
        needs=("video", "masks", "camera", "queue_depth"),
        run=_recover,
        save=_save_recovered,
        load=lambda run: run.load_tracks(RunDir.BODIES_RAW),
        artefacts=(RunDir.BODIES_RAW,),
        model="body",
        section="sam_3d_body",
        incremental=_always,
    ),
    Stage(
        "complete",
        needs=("video", "masks", "recover"),
        run=_complete,
        save=_save_completion,
        load=RunDir.load_completion,
        artefacts=(RunDir.COMPLETION, RunDir.COMPLETION_REPORT),
        model="completion",
        section="completion",
        # Off, it completes nobody; on, who is hidden depends on everyone's masks: a whole run.
        incremental=lambda section: not section.enable,
    ),
    Stage(
        "refine",
        needs=("recover", "complete", "camera"),
        run=_refine,
        save=_save_refined,
        load=lambda run: run.load_tracks(RunDir.BODIES_COMPLETED),
        artefacts=(RunDir.BODIES_COMPLETED,),
        model="body",
        section="sam_3d_body",
        # Incremental only after an incremental complete, i.e. with nothing completed: a copy.
        incremental=_always,
    ),
    Stage(
        "smooth",
        needs=("video", "refine", "camera"),
        run=_smooth,
        save=_save_smoothed,
        load=lambda run: run.load_tracks(RunDir.BODIES),
        artefacts=(RunDir.BODIES,),
        model="body",
        section="smoothing",
        incremental=_always,
    ),
    Stage(
        "export",
        needs=("smooth", "camera"),
        run=_export,
        save=_save_meshes,
        load=RunDir.mesh_people,
        artefacts=(RunDir.MESHES, RunDir.FOCALS),
        model="body",
        section="export",
        incremental=_always,
    ),
    Stage(
        "render",
        needs=("video", "smooth", "camera", "queue_depth"),
        run=_render,
        save=_save_render,
        load=lambda run: None,
        artefacts=(
            RunDir.RESULT_VIDEO,
            RunDir.INDIVIDUAL_VIDEOS,
            RunDir.RENDERED_FRAMES,
            RunDir.RENDERED_INDIVIDUAL,
        ),
        model="body",
        section="render",
    ),
    Stage(
        "bundle",
        needs=("video", "smooth", "complete", "camera"),
        run=_bundle,
        save=_save_bundles,
        load=lambda run: None,
        artefacts=(RunDir.PEOPLE, RunDir.SCENE_GLB),
        model="body",
        section="bundle",
    ),
)
STAGES = tuple(s.name for s in RECIPE)
