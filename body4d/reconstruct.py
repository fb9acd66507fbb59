"""The numbered recipe shared by the app and the CLI: video + prompts -> run folder of 4D bodies.

    1 masks    SAM-3 propagation (prompts or automatic people), or masks imported from a folder
    2 camera   MoGe-2 intrinsics once per video (or the documented default)
    3 recover  SAM-3D-Body per target per frame, batched over frames x targets
    4 smooth   per-identity temporal consistency over the whole sequence
    5 export   OBJ per person per frame, camera JSON, keypoints added to bodies.npz

Each step is one stage call and one `RunDir` save, recorded in the manifest; a stage already
done in the run folder is skipped on resume (its saved output is read back; a stage that runs
hands its result on in memory), unless forced.
Remaking a stage marks every later stage stale, so they run again from the new output.
Occlusion completion and rendering arrive as stages of their own in later versions.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from body4d import export
from body4d.config import Config
from body4d.masks import color_for, read_palette_png
from body4d.run_dir import RunDir, StageCancelled
from body4d.stages.camera import estimate_camera
from body4d.stages.consistency import make_consistent
from body4d.stages.recover import FrameInput, RecoverCancelled, recover_bodies
from body4d.types import BodyTrack, Intrinsics, MaskTrack, Prompts
from body4d.video import Video, natural_key
from models.registry import checkpoint_report

log = logging.getLogger(__name__)

STAGES = ("masks", "camera", "recover", "smooth", "export")
# Headless runs log progress every this fraction of a stage.
LOG_PROGRESS_STEP = 0.1
# MHR70 keypoints per body.
NUM_KEYPOINTS = 70
_TRACK_FIELDS = {f.name for f in dataclasses.fields(BodyTrack)} - {"obj_id"}
# Label volumes larger than this go to a temporary memory-mapped file instead of RAM.
LABELS_IN_MEMORY_MAX_BYTES = 1 << 30
# Bodies per call when turning smoothed parameters back into meshes during export.
EXPORT_MESH_BATCH = 32


@dataclass
class PipelineModels:
    """Networks loaded once per process and shared read-only; None = not needed or not loaded."""

    sam3: object | None = None
    body: object | None = None
    moge: object | None = None


@dataclass(frozen=True)
class RunResult:
    """What a (possibly partial) run produced.

    Attributes:
        run_id: the run folder's name.
        root: the run folder.
        obj_ids: object ids found by segmentation (or in the imported masks).
        done: stages finished (including ones skipped on resume).
        artefacts: stage name -> paths relative to ``root``.
    """

    run_id: str
    root: Path
    obj_ids: tuple[int, ...]
    done: tuple[str, ...]
    artefacts: dict[str, list[str]] = field(default_factory=dict)


ProgressFn = Callable[[str, float, str], None]


def load_models(cfg: Config, *, sam3: bool, detector: bool, body: bool, camera: bool) -> PipelineModels:
    """Load the networks a run needs (device and dtype from ``cfg.runtime``)."""
    from models.registry import resolve_device, resolve_dtype

    device = resolve_device(cfg.runtime.device)
    dtype = resolve_dtype(cfg.runtime.dtype, device)
    models = PipelineModels()
    if sam3:
        from models.sam3 import Sam3Models

        models.sam3 = Sam3Models.load(cfg.sam3.ckpt_path, device=device, dtype=dtype, with_detector=detector)
    if body:
        from models.sam_3d_body import load_sam3dbody

        s = cfg.sam_3d_body
        models.body = load_sam3dbody(
            s.ckpt_path,
            s.config_path,
            s.mhr_path,
            device=device,
            dtype=s.dtype,
            bbox_padding=s.bbox_padding,
            mask_value=s.mask_value,
        )
    if camera and cfg.sam_3d_body.fov_path:
        from models.moge import load_moge

        models.moge = load_moge(
            cfg.sam_3d_body.fov_path, device=device, dtype=dtype, resolution_level=cfg.camera.resolution_level
        )
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
    should_cancel: Callable[[], bool] | None = None,
) -> RunResult:
    """Run the recipe on ``video`` into ``run`` up to ``stop_after``.

    Args:
        video: the opened input.
        run: the run folder (new, or an earlier one to resume).
        cfg: validated configuration.
        models: loaded networks (`load_models`).
        prompts: clicks per object id; None = automatic people detection (ignored with masks_dir).
        masks_dir: folder of palette PNGs (one per frame, pixel = id) replacing segmentation.
        stop_after: last stage to run (one of `STAGES`).
        force: re-run stages already done in ``run``.
        progress: ``progress(stage, fraction, message)``.
        should_cancel: polled often; True stops the current stage (recorded as cancelled).

    Raises:
        ValueError: bad masks folder or prompts; a stage's own errors (recorded as failed).
    """
    if stop_after not in STAGES:
        raise ValueError(f"stop_after must be one of {', '.join(STAGES)}, got {stop_after!r}")
    report = progress or _log_progress()
    info = video.info
    run.update_manifest(
        video={
            "n_frames": info.n_frames,
            "fps": f"{info.fps.numerator}/{info.fps.denominator}",
            "height": info.height,
            "width": info.width,
            "codec": info.codec,
        }
    )
    ckpts = checkpoint_report(cfg)
    run.update_manifest(
        checkpoints={i.name: {"path": str(i.path), "present": i.present, "tiny": i.tiny} for i in ckpts.items}
    )
    if ckpts.uses_tiny:
        log.warning("TINY TEST CHECKPOINTS in use (random weights): the results of this run are meaningless")
    last = STAGES.index(stop_after)
    done: list[str] = []
    if cfg.completion.enable:
        log.warning(
            "completion.enable is true but occlusion completion (Diffusion-VAS) is not part of this "
            "version: occluded frames are filled by temporal interpolation only"
        )
        run.update_manifest(completion="unavailable in this version: temporal interpolation only")

    # 1 masks ------------------------------------------------------------------------------
    with run.stage("masks", force=force) as st:
        if not st.skip:
            if masks_dir is not None:
                obj_ids = _import_masks(Path(masks_dir), video, run, cfg)
            else:
                obj_ids = _segment(video, run, cfg, models, prompts, report, should_cancel)
            st.extra["obj_ids"] = list(obj_ids)
            run.invalidate(*_after("masks"))
            for rel in ("images", "masks", "masks_vis", f"video_mask_{run.run_id}.mp4", "segmentation.json"):
                if run.path(rel).exists():
                    st.artefact(rel)
    obj_ids = tuple(run.manifest["stages"]["masks"].get("obj_ids", []))
    done.append("masks")
    if last == 0:
        return _result(run, obj_ids, done)
    if not obj_ids:
        raise ValueError(
            "segmentation found no targets in the video: click on the people to follow, or lower "
            "sam3.detection_threshold for automatic detection"
        )

    # 2 camera -----------------------------------------------------------------------------
    with run.stage("camera", force=force) as st:
        if st.skip:
            intrinsics = _read_intrinsics(run)
        else:
            report("camera", 0.0, "estimating intrinsics")
            intrinsics = estimate_camera(video, models.moge, cfg)
            run.write_json("camera.json", _intrinsics_json(intrinsics))
            st.artefact("camera.json")
            run.invalidate(*_after("camera"))
    done.append("camera")
    if last == 1:
        return _result(run, obj_ids, done)

    # 3 recover ----------------------------------------------------------------------------
    body = models.body
    with run.stage("recover", force=force) as st:
        if st.skip:
            raw = _load_tracks(run, "bodies_raw.npz")
        else:
            if body is None:
                raise RuntimeError("the SAM-3D-Body model is not loaded: load_models(..., body=True)")
            try:
                tracks = recover_bodies(
                    _frame_inputs(video, run),
                    len(video),
                    intrinsics,
                    body,
                    batch_size=cfg.sam_3d_body.batch_size,
                    inference_type=cfg.sam_3d_body.inference_type,
                    progress=lambda d, n: report("recover", d / max(n, 1), f"frame {d}/{n}"),
                    should_cancel=should_cancel,
                )
            except RecoverCancelled as exc:
                raise StageCancelled(str(exc)) from exc
            _save_tracks(run, "bodies_raw.npz", tracks)
            st.artefact("bodies_raw.npz")
            run.invalidate(*_after("recover"))
            raw = tracks
    done.append("recover")
    if last == 2:
        return _result(run, obj_ids, done)

    # 4 smooth -----------------------------------------------------------------------------
    with run.stage("smooth", force=force) as st:
        if st.skip:
            bodies = _load_tracks(run, "bodies.npz")
        else:
            fps = float(info.fps)
            bodies = {i: make_consistent(t, cfg.smoothing, fps) for i, t in raw.items()}
            _save_tracks(run, "bodies.npz", bodies)
            st.artefact("bodies.npz")
            run.invalidate(*_after("smooth"))
    done.append("smooth")
    if last == 3:
        return _result(run, obj_ids, done)

    # 5 export -----------------------------------------------------------------------------
    with run.stage("export", force=force) as st:
        if not st.skip:
            if body is None:
                raise RuntimeError("the SAM-3D-Body model is not loaded: load_models(..., body=True)")
            files = _export_meshes(run, bodies, intrinsics, body, report, should_cancel)
            st.extra["files"] = files
            for obj_id in bodies:
                st.artefact(f"mesh_4d_individual/{obj_id}")
                st.artefact(f"focal_4d_individual/{obj_id}")
    done.append("export")
    return _result(run, obj_ids, done)


def _log_progress(step: float = LOG_PROGRESS_STEP) -> ProgressFn:
    """Progress as log lines: one per stage start and per ``step`` of progress (headless runs)."""
    last: dict[str, float] = {}

    def report(stage: str, fraction: float, message: str) -> None:
        if stage not in last or fraction >= min(1.0, last[stage] + step):
            last[stage] = fraction
            log.info("%s %3.0f%% %s", stage, 100 * fraction, message)

    return report


def _after(stage: str) -> tuple[str, ...]:
    """Stages that consume ``stage``'s output: stale once it is remade."""
    return STAGES[STAGES.index(stage) + 1 :]


# ----------------------------------------------------------------------------------- steps
def _segment(
    video: Video,
    run: RunDir,
    cfg: Config,
    models: PipelineModels,
    prompts: Prompts | None,
    report: ProgressFn,
    should_cancel: Callable[[], bool] | None,
) -> tuple[int, ...]:
    from body4d.stages.segment import SegmentationCancelled, apply_prompts, segment_video, write_outputs

    sam3 = models.sam3
    if sam3 is None:
        raise RuntimeError("the SAM-3 model is not loaded: load_models(..., sam3=True)")
    s = cfg.sam3
    session = sam3.open_session(
        video,
        max_cached_frames=s.max_cached_frames,
        vision_cache_frames=s.vision_cache_frames,
        frame_cache=s.frame_cache,
        mask_threshold=s.mask_threshold,
    )
    if prompts is not None:
        apply_prompts(session, prompts)
        detect = None
    else:
        detect = partial(
            sam3.detect,
            prompt=s.detection_prompt,
            threshold=s.detection_threshold,
            mask_threshold=s.detection_mask_threshold,
            nms_iou=s.detection_nms_iou,
        )
    info = video.info
    with tempfile.TemporaryDirectory(prefix="body4d_labels_") as tmp:
        labels = _label_volume(Path(tmp), len(video), info.height, info.width)
        try:
            result = segment_video(
                session,
                detect=detect,
                redetect_every=s.redetect_every,
                redetect_iou=s.redetect_iou,
                progress=lambda p: report("masks", p.done / max(p.total, 1), f"{p.phase} frame {p.frame}"),
                should_cancel=should_cancel,
                out=labels,
            )
        except SegmentationCancelled as exc:
            raise StageCancelled(str(exc)) from exc
        log.info("masks: writing images/, masks/, masks_vis/ and the overlay video (%d frames)", len(video))
        write_outputs(
            run, video, result.track, fps=info.fps, crf=cfg.video.crf, jpeg_quality=cfg.video.jpeg_quality
        )
        run.write_json(
            "segmentation.json",
            {
                "obj_ids": list(result.track.obj_ids),
                "first_frames": {str(k): v for k, v in result.first_frames.items()},
                "mode": "prompts" if prompts is not None else "auto",
            },
        )
        return tuple(result.track.obj_ids)


def _label_volume(folder: Path, n: int, height: int, width: int) -> np.ndarray:
    """``uint8[n, H, W]`` zeros: in RAM when small, else a memory-mapped file in ``folder``."""
    if n * height * width <= LABELS_IN_MEMORY_MAX_BYTES:
        return np.zeros((n, height, width), dtype=np.uint8)
    return np.lib.format.open_memmap(
        folder / "labels.npy", mode="w+", dtype=np.uint8, shape=(n, height, width)
    )


def _import_masks(masks_dir: Path, video: Video, run: RunDir, cfg: Config) -> tuple[int, ...]:
    """Take masks from another tool: one palette/greyscale PNG per frame (sorted by name), pixel = id.

    Writes the same outputs as segmentation (images/, masks/, masks_vis/, the overlay video).
    """
    from body4d.stages.segment import write_outputs

    if not masks_dir.is_dir():
        raise ValueError(f"--masks {masks_dir} is not a folder: pass a folder of one PNG per frame")
    files = sorted(
        (p for p in masks_dir.iterdir() if p.suffix.lower() == ".png"), key=lambda p: natural_key(p.name)
    )
    n, info = len(video), video.info
    if len(files) != n:
        raise ValueError(
            f"--masks {masks_dir} holds {len(files)} PNG masks but the video has {n} frames: "
            "give exactly one mask per frame (sorted by name)"
        )
    ids: set[int] = set()
    with tempfile.TemporaryDirectory(prefix="body4d_labels_") as tmp:
        labels = _label_volume(Path(tmp), n, info.height, info.width)
        for i, path in enumerate(files):
            lab = read_palette_png(path)
            if lab.shape != (info.height, info.width):
                raise ValueError(
                    f"mask {path.name} is {lab.shape[1]}x{lab.shape[0]} but the video is "
                    f"{info.width}x{info.height}: masks must have the frame size"
                )
            labels[i] = lab
            ids.update(int(v) for v in np.unique(lab) if v)
        if not ids:
            raise ValueError(
                f"--masks {masks_dir}: every mask is empty (all pixels 0): there is nobody to reconstruct"
            )
        track = MaskTrack(obj_ids=tuple(sorted(ids)), labels=labels)
        write_outputs(run, video, track, fps=info.fps, crf=cfg.video.crf, jpeg_quality=cfg.video.jpeg_quality)
    return track.obj_ids


def _frame_inputs(video: Video, run: RunDir) -> Iterator[FrameInput]:
    """Frames with their label maps, streamed (masks/ is read back: it is the stage's saved output)."""
    for i, frame in enumerate(video):
        labels = read_palette_png(run.path(f"masks/{i:08d}.png"))
        yield FrameInput(index=i, image=frame, labels=labels)


def _export_meshes(
    run: RunDir,
    bodies: dict[int, BodyTrack],
    intrinsics: Intrinsics,
    body: object,
    report: ProgressFn,
    should_cancel: Callable[[], bool] | None,
) -> int:
    """Write every valid person-frame as OBJ + camera JSON; add keypoints to ``bodies.npz``."""
    writer = export.ObjWriter(body.faces)
    K = np.asarray(intrinsics.K, dtype=np.float64)
    total = sum(int(t.valid.sum()) for t in bodies.values())
    written = 0
    arrays: dict[int, dict[str, np.ndarray]] = {}
    for obj_id, track in bodies.items():
        n = len(track.frames)
        kp3d = np.full((n, NUM_KEYPOINTS, 3), np.nan, dtype=np.float32)
        kp2d = np.full((n, NUM_KEYPOINTS, 2), np.nan, dtype=np.float32)
        rows = np.flatnonzero(track.valid)
        color = color_for(obj_id)
        for start in range(0, len(rows), EXPORT_MESH_BATCH):
            if should_cancel is not None and should_cancel():
                raise StageCancelled("export cancelled")
            chunk = rows[start : start + EXPORT_MESH_BATCH]
            verts, kps = body.mesh_from_params(
                *(getattr(track, name)[chunk] for name in BodyTrack.PARAM_FIELDS)
            )
            placed_kps = kps + track.cam_t[chunk][:, None, :]
            kp3d[chunk] = placed_kps
            kp2d[chunk] = _project(placed_kps, K)
            for k, row in enumerate(chunk):
                frame = int(track.frames[row])
                placed = verts[k] + track.cam_t[row]
                run.write_bytes(f"mesh_4d_individual/{obj_id}/{frame:08d}.obj", writer.mesh(placed, color))
                run.write_json(
                    f"focal_4d_individual/{obj_id}/{frame:08d}.json",
                    export.camera_json(float(track.focal[row]), intrinsics.principal_point, track.cam_t[row]),
                )
                written += 1
            report("export", written / max(total, 1), f"person {obj_id}")
        arrays[obj_id] = {**track.arrays(), "keypoints_3d": kp3d, "keypoints_2d": kp2d}
    run.write_npz("bodies.npz", **export.bodies_arrays(arrays))
    return written


def _project(points: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pinhole projection of camera-frame points ``[..., 3]`` (metres) to pixels ``[..., 2]``."""
    z = points[..., 2:3]
    return (points[..., :2] * np.array([K[0, 0], K[1, 1]]) + np.array([K[0, 2], K[1, 2]]) * z) / z


# --------------------------------------------------------------------------- persistence
def _intrinsics_json(K: Intrinsics) -> dict[str, object]:
    return {"K": np.asarray(K.K).tolist(), "width": K.width, "height": K.height, "source": K.source}


def _read_intrinsics(run: RunDir) -> Intrinsics:
    d = json.loads(run.path("camera.json").read_text(encoding="utf-8"))
    return Intrinsics(
        K=np.asarray(d["K"], dtype=np.float64), width=d["width"], height=d["height"], source=d["source"]
    )


def _save_tracks(run: RunDir, rel: str, tracks: dict[int, BodyTrack]) -> None:
    run.write_npz(rel, **export.bodies_arrays({i: t.arrays() for i, t in tracks.items()}))


def _load_tracks(run: RunDir, rel: str) -> dict[int, BodyTrack]:
    with np.load(run.path(rel)) as data:
        out = {}
        for obj_id in data["obj_ids"]:
            obj_id = int(obj_id)
            arrays = {
                name.split("/", 1)[1]: data[name] for name in data.files if name.startswith(f"id{obj_id}/")
            }
            out[obj_id] = BodyTrack(obj_id=obj_id, **arrays)
        return out


def _result(run: RunDir, obj_ids: tuple[int, ...], done: list[str]) -> RunResult:
    return RunResult(run.run_id, run.root, tuple(obj_ids), tuple(done), run.manifest["artefacts"])
