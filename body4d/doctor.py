"""``body4d doctor``: is this machine ready for real work? One command for a GPU box with the checkpoints.

    body4d doctor [--input_video clip.mp4] [--frames 16] [--json report.json] [--device cuda:1]
                  [--config C] [--set key=value ...]

It prints the environment (device, NVIDIA driver, CUDA runtime, torch, GPU, bf16, OpenGL renderer)
and the checkpoint report, then loads each model on its own (timed), runs it on the first frames
of a real clip through the production stages, frees it, and prints one table row per model:

1. SAM-3 tracker + detector: "person" detection on frame 0, then propagation over the frames
   (`body4d.stages.segment.segment_video`).
2. MoGe-2: the video's intrinsics (`body4d.stages.camera.estimate_camera`).
3. SAM-3D-Body: every tracked person on every frame, batched (`body4d.stages.recover.recover_bodies`),
   plus the encoder's bf16-vs-fp32 difference on one crop.
4. Diffusion-VAS + Depth Anything V2 (only with ``completion.enable``): amodal masks of every tracked
   person on every frame (``mode: all``) and completion where they come out occluded
   (`body4d.stages.complete.complete_occlusions`); the median IoU of visible and amodal masks
   says whether the amodal model sees the people at all.

With the models weighed as they load, the environment also shows the GPU memory plan
(``runtime.offload``, `body4d.memory`) the app would choose for them.

The figures (`Figures`) are judged against the plausible ranges below by `check_figures`, a pure
function. Exit codes: 0 every model ran and every figure is plausible (with tiny test checkpoints:
every model ran; their figures are meaningless and not judged); 1 a checkpoint is missing, a model
failed or a figure is out of range; 2 bad config, device or video.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import gc
import json
import logging
import math
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from body4d import __version__
from body4d.config import REPO_ROOT, add_config_arguments
from body4d.errors import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_OK, InputError, one_line, require_folder_path

if TYPE_CHECKING:
    import torch

    from body4d.checkpoints import CheckpointReport
    from body4d.config import Config
    from body4d.driver import PipelineModels
    from body4d.memory import MemoryPlan
    from body4d.types import Intrinsics, MaskTrack
    from models.sam3 import Detections
    from models.sam_3d_body import SAM3DBody

log = logging.getLogger(__name__)


# The real street clip shipped with the repository (assets/examples/README.md).
DEFAULT_VIDEO = REPO_ROOT / "assets" / "examples" / "street.mp4"
# Frames used: enough for the tracker to fill its 7-frame memory, quick on any GPU.
DEFAULT_FRAMES = 16

NVIDIA_SMI_ARGS = ("--query-gpu=driver_version,name,memory.total", "--format=csv,noheader")
# nvidia-smi answers in well under a second; a hung driver must not hang the doctor.
NVIDIA_SMI_TIMEOUT_S = 30
# GL_RENDERER of Mesa's CPU rasteriser: meshes are then drawn on the CPU.
SOFTWARE_RENDERER = "llvmpipe"


@dataclass(frozen=True)
class Range:
    """Closed interval ``[low, high]`` of plausible values; ``high=None`` = no upper bound."""

    low: float
    high: float | None = None

    def contains(self, value: float) -> bool:
        return value >= self.low and (self.high is None or value <= self.high)

    def __str__(self) -> str:
        if self.high is None:
            return f">= {self.low:g}"
        if self.high == self.low:
            return f"= {self.low:g}"
        return f"{self.low:g}-{self.high:g}"


# Plausible figures with the real weights on an ordinary video of people (the default street clip).
# At least one person on frame 0: the default clip shows three pedestrians there.
MIN_PEOPLE = Range(1)
# A person's median mask area as a fraction of the frame: from a far pedestrian (~15x30 px at
# 768x576 is 0.001) to a close-up; 0 or the whole frame means broken masks.
MASK_AREA_FRACTION = Range(0.0005, 0.9)
# Focal length / image diagonal: 0.3 is a 118 degree diagonal field of view (fisheye-like), 3 is
# 19 degrees (telephoto); phones and webcams sit near 0.8-1.2.
FOCAL_DIAGONAL = Range(0.3, 3.0)
# cam_t depth in metres: closer than 0.5 m a body does not fit in the frame; beyond 80 m it is a
# few pixels tall.
DEPTH_M = Range(0.5, 80.0)
# The MHR body mesh has exactly 18,439 vertices.
MHR_VERTICES = Range(18439, 18439)
# Joints of the MHR skeleton read from mhr_model.pt (the BVH export's hierarchy).
MHR_JOINTS = Range(127, 127)
# Median IoU(visible mask, amodal mask) over the clip's person-frames: mostly visible people give
# an amodal mask close to the visible one; an amodal model that sees nobody gives ~0.
AMODAL_IOU = Range(0.5, 1.0)
# ||fp32 - bf16|| / ||fp32|| of SAM-3D-Body's encoder features on one crop: bf16 keeps ~3
# significant digits, so about 1e-2 is normal; more means an overflow or a broken bf16 path.
BF16_REL_DIFF = Range(0.0, 0.05)

STAGE_SAM3 = "SAM-3 tracker+detector"
STAGE_MOGE = "MoGe-2"
STAGE_BODY = "SAM-3D-Body"
STAGE_COMPLETION = "Diffusion-VAS"

STATUS_OK = "ok"
STATUS_MISSING = "MISSING"  # a checkpoint is absent
STATUS_DISABLED = "DISABLED"  # switched off by the config
STATUS_FAILED = "FAILED"  # loading or running raised


@dataclass(frozen=True)
class Spread:
    """Median, minimum and maximum of some values."""

    median: float
    min: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float] | np.ndarray) -> Spread | None:
        """The spread of ``values``, or None when there are none."""
        v = np.asarray(values, dtype=np.float64)
        if v.size == 0:
            return None
        return cls(float(np.median(v)), float(v.min()), float(v.max()))

    def __str__(self) -> str:
        return f"{self.median:.3g} ({self.min:.3g}-{self.max:.3g})"


@dataclass(frozen=True)
class Figures:
    """What the models measured; None = not measured (model missing or failed, or nothing to measure).

    Attributes:
        people: people SAM-3 detected on frame 0 (and tracked).
        mask_area: over the people, each person's median mask area as a fraction of the frame.
        focal_px: MoGe-2's focal length, pixels (None when it gave no usable estimate).
        focal_diagonal: ``focal_px`` / image diagonal.
        depth_m: SAM-3D-Body's ``cam_t`` z over every person-frame, metres.
        vertices: vertices of the MHR mesh.
        bf16_rel_diff: ``||f32 - bf16|| / ||f32||`` of SAM-3D-Body's encoder features on one crop.
        skeleton_joints: joints of the MHR skeleton hierarchy read from ``mhr_model.pt`` (BVH export).
        amodal_iou: median IoU(visible, amodal) over the person-frames (completion on only).
    """

    people: int | None = None
    mask_area: Spread | None = None
    focal_px: float | None = None
    focal_diagonal: float | None = None
    depth_m: Spread | None = None
    vertices: int | None = None
    bf16_rel_diff: float | None = None
    skeleton_joints: int | None = None
    amodal_iou: float | None = None


@dataclass(frozen=True)
class Check:
    """One figure against its plausible range.

    Attributes:
        name: the figure, as printed.
        value: the measured value (None = not measured, which fails).
        range: the plausible range.
        ok: the value was measured, is finite and lies in the range.
    """

    name: str
    value: float | None
    range: Range
    ok: bool

    def text(self) -> str:
        """``"<name> = <value> (range <range>)"``, or that it was not measured."""
        if self.value is None:
            return f"{self.name} was not measured (range {self.range})"
        return f"{self.name} = {self._value()} (range {self.range})"

    def problem(self) -> str:
        """What is wrong with a failed check, naming the figure, its value and the range."""
        if self.value is None:
            return f"{self.name} was not measured"
        return f"{self.name} = {self._value()} is outside its plausible range {self.range}"

    def _value(self) -> str:
        return str(self.value) if isinstance(self.value, int) else f"{self.value:.4g}"


def check_figures(figures: Figures) -> list[Check]:
    """Every figure against its plausible range, in a fixed order (a figure not measured fails;
    the completion figure is judged only when measured: completion is optional)."""
    area, depth = figures.mask_area, figures.depth_m
    rows: list[tuple[str, float | None, Range]] = [
        ("people detected", figures.people, MIN_PEOPLE),
        ("mask area fraction (smallest person)", None if area is None else area.min, MASK_AREA_FRACTION),
        ("mask area fraction (largest person)", None if area is None else area.max, MASK_AREA_FRACTION),
        ("focal length / image diagonal", figures.focal_diagonal, FOCAL_DIAGONAL),
        ("cam_t depth, nearest (m)", None if depth is None else depth.min, DEPTH_M),
        ("cam_t depth, farthest (m)", None if depth is None else depth.max, DEPTH_M),
        ("MHR vertex count", figures.vertices, MHR_VERTICES),
        ("bf16 vs fp32 encoder difference", figures.bf16_rel_diff, BF16_REL_DIFF),
        ("MHR skeleton joints (BVH hierarchy)", figures.skeleton_joints, MHR_JOINTS),
    ]
    if figures.amodal_iou is not None:
        rows.append(("median IoU of visible and amodal masks", figures.amodal_iou, AMODAL_IOU))
    return [
        Check(name, value, rng, value is not None and math.isfinite(value) and rng.contains(value))
        for name, value, rng in rows
    ]


def failures(figures: Figures) -> list[Check]:
    """The checks of `check_figures` that fail."""
    return [c for c in check_figures(figures) if not c.ok]


# ------------------------------------------------------------------------------- environment
@dataclass(frozen=True)
class Environment:
    """The machine as the models see it.

    Attributes:
        device: the torch device the models run on.
        dtype: ``runtime.dtype`` as resolved for that device.
        torch: torch version.
        cuda_runtime: the CUDA runtime torch was built with, or "none".
        driver: NVIDIA driver version from nvidia-smi, "none" without nvidia-smi, or
            "unavailable: <reason>".
        smi_gpus: "name, memory" of every GPU nvidia-smi lists.
        gpu: the device's name and memory as torch sees it, or "none".
        bf16: the device runs bf16 natively (CUDA only; CPUs run fp32).
        renderer: the headless OpenGL renderer (GL_RENDERER), or "unavailable: <reason>".
    """

    device: str
    dtype: str
    torch: str
    cuda_runtime: str
    driver: str
    smi_gpus: tuple[str, ...]
    gpu: str
    bf16: bool
    renderer: str


def nvidia_smi() -> tuple[str, tuple[str, ...]]:
    """The NVIDIA driver version and ``"name, memory"`` per GPU, from ``nvidia-smi``.

    Returns:
        ``("none", ())`` when nvidia-smi is not installed; ``("unavailable: <reason>", ())`` when
        it fails (e.g. the driver is not loaded).
    """
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return "none", ()
    try:
        res = subprocess.run(
            [exe, *NVIDIA_SMI_ARGS], capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable: {exc}", ()
    lines = [line.strip() for line in res.stdout.splitlines() if line.strip()]
    if res.returncode != 0 or not lines:
        reason = (res.stderr.strip() or res.stdout.strip() or f"exit code {res.returncode}").splitlines()[0]
        return f"unavailable: {reason}", ()
    fields = [[f.strip() for f in line.split(",", 1)] for line in lines]
    return fields[0][0], tuple(f[1] if len(f) > 1 else "" for f in fields)


def gl_renderer() -> str:
    """GL_RENDERER of a headless moderngl context (EGL first, then the default backend).

    "llvmpipe ..." is Mesa's CPU rasteriser; an NVIDIA renderer draws on the GPU.
    """
    import moderngl

    reasons = []
    for options in ({"backend": "egl"}, {}):
        try:
            ctx = moderngl.create_standalone_context(**options)
        except Exception as exc:  # moderngl raises plain Exception for every GL/EGL failure
            reasons.append(f"{options.get('backend', 'default')}: {exc}")
            continue
        try:
            return str(ctx.info["GL_RENDERER"])
        finally:
            ctx.release()
    return "unavailable: " + "; ".join(reasons)


def environment(device: torch.device, dtype: torch.dtype) -> Environment:
    """Describe the machine: versions, driver, GPU, bf16 support and the OpenGL renderer."""
    import torch

    driver, smi_gpus = nvidia_smi()
    gpu, bf16 = "none", False
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        gpu = f"{props.name}, {props.total_memory / 2**30:.1f} GiB"
        with torch.cuda.device(device):
            bf16 = bool(torch.cuda.is_bf16_supported())
    renderer = gl_renderer()
    if device.type == "cuda" and SOFTWARE_RENDERER in renderer:
        log.warning(
            "CUDA is available but OpenGL renders on the CPU (llvmpipe): expose the NVIDIA EGL driver"
        )
    return Environment(
        device=str(device),
        dtype=str(dtype).removeprefix("torch."),
        torch=torch.__version__,
        cuda_runtime=torch.version.cuda or "none",
        driver=driver,
        smi_gpus=smi_gpus,
        gpu=gpu,
        bf16=bf16,
        renderer=renderer,
    )


# ------------------------------------------------------------------------------------ stages
@dataclass(frozen=True)
class StageRow:
    """One model's line of the table.

    Attributes:
        stage: the model.
        status: "ok", "MISSING" (checkpoint absent), "DISABLED" (by the config) or "FAILED".
        load_s: loading time, seconds (None if not loaded).
        speed_ms: run time per ``unit``, milliseconds, including the first call's warm-up.
        unit: what ``speed_ms`` is per: "frame" or "person-frame".
        peak_gpu_bytes: ``torch.cuda.max_memory_allocated`` over loading and running (None on CPU).
        detail: the sanity figures, or what is wrong and how to fix it.
        model_bytes: bytes of the networks it loaded, by name (`body4d.memory.network_bytes`).
    """

    stage: str
    status: str
    load_s: float | None = None
    speed_ms: float | None = None
    unit: str = "frame"
    peak_gpu_bytes: int | None = None
    detail: str = ""
    model_bytes: dict[str, int] = dataclasses.field(default_factory=dict)


class _Meter:
    """Wall-clock seconds of the parts of one stage, its peak GPU memory (reset at creation) and the
    bytes of the networks it loaded."""

    def __init__(self, device: torch.device) -> None:
        import torch

        self._torch = torch
        self.cuda = device.type == "cuda"
        self.device = device
        self.seconds: dict[str, float] = {}
        self.peak_bytes: int | None = None
        self.model_bytes: dict[str, int] = {}
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(device)

    def weigh(self, models: PipelineModels) -> PipelineModels:
        """Record the bytes of the loaded ``models`` (`body4d.memory.network_bytes`); returns them."""
        from body4d.memory import network_bytes

        self.model_bytes.update(network_bytes(models))
        return models

    @contextlib.contextmanager
    def time(self, part: str) -> Iterator[None]:
        """Add the block's wall time to ``seconds[part]`` (CUDA work is waited for)."""
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.seconds[part] = self.seconds.get(part, 0.0) + time.perf_counter() - start

    def take_peak(self) -> None:
        """Record the peak GPU memory so far (later work of the stage is not counted)."""
        if self.cuda and self.peak_bytes is None:
            self.peak_bytes = int(self._torch.cuda.max_memory_allocated(self.device))

    def _sync(self) -> None:
        if self.cuda:
            self._torch.cuda.synchronize(self.device)


@dataclass(frozen=True)
class _Outcome:
    """What a stage function returns.

    Attributes:
        speed_ms: run time per unit of work, milliseconds (None: there was no work).
        detail: the printed sanity figures.
        figures: the `Figures` fields it measured.
        output: what later stages use (SAM-3: the label maps; MoGe-2: the intrinsics).
    """

    speed_ms: float | None
    detail: str
    figures: dict[str, Any]
    output: Any = None


def _run_stage(
    name: str,
    unit: str,
    device: torch.device,
    run: Callable[[_Meter], _Outcome],
) -> tuple[StageRow, _Outcome | None]:
    """Run one stage function; a failure becomes a FAILED row (and no outcome) instead of stopping."""
    import torch

    meter = _Meter(device)
    log.info("doctor: %s", name)
    try:
        outcome = run(meter)
    except Exception as exc:  # report every failure in its row and go on with the next model
        log.exception("doctor: %s failed", name)
        row = StageRow(name, STATUS_FAILED, meter.seconds.get("load"), None, unit, None, _one_line(exc))
        return row, None
    finally:  # the stage's model is unreachable now: free it before the next one is loaded
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    meter.take_peak()
    row = StageRow(
        name,
        STATUS_OK,
        meter.seconds.get("load"),
        outcome.speed_ms,
        unit,
        meter.peak_bytes,
        outcome.detail,
        meter.model_bytes,
    )
    return row, outcome


def _count_people(n: int) -> str:
    return f"{n} {'person' if n == 1 else 'people'}"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _sam3_stage(cfg: Config, frames: list[np.ndarray], meter: _Meter) -> _Outcome:
    from body4d.driver import load_models
    from body4d.stages.segment import segment_video
    from models.frames import ArrayFrames, PromptError

    with meter.time("load"):
        sam3 = meter.weigh(load_models(cfg, sam3=True, detector=True, body=False, camera=False)).sam3
    s = cfg.sam3

    def detect(frame: np.ndarray) -> Detections:
        with meter.time("detect"):
            return sam3.detect(frame)

    session = sam3.open_session(ArrayFrames(frames))
    try:
        with meter.time("run"):
            result = segment_video(session, detect=detect, redetect_every=0, redetect_iou=s.redetect_iou)
    except PromptError:  # nobody detected on frame 0: a figure (people = 0), not a crash
        ms = 1000 * meter.seconds["run"] / len(frames)
        return _Outcome(ms, f"nobody detected on frame 0 ({s.detection_prompt!r})", {"people": 0})
    n, (height, width) = len(frames), frames[0].shape[:2]
    visible = result.areas > 0
    per_person = [
        float(np.median(col[seen])) / (height * width)
        for col, seen in zip(result.areas.T, visible.T, strict=True)
        if seen.any()
    ]
    figures = {"people": len(result.track.obj_ids), "mask_area": Spread.of(per_person)}
    detect_ms = 1000 * meter.seconds.get("detect", 0.0)
    propagate_ms = 1000 * (meter.seconds["run"] - meter.seconds.get("detect", 0.0)) / n
    detail = (
        f"{_count_people(figures['people'])} on frame 0; mask area {figures['mask_area']} of the frame; "
        f"detection {detect_ms:.0f} ms, propagation {propagate_ms:.1f} ms/frame over {n} frames"
    )
    return _Outcome(1000 * meter.seconds["run"] / n, detail, figures, result.track)


def _moge_stage(cfg: Config, frames: list[np.ndarray], meter: _Meter) -> _Outcome:
    from body4d.driver import load_models
    from body4d.stages.camera import SOURCE_MOGE, estimate_camera, select_frames
    from models.frames import ArrayFrames

    with meter.time("load"):
        moge = meter.weigh(load_models(cfg, sam3=False, detector=False, body=False, camera=True)).moge
    with meter.time("run"):
        intrinsics = estimate_camera(ArrayFrames(frames), moge, cfg.camera)
    used = len(select_frames(len(frames), cfg.camera.num_frames))
    ms = 1000 * meter.seconds["run"] / used
    if intrinsics.source != SOURCE_MOGE:
        detail = f"no usable estimate on {used} frames: the default focal (image diagonal) would be used"
        return _Outcome(ms, detail, {}, intrinsics)
    focal = float(intrinsics.K[0, 0])
    figures = {"focal_px": focal, "focal_diagonal": focal / math.hypot(intrinsics.width, intrinsics.height)}
    detail = (
        f"focal {focal:.1f} px = {figures['focal_diagonal']:.3f} x image diagonal, median of {used} frames"
    )
    return _Outcome(ms, detail, figures, intrinsics)


def backbone_bf16_difference(model: SAM3DBody, image: np.ndarray, box: np.ndarray, K: np.ndarray) -> float:
    """``||f32 - bf16|| / ||f32||`` of SAM-3D-Body's encoder features on one person crop.

    The encoder runs twice on the same crop: with its weights in fp32 and in bf16 (buffers as
    loaded, e.g. the fp32 RoPE frequencies). The loaded encoder is used as is for the precision
    it already has; the other one is a temporary copy.

    Args:
        model: the loaded predictor.
        image: RGB ``uint8[H, W, 3]``.
        box: ``(4,)`` person box xyxy, pixels.
        K: ``(3, 3)`` intrinsics, pixels.
    """
    import torch

    from models.sam_3d_body.preprocess import CropSpec, build_crops, crop_box

    net = model.net
    center, size = crop_box(np.asarray(box, dtype=np.float64), model.bbox_padding)
    crops, _, _, _ = build_crops(
        [image], [CropSpec(0, center, size, K)], model.crop_size, model.device, model.mask_value
    )
    x = (crops - net.image_mean) / net.image_std  # the normalisation of SAM3DBodyNet.encode
    loaded = next(net.backbone.parameters()).dtype
    feats = []
    with torch.inference_mode():
        for dtype in (torch.float32, torch.bfloat16):
            encoder = net.backbone
            if dtype != loaded:
                encoder = copy.deepcopy(net.backbone)
                for p in encoder.parameters():
                    p.data = p.data.to(dtype)
            feats.append(encoder(x.to(dtype)).float())
            del encoder
    ref, low = feats
    return float(torch.linalg.vector_norm(ref - low) / torch.linalg.vector_norm(ref))


def _body_stage(
    cfg: Config, frames: list[np.ndarray], people: MaskTrack | None, intrinsics: Intrinsics, meter: _Meter
) -> _Outcome:
    from body4d.driver import load_models
    from body4d.stages.recover import FrameInput, recover_bodies
    from body4d.types import BodyTrack

    with meter.time("load"):
        body = meter.weigh(load_models(cfg, sam3=False, detector=False, body=True, camera=False)).body
    if people is None:  # no SAM-3 masks: one whole-frame "person" on frame 0 still exercises the model
        inputs = [FrameInput(0, frames[0], np.ones(frames[0].shape[:2], dtype=np.uint8))]
    else:
        inputs = [FrameInput(i, frame, people.labels[i]) for i, frame in enumerate(frames)]
    s = cfg.sam_3d_body
    with meter.time("run"):
        tracks = recover_bodies(
            inputs, len(inputs), intrinsics, body, batch_size=s.batch_size, inference_type=s.inference_type
        )
    meter.take_peak()  # the bf16 comparison below holds an extra copy of the encoder
    n = sum(int(t.valid.sum()) for t in tracks.values())
    if n == 0:
        return _Outcome(None, "no person mask large enough to estimate", {})
    track = next(iter(tracks.values()))
    row = int(np.flatnonzero(track.valid)[0])
    verts, _ = body.mesh_from_params(
        *(getattr(track, name)[row : row + 1] for name in BodyTrack.PARAM_FIELDS)
    )
    frame = frames[int(track.frames[row])]
    rel = backbone_bf16_difference(body, frame, track.box[row], intrinsics.K)
    try:  # the BVH export reads the hierarchy from the TorchScript file: is it there?
        joints: int | None = len(body.skeleton.names)
    except ValueError as exc:
        log.warning("doctor: %s", exc)
        joints = None
    depth = Spread.of(np.concatenate([t.cam_t[t.valid, 2] for t in tracks.values()]))
    encoder = str(next(body.net.backbone.parameters()).dtype).removeprefix("torch.")
    who = "a whole-frame box (no SAM-3 people)" if people is None else _count_people(len(tracks))
    detail = (
        f"{n} person-frame{'' if n == 1 else 's'} of {who}; cam_t depth {depth} m; {verts.shape[1]} vertices; "
        f"bf16 vs fp32 encoder difference {rel:.4f} (encoder runs in {encoder}, {s.inference_type} mode); "
        f"skeleton {joints if joints is not None else 'MISSING'} joints"
    )
    figures = {
        "depth_m": depth,
        "vertices": int(verts.shape[1]),
        "bf16_rel_diff": rel,
        "skeleton_joints": joints,
    }
    return _Outcome(1000 * meter.seconds["run"] / n, detail, figures)


def _completion_stage(
    cfg: Config, frames: list[np.ndarray], people: MaskTrack | None, meter: _Meter
) -> _Outcome:
    from body4d.driver import load_models
    from body4d.memory import OFFLOADED_FIELD, for_stage
    from body4d.stages.complete import complete_occlusions
    from body4d.types import MaskTrack

    with meter.time("load"):
        loaded = meter.weigh(
            load_models(cfg, sam3=False, detector=False, body=False, camera=False, completion=True)
        )
    models = loaded.completion
    if people is None:  # no SAM-3 masks: a centred box "person" still exercises both pipelines
        height, width = frames[0].shape[:2]
        labels = np.zeros((len(frames), height, width), dtype=np.uint8)
        labels[:, height // 4 : 3 * height // 4, width // 3 : 2 * width // 3] = 1
        people = MaskTrack(obj_ids=(1,), labels=labels)
    section = dataclasses.replace(cfg.completion, mode="all")
    with meter.time("run"), for_stage(loaded, OFFLOADED_FIELD):
        completion = complete_occlusions(lambda i: frames[i], people, {}, models, section)
    report = completion.report
    ious = [v for person in report["people"].values() for v in person["iou"].values()]
    evals = report["unet_evaluations"]
    figures = {"amodal_iou": float(np.median(ious))} if ious else {}
    detail = (
        f"amodal masks of {len(ious)} person-frames, median IoU with the visible mask "
        f"{figures.get('amodal_iou', float('nan')):.3f}; {report['person_frames_completed']} completed; "
        f"{evals} UNet frame-evaluations at {report['detection_size'][0]}x{report['detection_size'][1]}"
    )
    return _Outcome(1000 * meter.seconds["run"] / max(evals, 1), detail, figures)


# ------------------------------------------------------------------------------------ report
@dataclass(frozen=True)
class DoctorReport:
    """Everything the doctor found.

    Attributes:
        environment: the machine.
        checkpoints: the checkpoint report of the configuration.
        video: the clip used (path, frames used, width, height, fps).
        stages: one row per model, in run order.
        figures: the sanity figures.
        checks: every figure against its range (`check_figures`).
        memory: the GPU memory plan the app would choose with these networks (`memory_plan`).
    """

    environment: Environment
    checkpoints: CheckpointReport
    video: dict[str, Any]
    stages: tuple[StageRow, ...]
    figures: Figures
    checks: tuple[Check, ...]
    memory: MemoryPlan

    @property
    def tiny(self) -> bool:
        """Tiny random test checkpoints are in use: the figures are meaningless and not judged."""
        return self.checkpoints.uses_tiny

    @property
    def problems(self) -> list[str]:
        """One sentence per problem: models that did not run, then (real weights) failed checks.

        Figures left unmeasured by a model that did not run are not repeated.
        """
        out = [f"{r.stage} {r.status}: {r.detail}" for r in self.stages if r.status != STATUS_OK]
        if not self.tiny:
            out += [c.problem() for c in failures(self.figures) if c.value is not None or not out]
        return out

    @property
    def exit_code(self) -> int:
        return EXIT_FAILURE if self.problems else EXIT_OK

    def to_json(self) -> dict[str, Any]:
        """The report as plain JSON data."""
        return {
            "body4d": __version__,
            "ok": not self.problems,
            "tiny_checkpoints": self.tiny,
            "judged": not self.tiny,
            "problems": self.problems,
            "video": self.video,
            "environment": dataclasses.asdict(self.environment),
            "checkpoints": [
                {"name": i.name, "path": str(i.path), "present": i.present, "tiny": i.tiny}
                for i in self.checkpoints.items
            ],
            "stages": [dataclasses.asdict(r) for r in self.stages],
            "memory": {"mode": self.memory.mode, **dataclasses.asdict(self.memory)},
            "figures": dataclasses.asdict(self.figures),
            "checks": [
                {
                    "name": c.name,
                    "value": c.value,
                    "range": str(c.range),
                    "low": c.range.low,
                    "high": c.range.high,
                    "ok": c.ok,
                }
                for c in self.checks
            ],
        }


def run_doctor(
    cfg: Config, frames: list[np.ndarray], video: dict[str, Any], device: torch.device
) -> DoctorReport:
    """Check the environment and every model on ``frames``.

    Args:
        cfg: the configuration (dtype, checkpoints, stage settings).
        frames: RGB ``uint8[H, W, 3]`` frames of one clip, all the same size (at least one).
        video: description of the clip for the report.
        device: where the models run (``resolve_device(cfg.runtime.device)``).
    """
    from body4d.checkpoints import checkpoint_report
    from body4d.stages.camera import fallback_intrinsics
    from models.devices import resolve_dtype
    from models.errors import SETUP_HINT

    env = environment(device, resolve_dtype(cfg.runtime.dtype, device))
    report = checkpoint_report(cfg)
    rows: list[StageRow] = []
    measured: dict[str, Any] = {}

    def run(name: str, unit: str, paths: tuple[str, ...], stage: Callable[[_Meter], _Outcome]) -> Any:
        """Run a stage unless a checkpoint at ``paths`` is missing; keep its row and figures.

        Returns the stage's output, or None when it did not run or failed.
        """
        absent = [i for i in report.items if str(i.path) in paths and not i.present]
        if absent:
            where = "; ".join(f"{i.name} at {i.path}: {i.problem}" for i in absent)
            fix = SETUP_HINT.format(root=report.ckpt_root)
            rows.append(StageRow(name, STATUS_MISSING, unit=unit, detail=f"{where}: run `{fix}`"))
            return None
        row, outcome = _run_stage(name, unit, device, stage)
        rows.append(row)
        if outcome is None:
            return None
        measured.update(outcome.figures)
        return outcome.output

    track = run(STAGE_SAM3, "frame", (cfg.sam3.ckpt_path,), lambda m: _sam3_stage(cfg, frames, m))
    s3b = cfg.sam_3d_body
    intrinsics = fallback_intrinsics(frames[0].shape[1], frames[0].shape[0])
    if cfg.camera.ckpt_path:
        estimate = run(STAGE_MOGE, "frame", (cfg.camera.ckpt_path,), lambda m: _moge_stage(cfg, frames, m))
        if estimate is not None:
            intrinsics = estimate
    else:
        why = "camera.ckpt_path is empty: set it to the MoGe-2 model.pt to check the camera model"
        rows.append(StageRow(STAGE_MOGE, STATUS_DISABLED, detail=why))
    run(
        STAGE_BODY,
        "person-frame",
        (s3b.ckpt_path, s3b.config_path, s3b.mhr_path),
        lambda m: _body_stage(cfg, frames, track, intrinsics, m),
    )
    if cfg.completion.enable:
        c = cfg.completion
        run(
            STAGE_COMPLETION,
            "UNet frame-eval",
            (c.model_path_mask, c.model_path_rgb, c.model_path_depth),
            lambda m: _completion_stage(cfg, frames, track, m),
        )
    figures = Figures(**measured)
    plan = memory_plan(cfg, device, {k: v for r in rows for k, v in r.model_bytes.items()})
    return DoctorReport(env, report, video, tuple(rows), figures, tuple(check_figures(figures)), plan)


def memory_plan(cfg: Config, device: torch.device, model_bytes: dict[str, int]) -> MemoryPlan:
    """The GPU memory plan the app would choose with the networks the doctor loaded.

    The doctor frees each network before loading the next, so the device's free memory now is
    taken less the networks that would stay on it (`body4d.memory.plan_now`).

    Args:
        cfg: the configuration (``runtime.offload``, ``runtime.offload_margin_gb``).
        device: the compute device.
        model_bytes: bytes of each network loaded, by name.
    """
    from body4d.memory import OFFLOADABLE, plan_now

    resident = sum(b for name, b in model_bytes.items() if name not in OFFLOADABLE)
    return plan_now(model_bytes, device, cfg.runtime, absent_bytes=resident)


# ---------------------------------------------------------------------------------- printing
TINY_BANNER = (
    "!!! TINY TEST CHECKPOINTS (random weights): every figure below is MEANINGLESS and the ranges "
    "are NOT judged. Install the real checkpoints (python scripts/setup.py) for a real check. !!!"
)


def format_report(report: DoctorReport) -> str:
    """The report as printed: environment, checkpoints, the per-model table, the checks, the verdict."""
    env = report.environment
    v = report.video
    lines = [
        f"body4d doctor {__version__}: {v['path']} ({v['frames']} frames, {v['width']}x{v['height']})",
        "",
        "Environment",
        f"  device          {env.device}, compute {env.dtype} (runtime.dtype)",
        f"  torch           {env.torch}, CUDA runtime {env.cuda_runtime}",
        f"  NVIDIA driver   {env.driver}" + "".join(f"; {g}" for g in env.smi_gpus),
        f"  GPU             {env.gpu}",
        f"  bf16            {'yes' if env.bf16 else 'no'}",
        f"  memory plan     {report.memory.describe()}",
        f"  renderer        {env.renderer}"
        + (" (software: meshes are drawn on the CPU)" if SOFTWARE_RENDERER in env.renderer else ""),
        "",
        "Checkpoints",
        *(f"  {line}" for line in report.checkpoints.text().splitlines()),
        "",
    ]
    if report.tiny:
        lines += [TINY_BANNER, ""]
    table = [("stage", "status", "load s", "speed", "peak GPU", "sanity")]
    for r in report.stages:
        table.append(
            (
                r.stage,
                r.status,
                "-" if r.load_s is None else f"{r.load_s:.2f}",
                "-" if r.speed_ms is None else f"{r.speed_ms:.1f} ms/{r.unit}",
                "n/a" if r.peak_gpu_bytes is None else f"{r.peak_gpu_bytes / 2**30:.2f} GiB",
                r.detail,
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(5)]
    lines += [
        "  ".join([*(cell.ljust(w) for cell, w in zip(row[:5], widths, strict=True)), row[5]])
        for row in table
    ]
    lines += ["", "Checks" + (" (not judged: tiny checkpoints)" if report.tiny else "")]
    for c in report.checks:
        mark = "-" if report.tiny else ("ok" if c.ok else "FAIL")
        lines.append(f"  {mark:<4}  {c.text()}")
    lines.append("")
    if report.problems:
        lines.append(f"RESULT: {len(report.problems)} problem(s)")
        lines += [f"  - {p}" for p in report.problems]
    elif report.tiny:
        lines.append("RESULT: every model ran (tiny test checkpoints: the figures are meaningless)")
    else:
        lines.append("RESULT: ok, every model ran and every figure is plausible")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- CLI
def _positive_int(text: str) -> int:
    """``--frames``: a whole number of frames, at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of frames: use e.g. --frames 16")
    return value


def add_doctor_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``doctor`` subcommand on ``subparsers``."""
    p = subparsers.add_parser(
        "doctor",
        help="check this machine: environment, checkpoints, each model loaded and run on a real clip",
        epilog="exit codes: 0 ready, 1 a checkpoint is missing, a model failed or a figure is out of "
        "range (each named on stderr), 2 bad config, device, video or --json path, "
        "4 interrupted (Ctrl-C or SIGTERM)",
    )
    p.add_argument(
        "--input_video",
        "--input-video",
        dest="input_video",
        default=str(DEFAULT_VIDEO),
        help="video file or frame folder (default: the street clip in assets/examples)",
    )
    p.add_argument(
        "--frames",
        type=_positive_int,
        default=DEFAULT_FRAMES,
        help=f"use the first N frames (default {DEFAULT_FRAMES})",
    )
    p.add_argument("--json", default=None, metavar="PATH", help="also write the whole report as JSON")
    p.add_argument("--device", default=None, help="override runtime.device (e.g. cpu, cuda, cuda:1)")
    add_config_arguments(p)
    p.set_defaults(func=doctor_command)
    return p


def doctor_command(args: argparse.Namespace) -> int:
    """Execute ``body4d doctor``; returns the exit code (see module doc)."""
    from transformers.utils import logging as hf_logging

    from body4d.config import load_config
    from body4d.video import folder_rate, open_video
    from models.devices import resolve_device

    overrides = [*args.set, *([f"runtime.device={args.device}"] if args.device else [])]
    try:
        if args.json:
            if Path(args.json).is_dir():
                raise InputError(f"--json {args.json} is a folder: pass the path of the report file to write")
            require_folder_path(Path(args.json).parent, "--json folder")
        cfg = load_config(args.config, overrides=overrides)
        device = resolve_device(cfg.runtime.device)
        with open_video(
            args.input_video,
            max_side=cfg.video.max_side,
            folder_fps=folder_rate(cfg),
            max_pixels=cfg.limits.max_frame_pixels,
        ) as video:
            frames = list(video.iter_range(0, args.frames))
            info = video.info
    except ValueError as exc:  # an InputError, ConfigError, VideoError, or runtime.device unusable here
        print(f"body4d doctor: {one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if len(frames) < args.frames:
        log.info("%s has only %d frames: using them all", info.path, len(frames))
    described = {
        "path": str(info.path),
        "frames": len(frames),
        "width": info.width,
        "height": info.height,
        "fps": f"{info.fps.numerator}/{info.fps.denominator}",
    }
    hf_logging.disable_progress_bar()  # one log line per event, no weight-loading bars
    report = run_doctor(cfg, frames, described, device)
    if report.tiny:
        log.warning("TINY TEST CHECKPOINTS in use: the doctor's figures are meaningless")
    print(format_report(report))
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
    for problem in report.problems:
        print(f"body4d doctor: {problem}", file=sys.stderr)
    return report.exit_code
