"""Occlusion completion stage: amodal masks and completed pixels for hidden person-frames only.

1. **Where to look.** ``completion.mode: candidates`` (default): a cheap prior on the masks and the
   first recovery pass (`body4d.stages.occlusion.candidate_frames`) flags frames where a person
   may be hidden; the flagged runs, padded by ``window_pad`` and cut to ``max_occ_len``, are the
   windows the amodal diffusion samples. ``mode: all`` is the original's schedule: every person
   over the whole video in windows of `ORIGINAL_WINDOW` frames.
2. **Amodal masks.** Per window: the person's visible mask and the depth of the window's frames
   (Depth Anything V2, computed once per frame and reused by every window and person, min/max
   normalised over the window) condition Diffusion-VAS amodal segmentation at
   ``detection_size``. The release's rules (`body4d.stages.occlusion.amodal_verdict`) decide per
   frame whether the person is occluded.
3. **Completion.** The occluded frames, padded and cut again, are windows of the content
   completion pipeline at ``completion_size``: the person's visible pixels on white plus the
   amodal mask give the whole person. Only the occluded frames are kept.

Windows shorter than ``min_frames`` are widened with real neighbouring frames (the diffusion's
temporal context) where the video has them; results are used only inside the window. Windows of
the same sampled length are batched, ``batch_windows`` per call; each (person, window, pass)
samples from its own generator seeded from ``seed``, so results do not depend on batching or
order: a batch that runs out of GPU memory is retried at half the size (`body4d.memory.HalvingBatch`;
the manifest's stage entry records the ``batch_windows`` used). The report counts the work: UNet frame-evaluations (sampled frames x steps x guidance
branches), windows, depth frames and person-frames completed.
"""

from __future__ import annotations

import io
import logging
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import torch
from PIL import Image

from body4d.jobs import Job
from body4d.masks import encode_palette_png
from body4d.memory import HalvingBatch
from body4d.stages.occlusion import (
    MaskStats,
    amodal_from_rgb,
    amodal_verdict,
    candidate_frames,
    keypoint_jumps,
    mask_stats,
    windows,
)
from body4d.types import BodyTrack, CompletedFrame, Completion, MaskTrack

if TYPE_CHECKING:
    from models.depth import DepthEstimator
    from models.diffusion_vas import VASModel

log = logging.getLogger(__name__)

# mode "all": the original samples every person over batches of sam_3d_body.batch_size frames (64).
ORIGINAL_WINDOW = 64
# Frames per depth-network call.
DEPTH_BATCH = 8
# JPEG quality of the completed images (they are recovery inputs, like images/).
COMPLETED_JPEG_QUALITY = 95
WHITE = 255
# Pass names (generator seeds, report keys).
AMODAL, CONTENT = "amodal", "completion"

FrameFn = Callable[[int], np.ndarray]


@dataclass
class CompletionModels:
    """The three networks of occlusion completion (loaded by `body4d.driver.load_models`)."""

    depth: DepthEstimator
    amodal: VASModel
    content: VASModel


@dataclass(frozen=True)
class Window:
    """Frames ``[start, stop)`` of one person; ``[context_start, context_stop)`` is what is sampled."""

    obj_id: int
    start: int
    stop: int
    context_start: int
    context_stop: int

    @property
    def sampled(self) -> int:
        return self.context_stop - self.context_start


def working_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """``(h, w)`` with the short side ``short_side`` and the aspect kept, both multiples of 64."""
    scale = short_side / min(height, width)
    h, w = (max(64, round(s * scale / 64) * 64) for s in (height, width))
    return (short_side, w) if height <= width else (h, short_side)


def with_context(obj_id: int, start: int, stop: int, min_frames: int, n_frames: int) -> Window:
    """The window widened (centred, clamped to the video) to at least ``min_frames`` frames."""
    target = max(stop - start, min(min_frames, n_frames))
    lo = max(0, start - (target - (stop - start)) // 2)
    hi = min(n_frames, lo + target)
    return Window(obj_id, start, stop, max(0, hi - target), hi)


def original_windows(stats: MaskStats, obj_id: int, n_frames: int) -> list[tuple[int, int]]:
    """Mode ``all``: the original's schedule, one window per batch of frames the person is in."""
    present = np.flatnonzero(stats.area > 0)
    if not len(present):
        return []
    out = []
    for start in range(0, n_frames, ORIGINAL_WINDOW):
        stop = min(n_frames, start + ORIGINAL_WINDOW)
        if np.any((present >= start) & (present < stop)):
            out.append((start, stop))
    return out


def original_spans(occluded: np.ndarray, batches: list[tuple[int, int]], pad: int) -> list[tuple[int, int]]:
    """Mode ``all``: the original's completion windows, one per batch, ``[first - pad, last + pad)``
    around its occluded frames and never including the batch's last frame (the original's end
    bound), whatever the length (it computes ``max_occ_len`` but never uses it)."""
    out = []
    for start, stop in batches:
        hit = np.flatnonzero(occluded[start:stop])
        if len(hit):
            out.append((max(start, start + int(hit[0]) - pad), min(stop - 1, start + int(hit[-1]) + pad)))
    return out


def plan_amodal(
    stats: dict[int, MaskStats],
    tracks: dict[int, BodyTrack],
    n_frames: int,
    width: int,
    height: int,
    section: Any,
) -> dict[int, list[tuple[int, int]]]:
    """Per person, the windows the amodal pass samples (``mode`` decides how they are chosen)."""
    plan: dict[int, list[tuple[int, int]]] = {}
    for obj_id, st in stats.items():
        if section.mode == "all":
            plan[obj_id] = original_windows(st, obj_id, n_frames)
            continue
        track = tracks.get(obj_id)
        jumps = (
            keypoint_jumps(track.frames, track.valid, track.keypoints_3d, n_frames)
            if track is not None
            else None
        )
        flags = candidate_frames(st, jumps, width, height, section, truncation=section.truncation)
        plan[obj_id] = windows(flags, section.window_pad, section.max_occ_len)
    return plan


def sampled_windows(plan: dict[int, list[tuple[int, int]]], min_frames: int, n_frames: int) -> list[Window]:
    """Every planned window with its sampling context (`with_context`), person by person."""
    return [with_context(obj_id, s, e, min_frames, n_frames) for obj_id, ws in plan.items() for s, e in ws]


def estimate(
    stats: dict[int, MaskStats], n_frames: int, width: int, height: int, section: Any
) -> dict[str, int]:
    """Work before a run, from the masks alone (no keypoint prior yet): amodal windows, candidate
    person-frames and UNet frame-evaluations, and the most the completion pass could add (every
    candidate frame found occluded)."""
    from models.diffusion_vas import SamplingOptions

    opts = SamplingOptions.from_section(section)
    spans = sampled_windows(
        plan_amodal(stats, {}, n_frames, width, height, section), opts.min_frames, n_frames
    )
    frames = sum(w.stop - w.start for w in spans)
    amodal = sum(opts.unet_evaluations(w.sampled) for w in spans)
    return {
        "windows": len(spans),
        "candidate_frames": frames,
        "amodal_unet_evaluations": amodal,
        "max_completion_unet_evaluations": amodal,
    }


def complete_occlusions(
    frame: FrameFn,
    labels: MaskTrack,
    tracks: dict[int, BodyTrack],
    models: CompletionModels,
    section: Any,
    job: Job | None = None,
) -> Completion:
    """Find occluded person-frames and complete them (module docstring).

    Args:
        frame: ``frame(i)`` -> RGB ``uint8[H, W, 3]`` of frame ``i``.
        labels: the segmentation (label maps at the video's resolution).
        tracks: the first recovery pass (its 3D keypoints feed the prior).
        models: depth, amodal and completion networks.
        section: the ``completion`` config section.
        job: progress and cancellation.

    Returns:
        The completed frames (encoded) and the report.
    """
    from models.diffusion_vas import SamplingOptions

    job = job or Job("complete")
    volume = labels.labels
    n_frames, height, width = volume.shape
    obj_ids = list(labels.obj_ids)
    opts = SamplingOptions.from_section(section)
    det_hw = working_size(height, width, section.detection_size)
    comp_hw = working_size(height, width, section.completion_size)

    stats = mask_stats(
        (np.asarray(volume[i]) for i in range(n_frames)), obj_ids, n_frames, section.contact_radius
    )
    plan = plan_amodal(stats, tracks, n_frames, width, height, section)
    amodal_windows = sampled_windows(plan, opts.min_frames, n_frames)
    # Progress counts UNet evaluations; the completion pass is first assumed as large as the amodal one.
    counter = _Progress(job, 2 * sum(opts.unet_evaluations(w.sampled) for w in amodal_windows))

    # ---- depth, once per frame
    needed = sorted({i for w in amodal_windows for i in range(w.context_start, w.context_stop)})
    depth: dict[int, np.ndarray] = {}
    for k in range(0, len(needed), DEPTH_BATCH):
        job.check()
        chunk = needed[k : k + DEPTH_BATCH]
        maps = models.depth.predict(np.stack([frame(i) for i in chunk]), det_hw, legacy_bgr=section.legacy)
        depth.update(zip(chunk, maps, strict=True))

    # ---- amodal pass
    amodal: dict[tuple[int, int], np.ndarray] = {}  # (obj_id, frame) -> bool[h, w] at det_hw
    verdicts: dict[int, dict[int, tuple[bool, float, str]]] = {i: {} for i in obj_ids}
    amodal_evals = 0
    # One size for both passes: halved once for either network, it stays down for the other.
    per_call = HalvingBatch(section.batch_windows, "batch_windows", job)

    def sample_amodal(part: Sequence[Window], _size: int) -> list[np.ndarray]:
        out = models.amodal.sample(
            torch.from_numpy(np.stack([mask_video(volume, w, det_hw) for w in part])),
            torch.from_numpy(np.stack([depth_video(depth, w) for w in part])),
            [_generator(section.seed, w, AMODAL) for w in part],
            opts,
        )
        return list(_to_uint8(out))

    for batch in batches(amodal_windows, section.batch_windows):
        job.check()
        for w, video in zip(batch, per_call.map(sample_amodal, batch), strict=True):
            masks = amodal_from_rgb(video)
            for i in range(w.start, w.stop):
                am = masks[i - w.context_start]
                modal = np.asarray(volume[i]) == w.obj_id
                full = cv2.resize(am.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
                verdicts[w.obj_id][i] = amodal_verdict(modal, full, section)
                amodal[(w.obj_id, i)] = am
        amodal_evals += sum(opts.unet_evaluations(w.sampled) for w in batch)
        counter.add(sum(opts.unet_evaluations(w.sampled) for w in batch), "amodal masks")

    # ---- completion pass, only around occluded frames
    occluded = {i: np.zeros(n_frames, dtype=bool) for i in obj_ids}
    for obj_id, per in verdicts.items():
        for i, (occ, _, _) in per.items():
            occluded[obj_id][i] = occ
    content_plan = {
        obj_id: original_spans(occluded[obj_id], plan[obj_id], section.window_pad)
        if section.mode == "all"
        else windows(occluded[obj_id], section.window_pad, section.max_occ_len)
        for obj_id in obj_ids
    }
    content_windows = sampled_windows(content_plan, opts.min_frames, n_frames)
    counter.total = amodal_evals + sum(opts.unet_evaluations(w.sampled) for w in content_windows)
    completed: list[CompletedFrame] = []
    content_evals = 0

    def sample_content(
        part: Sequence[tuple[Window, tuple[np.ndarray, np.ndarray]]], _size: int
    ) -> list[np.ndarray]:
        out = models.content.sample(
            torch.from_numpy(np.stack([p[0] for _, p in part])),
            torch.from_numpy(np.stack([p[1] for _, p in part])),
            [_generator(section.seed, w, CONTENT) for w, _ in part],
            opts,
        )
        return list(_to_uint8(out))

    for batch in batches(content_windows, section.batch_windows):
        job.check()
        pairs = [content_video(frame, volume, amodal, w, comp_hw) for w in batch]
        videos = per_call.map(sample_content, list(zip(batch, pairs, strict=True)))
        for w, video, (_, cond_b) in zip(batch, videos, pairs, strict=True):
            for i in range(w.start, w.stop):
                if not occluded[w.obj_id][i]:
                    continue
                k = i - w.context_start
                rgb = cv2.resize(video[k], (width, height), interpolation=cv2.INTER_LINEAR)
                mask = cv2.resize(
                    (cond_b[k, 0] > 0).astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST
                )
                completed.append(CompletedFrame(w.obj_id, i, _jpeg(rgb), encode_palette_png(mask * w.obj_id)))
        content_evals += sum(opts.unet_evaluations(w.sampled) for w in batch)
        counter.add(sum(opts.unet_evaluations(w.sampled) for w in batch), "completing hidden pixels")

    report = _report(
        section,
        det_hw,
        comp_hw,
        plan,
        amodal_windows,
        content_windows,
        verdicts,
        occluded,
        amodal_evals,
        content_evals,
        len(depth),
        len(completed),
    )
    completed.sort(key=lambda c: (c.obj_id, c.frame))
    return Completion(tuple(completed), report)


def disabled_report() -> dict[str, Any]:
    """The report of a run with ``completion.enable: false``."""
    return {"enabled": False, "unet_evaluations": 0, "person_frames_completed": 0}


# ------------------------------------------------------------------------------- helpers
class _Progress:
    """Progress as the share of UNet evaluations done, never going back."""

    def __init__(self, job: Job, total: int) -> None:
        self.job, self.total, self.done, self.shown = job, total, 0, 0.0

    def add(self, work: int, message: str) -> None:
        self.done += work
        self.shown = max(self.shown, self.done / max(self.total, 1))
        self.job.report(self.shown, message)


def batches(items: Sequence[Window], size: int) -> Iterable[list[Window]]:
    """Windows grouped by sampled length (one diffusion call needs one length), ``size`` per call."""
    by_len: dict[int, list[Window]] = {}
    for w in items:
        by_len.setdefault(w.sampled, []).append(w)
    for group in by_len.values():
        for k in range(0, len(group), size):
            yield group[k : k + size]


def _generator(seed: int, w: Window, kind: str) -> torch.Generator:
    """A CPU generator of its own per (person, window, pass): independent of batching and order."""
    key = zlib.crc32(f"{seed}:{w.obj_id}:{w.start}:{w.stop}:{kind}".encode())
    return torch.Generator("cpu").manual_seed(key)


def _resize_mask(mask: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    return cv2.resize(mask.astype(np.uint8), (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST) > 0


def _signed(mask: np.ndarray) -> np.ndarray:
    """bool ``[F, h, w]`` -> ``float32 [F, 3, h, w]`` in {-1, +1}."""
    return np.repeat((mask.astype(np.float32) * 2 - 1)[:, None], 3, axis=1)


def mask_video(volume: np.ndarray, w: Window, hw: tuple[int, int]) -> np.ndarray:
    """Condition A of the amodal pass: the person's visible mask over the window's context, -1/+1."""
    masks = [
        _resize_mask(np.asarray(volume[i]) == w.obj_id, hw) for i in range(w.context_start, w.context_stop)
    ]
    return _signed(np.stack(masks))


def depth_video(depth: dict[int, np.ndarray], w: Window) -> np.ndarray:
    """Condition B of the amodal pass: the context frames' depth, min/max normalised over them."""
    from models.depth import normalise

    d = normalise(np.stack([depth[i] for i in range(w.context_start, w.context_stop)]))
    return np.repeat(d[:, None], 3, axis=1).astype(np.float32)


def content_video(
    frame: FrameFn,
    volume: np.ndarray,
    amodal: dict[tuple[int, int], np.ndarray],
    w: Window,
    hw: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Conditions of the completion pass: visible pixels on white, and the amodal mask (united
    with the visible one; the visible one alone where no amodal mask was predicted)."""
    rgb_out, mask_out = [], []
    for i in range(w.context_start, w.context_stop):
        modal = _resize_mask(np.asarray(volume[i]) == w.obj_id, hw)
        rgb = cv2.resize(frame(i), (hw[1], hw[0]), interpolation=cv2.INTER_AREA)
        rgb = np.where(modal[..., None], rgb, WHITE).astype(np.float32) / 127.5 - 1.0
        am = amodal.get((w.obj_id, i))
        full = modal if am is None else modal | _resize_mask(am, hw)
        rgb_out.append(rgb.transpose(2, 0, 1))
        mask_out.append(full)
    return np.stack(rgb_out).astype(np.float32), _signed(np.stack(mask_out))


def _to_uint8(video: torch.Tensor) -> np.ndarray:
    """``(B, F, 3, H, W)`` in [0, 1] -> ``uint8 (B, F, H, W, 3)``."""
    return (video.permute(0, 1, 3, 4, 2).numpy() * 255).round().astype(np.uint8)


def _jpeg(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=COMPLETED_JPEG_QUALITY)
    return buf.getvalue()


def _report(
    section: Any,
    det_hw: tuple[int, int],
    comp_hw: tuple[int, int],
    plan: dict[int, list[tuple[int, int]]],
    amodal_windows: list[Window],
    content_windows: list[Window],
    verdicts: dict[int, dict[int, tuple[bool, float, str]]],
    occluded: dict[int, np.ndarray],
    amodal_evals: int,
    content_evals: int,
    depth_frames: int,
    completed: int,
) -> dict[str, Any]:
    people = {}
    for obj_id, per in verdicts.items():
        reasons: dict[str, int] = {}
        for _, _, reason in per.values():
            reasons[reason] = reasons.get(reason, 0) + 1
        people[str(obj_id)] = {
            "amodal_windows": [list(w) for w in plan.get(obj_id, [])],
            "iou": {str(i): round(float(iou), 4) for i, (_, iou, _) in sorted(per.items())},
            "completion_windows": [[w.start, w.stop] for w in content_windows if w.obj_id == obj_id],
            "occluded_frames": np.flatnonzero(occluded[obj_id]).tolist(),
            "verdicts": reasons,
        }
    return {
        "enabled": True,
        "mode": section.mode,
        "detection_size": list(det_hw),
        "completion_size": list(comp_hw),
        "amodal": {
            "windows": len(amodal_windows),
            "frames": sum(w.stop - w.start for w in amodal_windows),
            "sampled_frames": sum(w.sampled for w in amodal_windows),
            "unet_evaluations": amodal_evals,
        },
        "completion": {
            "windows": len(content_windows),
            "frames": sum(w.stop - w.start for w in content_windows),
            "sampled_frames": sum(w.sampled for w in content_windows),
            "unet_evaluations": content_evals,
        },
        "depth_frames": depth_frames,
        "unet_evaluations": amodal_evals + content_evals,
        "person_frames_completed": completed,
        "people": people,
    }
