"""Occlusion prior (`body4d.stages.occlusion`) on synthetic clips with ground-truth amodal masks.

Run: ``.venv/bin/python benchmarks/occlusion_detection.py`` (``--seeds`` clips per scenario,
``--frames`` per clip). Every number is a pure function of the seeds.

Suite: every scenario of `body4d.testing.synthetic_occlusion.SCENARIOS` rendered with seeds
``0 .. seeds-1`` (320x240). Truth: a person-frame is occluded when IoU(visible, amodal) < 0.7 and
the person is visible. The ground-truth amodal masks stand in for the diffusion's output.

Per scenario (and total), with the default ``CompletionConfig()``:

- candidates: frames `candidate_frames` flags; windows: person-frames inside
  ``windows(flags, window_pad, max_occ_len)``, i.e. the frames the amodal diffusion would run on;
- recall: share of truly occluded person-frames inside a window (target >= 0.95);
- cost: window frames / truly occluded frames (target <= 2);
- final precision / recall: `amodal_verdict` on the ground-truth amodal mask of every window frame
  (frames outside windows count as not occluded), against the truth.

Table 1 uses the first-pass 3D keypoints (the pipeline's case: the body stage runs before this one);
table 2 compares the totals with masks only and with the optional truncation rule. Timing: the
prior and the verdict per frame of the suite, and `mask_stats` alone at 1280x720.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, fields

import numpy as np
from report import headline

from body4d.config import CompletionConfig
from body4d.stages.occlusion import amodal_verdict, candidate_frames, keypoint_jumps, mask_stats, windows
from body4d.testing.synthetic_occlusion import SCENARIOS, Clip, make_clip, occluded_truth

RECALL_TARGET = 0.95
COST_TARGET = 2.0


@dataclass
class Counts:
    """Person-frame counts of one scenario (or the total)."""

    clips: int = 0
    people: int = 0
    frames: int = 0
    occluded: int = 0
    candidates: int = 0
    window: int = 0
    covered: int = 0
    final: int = 0
    final_hits: int = 0

    def add(self, other: Counts) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def row(self, name: str) -> str:
        """A markdown row; a ratio with nothing to divide by is shown as "-"."""
        recall = _ratio(self.covered, self.occluded, "{:.3f}")
        cost = _ratio(self.window, self.occluded, "{:.2f}")
        precision = _ratio(self.final_hits, self.final, "{:.3f}")
        final_recall = _ratio(self.final_hits, self.occluded, "{:.3f}")
        return (
            f"| {name} | {self.clips} | {self.people} | {self.frames} | {self.occluded} | {self.candidates} "
            f"| {self.window} | {recall} | {cost} | {precision} | {final_recall} |"
        )


def _ratio(num: int, den: int, fmt: str) -> str:
    return fmt.format(num / den) if den else "-"


HEADER = [
    "| scenario | clips | people | person-frames | occluded | candidates | window frames | recall "
    "| cost (window / occluded) | final precision | final recall |",
    "|---|---|---|---|---|---|---|---|---|---|---|",
]


def evaluate(clip: Clip, cfg: CompletionConfig, keypoints: bool, truncation: bool) -> Counts:
    """Run the prior and the verdict on one clip and count person-frames against the truth."""
    t, h, w = clip.labels.shape
    stats = mask_stats(iter(clip.labels), clip.obj_ids, t, cfg.contact_radius)
    truth = occluded_truth(clip)
    counts = Counts(clips=1)
    for oid in clip.obj_ids:
        jumps = None
        if keypoints:
            kp = clip.keypoints_3d[oid]
            jumps = keypoint_jumps(np.arange(t), np.isfinite(kp).all(axis=(1, 2)), kp, t)
        flags = candidate_frames(stats[oid], jumps, w, h, cfg, truncation=truncation)
        final = np.zeros(t, bool)
        in_window = np.zeros(t, bool)
        for start, stop in windows(flags, cfg.window_pad, cfg.max_occ_len):
            in_window[start:stop] = True
            for f in range(start, stop):
                final[f] = amodal_verdict(clip.labels[f] == oid, clip.amodal[oid][f], cfg)[0]
        present = stats[oid].area > 0
        counts.people += 1
        counts.frames += int(present.sum())
        counts.occluded += int(truth[oid].sum())
        counts.candidates += int(flags.sum())
        counts.window += int(in_window.sum())
        counts.covered += int((in_window & truth[oid]).sum())
        counts.final += int(final.sum())
        counts.final_hits += int((final & truth[oid]).sum())
    return counts


def run(clips: list[Clip], cfg: CompletionConfig, keypoints: bool, truncation: bool) -> dict[str, Counts]:
    """Counts per scenario and ``"total"``."""
    out = {name: Counts() for name in SCENARIOS}
    for clip in clips:
        out[clip.scenario].add(evaluate(clip, cfg, keypoints, truncation))
    total = Counts()
    for c in out.values():
        total.add(c)
    out["total"] = total
    return out


def _stats_ms_720p(cfg: CompletionConfig, n_frames: int = 40) -> float:
    """Milliseconds per frame of `mask_stats` streaming a 1280x720 three-person clip."""
    clip = make_clip("pass behind", 0, n_frames=n_frames, height=720, width=1280)
    start = time.perf_counter()
    mask_stats(iter(clip.labels), clip.obj_ids, n_frames, cfg.contact_radius)
    return (time.perf_counter() - start) * 1000 / n_frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="clips per scenario (seeds 0..N-1)")
    parser.add_argument("--frames", type=int, default=80, help="frames per clip")
    args = parser.parse_args()
    cfg = CompletionConfig()
    clips = [make_clip(name, seed, n_frames=args.frames) for name in SCENARIOS for seed in range(args.seeds)]
    start = time.perf_counter()
    main_run = run(clips, cfg, keypoints=True, truncation=False)
    per_frame = (time.perf_counter() - start) * 1000 / sum(c.n_frames for c in clips)
    print(f"{len(clips)} clips x {args.frames} frames, 320x240, default CompletionConfig\n")
    print("Table 1: masks + first-pass 3D keypoints (the pipeline's case)\n")
    print("\n".join(HEADER + [main_run[name].row(name) for name in main_run]))
    print(f"\n(prior + verdict: {per_frame:.2f} ms per frame, all people)")
    print(f"(mask_stats alone at 1280x720, 3 people: {_stats_ms_720p(cfg):.1f} ms per frame)\n")
    print("Table 2: totals by signal set\n")
    rows = [
        ("masks + keypoints", main_run["total"]),
        ("masks only", run(clips, cfg, keypoints=False, truncation=False)["total"]),
        ("masks + keypoints + truncation", run(clips, cfg, keypoints=True, truncation=True)["total"]),
    ]
    print("\n".join([HEADER[0].replace("scenario", "signals"), HEADER[1]] + [c.row(n) for n, c in rows]))
    total = main_run["total"]
    met = total.covered >= RECALL_TARGET * total.occluded and total.window <= COST_TARGET * total.occluded
    print(
        f"\ntargets (recall >= {RECALL_TARGET}, cost <= {COST_TARGET}) on table 1: {'met' if met else 'NOT met'}"
    )
    figures = {}
    for name, c in rows[:2]:
        if c.occluded:  # a suite without occluded frames has no recall or cost
            figures[f"{name} recall"] = c.covered / c.occluded
            figures[f"{name} cost"] = c.window / c.occluded
    if total.final:
        figures["final precision"] = total.final_hits / total.final
    figures["prior + verdict ms/frame"] = per_frame
    headline("occlusion_detection", figures, note="" if met else "targets NOT met")


if __name__ == "__main__":
    main()
