"""Occlusion completion work: our schedule (candidate windows) against the original's (every person,
every frame), on 5 people x 90 frames with one 20-frame occluded span.

Run: ``.venv/bin/python benchmarks/completion_schedule.py`` (about 10 minutes on 2 CPU cores;
``--steps`` fewer sampling steps for the wall-time part only).

The clip: five people standing apart; a sixth walks in front of person 1, hiding more than 30 % of
it on exactly 20 frames (ground truth from the rendered boxes), and is person 2. Masks come from
the rendering (no SAM-3), and there is no body track yet, so the prior uses the masks only (the
3D keypoint rule can only add candidates).

* ours (``completion.mode: candidates``): amodal windows = `body4d.stages.complete.plan_amodal`
  on the masks, widened to ``min_frames``; completion windows = the truly occluded frames padded
  and cut (`body4d.stages.occlusion.windows`); depth for the frames of the amodal windows once.
* original (``mode: all``): every person over every 64-frame batch it appears in; completion from
  each batch's first to last occluded frame (`original_spans`); depth for every frame.

UNet frame-evaluations (frames sampled x steps x guidance branches) are counted with the same
`SamplingOptions.unet_evaluations` the stage records in the manifest. The wall time runs both
schedules through the tiny random Diffusion-VAS and Depth Anything checkpoints
(`body4d.testing`), one after the other in this process, at the same working size (64 px short
side); windows of equal length are batched as the stage batches them, the original's run one by one.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from report import headline

from body4d.config import CompletionConfig
from body4d.stages.complete import (
    DEPTH_BATCH,
    Window,
    batches,
    content_video,
    depth_video,
    mask_video,
    original_spans,
    original_windows,
    plan_amodal,
    sampled_windows,
    working_size,
)
from body4d.stages.occlusion import mask_stats, windows
from body4d.testing.tiny_depth import DEPTH_DIR, write_tiny_depth
from body4d.testing.tiny_vas import AMODAL_DIR, COMPLETION_DIR, write_tiny_vas
from models import depth as depth_adapter
from models import diffusion_vas
from models.diffusion_vas import SamplingOptions

T, H, W = 90, 128, 384
HIDDEN, WALKER = 1, 2
# x0, x1 of each standing person (rows 20-116); the walker is 30 px wide (rows 14-122).
STANDING = {1: (100, 140), 3: (262, 292), 4: (302, 332), 5: (342, 372)}
WALKER_WIDTH = 30
# The walker's left edge (floored to a pixel): hidden fraction of person 1 > 0.3 <=> overlap > 12 px
# <=> left edge in 83..127; at 2.3 px/frame from 83 on frame 35 that is frames 35-54.
OCCLUDED = range(35, 55)
SPEED = 46 / 20


def walker_x(t: int) -> float:
    return 83.0 + SPEED * (t - OCCLUDED.start)


def render() -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray]]:
    """RGB frames, label maps and ground-truth occluded flags per person."""
    frames = np.full((T, H, W, 3), 170, np.uint8)
    labels = np.zeros((T, H, W), np.uint8)
    truth = {}
    for obj_id, (x0, x1) in STANDING.items():
        frames[:, 20:116, x0:x1] = (40 * obj_id, 90, 200 - 30 * obj_id)
        labels[:, 20:116, x0:x1] = obj_id
    for t in range(T):
        lo = int(walker_x(t))
        frames[t, 14:122, max(lo, 0) : lo + WALKER_WIDTH] = (230, 200, 40)
        labels[t, 14:122, max(lo, 0) : lo + WALKER_WIDTH] = WALKER
    for obj_id, (x0, x1) in STANDING.items():
        full = (x1 - x0) * 96
        visible = (labels[:, 20:116, x0:x1] == obj_id).reshape(T, -1).sum(axis=1)
        truth[obj_id] = (visible > 0) & (visible < 0.7 * full)
    truth[WALKER] = np.zeros(T, dtype=bool)
    assert np.flatnonzero(truth[HIDDEN]).tolist() == list(OCCLUDED), "the clip has one 20-frame span"
    assert not any(truth[i].any() for i in truth if i != HIDDEN)
    return frames, labels, truth


@dataclasses.dataclass
class Schedule:
    name: str
    amodal: list[Window]
    completion: list[Window]
    depth_frames: list[int]

    def evaluations(self, opts: SamplingOptions) -> tuple[int, int]:
        return (
            sum(opts.unet_evaluations(w.sampled) for w in self.amodal),
            sum(opts.unet_evaluations(w.sampled) for w in self.completion),
        )


def schedules(labels: np.ndarray, truth: dict[int, np.ndarray], section: CompletionConfig) -> list[Schedule]:
    """Both schedules' windows, built with the stage's own planning functions."""
    ids = sorted(truth)
    stats = mask_stats(list(labels), ids, T, section.contact_radius)
    ctx = section.min_frames
    ours = sampled_windows(plan_amodal(stats, {}, T, W, H, section), ctx, T)
    ours_completion = {i: windows(truth[i], section.window_pad, section.max_occ_len) for i in ids}
    batches_all = {i: original_windows(stats[i], i, T) for i in ids}
    orig_completion = {i: original_spans(truth[i], batches_all[i], section.window_pad) for i in ids}
    return [
        Schedule(
            "ours (candidates)",
            ours,
            sampled_windows(ours_completion, ctx, T),
            sorted({f for w in ours for f in range(w.context_start, w.context_stop)}),
        ),
        Schedule(
            "original (all)",
            sampled_windows(batches_all, ctx, T),
            sampled_windows(orig_completion, ctx, T),
            list(range(T)),
        ),
    ]


def time_schedule(
    sched: Schedule,
    frames: np.ndarray,
    labels: np.ndarray,
    models: dict[str, object],
    opts: SamplingOptions,
    size: tuple[int, int],
    batch: int,
) -> dict[str, float]:
    """Wall seconds of the depth, amodal and completion passes of one schedule (tiny models), with
    the stage's own condition builders; the completion pass is conditioned on the visible masks."""
    out = {}
    start = time.perf_counter()
    depth: dict[int, np.ndarray] = {}
    for k in range(0, len(sched.depth_frames), DEPTH_BATCH):
        idx = sched.depth_frames[k : k + DEPTH_BATCH]
        depth.update(zip(idx, models["depth"].predict(frames[idx], size, legacy_bgr=True), strict=True))
    out["depth_s"] = time.perf_counter() - start

    def amodal_conditions(win: Window) -> tuple[np.ndarray, np.ndarray]:
        return mask_video(labels, win, size), depth_video(depth, win)

    def content_conditions(win: Window) -> tuple[np.ndarray, np.ndarray]:
        return content_video(lambda i: frames[i], labels, {}, win, size)

    def run(pass_windows: list[Window], model: object, conditions) -> float:  # noqa: ANN001
        t0 = time.perf_counter()
        together = sched.name.startswith("ours")
        groups = batches(pass_windows, batch) if together else [[w] for w in pass_windows]
        for group in groups:
            pairs = [conditions(w) for w in group]
            cond_a = torch.from_numpy(np.stack([p[0] for p in pairs]))
            cond_b = torch.from_numpy(np.stack([p[1] for p in pairs]))
            model.sample(cond_a, cond_b, [torch.Generator().manual_seed(w.start) for w in group], opts)
        return time.perf_counter() - t0

    out["amodal_s"] = run(sched.amodal, models["amodal"], amodal_conditions)
    out["completion_s"] = run(sched.completion, models["content"], content_conditions)
    out["total_s"] = out["depth_s"] + out["amodal_s"] + out["completion_s"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=25, help="sampling steps of the wall-time part")
    args = ap.parse_args()
    torch.set_num_threads(2)
    section = CompletionConfig(enable=True)
    frames, labels, truth = render()
    plans = schedules(labels, truth, section)
    release = SamplingOptions.from_section(section)

    print(
        f"5 people (4 standing, 1 walking) x {T} frames, truly occluded person-frames: {sum(int(v.sum()) for v in truth.values())}"
    )
    print(
        "\n| schedule | amodal windows | amodal frames sampled | completion windows | depth frames "
        "| UNet frame-evals amodal | completion | total |"
    )
    print("|---|---|---|---|---|---|---|---|")
    totals = {}
    for s in plans:
        a, c = s.evaluations(release)
        totals[s.name] = a + c
        print(
            f"| {s.name} | {len(s.amodal)} | {sum(w.sampled for w in s.amodal)} | {len(s.completion)} "
            f"| {len(s.depth_frames)} | {a:,} | {c:,} | {a + c:,} |"
        )
    ours, orig = totals["ours (candidates)"], totals["original (all)"]
    print(f"\nUNet frame-evaluations, original / ours: {orig / ours:.1f}x fewer for ours")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_tiny_vas(root)
        write_tiny_depth(root)
        models = {
            "depth": depth_adapter.load(root / DEPTH_DIR, "cpu", torch.float32),
            "amodal": diffusion_vas.load(root / AMODAL_DIR, "cpu", torch.float32),
            "content": diffusion_vas.load(root / COMPLETION_DIR, "cpu", torch.float32),
        }
        opts = dataclasses.replace(release, num_inference_steps=args.steps)
        size = working_size(H, W, 64)
        print(f"\nWall time, tiny models, CPU, working size {size[0]}x{size[1]}, {args.steps} steps:\n")
        print("| schedule | depth s | amodal s | completion s | total s |")
        print("|---|---|---|---|---|")
        # Warm-up (one-off kernel set-up is not part of either schedule).
        warm = torch.zeros((1, 16, 3, *size))
        models["amodal"].sample(
            warm, warm, [torch.Generator().manual_seed(0)], dataclasses.replace(opts, num_inference_steps=1)
        )
        models["depth"].predict(frames[:2], size, legacy_bgr=True)
        times = {}
        for s in plans:
            r = time_schedule(s, frames, labels, models, opts, size, section.batch_windows)
            times[s.name] = r["total_s"]
            print(
                f"| {s.name} | {r['depth_s']:.1f} | {r['amodal_s']:.1f} | {r['completion_s']:.1f} | {r['total_s']:.1f} |"
            )
        print(f"\nwall time, original / ours: {times['original (all)'] / times['ours (candidates)']:.1f}x")
    headline(
        "completion_schedule",
        {
            "UNet frame-evals ours": ours,
            "UNet frame-evals original": orig,
            "UNet frame-evals original / ours": orig / ours,
            f"wall s ours ({args.steps} steps)": times["ours (candidates)"],
            f"wall s original ({args.steps} steps)": times["original (all)"],
            "wall time original / ours": times["original (all)"] / times["ours (candidates)"],
        },
    )


if __name__ == "__main__":
    main()
