"""Whole-recipe throughput with a GPU stand-in: how much of the time would the GPU be busy?

Usage: .venv/bin/python benchmarks/throughput.py [--frames 300] [--people 5] [--width 1280]
       [--height 720] [--body-ms 20] [--sam3-ms 20] [--mhr-ms 1] [--raster-ms 2] [--depths 0 4]

A synthetic clip (people walking across a textured background) is reconstructed from clicks by
`body4d.driver.reconstruct` with the tiny checkpoints, the network calls replaced by the
sleeping stand-ins of `benchmarks/standin.py` (everything else runs as in production), once per
``runtime.queue_depth`` in ``--depths`` (0 = every step one after another: the "before"), each
in a fresh run folder of the same process. Reported per run:

- per stage: wall s, stand-in (GPU) s, GPU busy fraction = stand-in s / wall s;
- recover busy fraction, and end to end (masks through bundle, rendering included);
- main-thread CPU ms per frame (``time.thread_time`` of the thread calling the driver: the
  non-network work the driver's thread does itself; the stand-in sleeps cost none).

Occlusion completion is off (its networks are not stood in); the camera uses the default
intrinsics (MoGe runs on 5 frames once per video).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report import headline  # noqa: E402
from standin import StandIn  # noqa: E402

from body4d.config import load_config  # noqa: E402
from body4d.driver import load_models, reconstruct  # noqa: E402
from body4d.run_dir import RunDir  # noqa: E402
from body4d.testing.tiny_checkpoints import write_all  # noqa: E402
from body4d.types import Click, Prompts  # noqa: E402
from body4d.video import VideoWriter, open_video  # noqa: E402

END_TO_END = ("masks", "camera", "recover", "complete", "refine", "smooth", "export", "render", "bundle")


class Scene:
    """People (upright boxes) walking across a fixed textured background, frame by frame."""

    def __init__(self, n_people: int, width: int, height: int) -> None:
        self.n, self.width, self.height = n_people, width, height
        rng = np.random.default_rng(0)
        self.background = rng.integers(40, 200, (height, width, 3), dtype=np.uint8)
        self.box_w, self.box_h = width // (2 * n_people + 1), int(height * 0.7)

    def box(self, obj_id: int, frame: int) -> tuple[int, int, int, int]:
        k = obj_id - 1
        x = (self.box_w * (2 * k + 1) + 2 * frame * (1 if k % 2 else -1)) % (self.width - self.box_w)
        y = self.height // 6 + (k % 3) * 10
        return x, y, x + self.box_w, y + self.box_h

    def masks(self, frame: int) -> dict[int, np.ndarray]:
        out = {}
        for obj_id in range(1, self.n + 1):
            x1, y1, x2, y2 = self.box(obj_id, frame)
            m = np.zeros((self.height, self.width), bool)
            m[y1:y2, x1:x2] = True
            out[obj_id] = m
        return out

    def frame(self, frame: int) -> np.ndarray:
        image = self.background.copy()
        for obj_id in range(1, self.n + 1):
            x1, y1, x2, y2 = self.box(obj_id, frame)
            image[y1:y2, x1:x2] = (60 * obj_id % 255, 200, 255 - 40 * obj_id % 255)
        return image

    def prompts(self) -> Prompts:
        clicks = {}
        for obj_id in range(1, self.n + 1):
            x1, y1, x2, y2 = self.box(obj_id, 0)
            clicks[obj_id] = (Click(0, (x1 + x2) / 2, (y1 + y2) / 2, True),)
        return Prompts(clicks)


def run_once(
    video_path: Path, scene: Scene, cfg_overrides: list[str], depth: int, args: argparse.Namespace, out: Path
) -> dict:
    cfg = load_config(overrides=[*cfg_overrides, f"runtime.queue_depth={depth}", f"runtime.output_dir={out}"])
    models = load_models(cfg, detector=False, camera=False, completion=False)
    stand_in = StandIn(
        scene.masks,
        sam3_s=args.sam3_ms / 1000,
        body_s=args.body_ms / 1000,
        mhr_s=args.mhr_ms / 1000,
        raster_s=args.raster_ms / 1000,
    )
    run = RunDir.create(out, cfg, input_path=video_path)
    with open_video(video_path) as video, stand_in.install():
        cpu0, wall0 = time.thread_time(), time.perf_counter()
        reconstruct(video, run, cfg, models, prompts=scene.prompts(), progress=stand_in.progress)
        cpu, wall = time.thread_time() - cpu0, time.perf_counter() - wall0
    stages = json.loads((run.root / "manifest.json").read_text())["stages"]
    rows = {}
    for name in END_TO_END:
        seconds = float(stages[name]["seconds"])
        gpu = stand_in.seconds.get(name, 0.0)
        rows[name] = {"wall": seconds, "gpu": gpu, "busy": gpu / seconds if seconds else 0.0}
    total_wall = sum(r["wall"] for r in rows.values())
    total_gpu = sum(r["gpu"] for r in rows.values())
    return {
        "depth": depth,
        "stages": rows,
        "wall": total_wall,
        "driver_wall": wall,
        "gpu": total_gpu,
        "busy": total_gpu / total_wall,
        "main_cpu_ms_per_frame": 1000 * cpu / args.frames,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--people", type=int, default=5)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--body-ms", type=float, default=20.0, help="SAM-3D-Body, per person-frame")
    ap.add_argument("--sam3-ms", type=float, default=20.0, help="SAM-3 tracker, per object-frame")
    ap.add_argument("--mhr-ms", type=float, default=1.0, help="MHR on parameters, per body")
    ap.add_argument("--raster-ms", type=float, default=2.0, help="rasteriser, per person drawn")
    ap.add_argument("--depths", type=int, nargs="+", default=[0, 4], help="runtime.queue_depth values")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        scene = Scene(args.people, args.width, args.height)
        video_path = tmp_path / "clip.mp4"
        with VideoWriter(video_path, Fraction(30)) as writer:
            for i in range(args.frames):
                writer.write(scene.frame(i))
        ckpt = write_all(tmp_path / "ckpt")
        overrides = [
            f"paths.ckpt_root={ckpt}",
            "runtime.device=cpu",
            "runtime.dtype=fp32",
            "completion.enable=false",
            f"video.max_frames={args.frames}",
        ]
        results = [run_once(video_path, scene, overrides, d, args, tmp_path / f"out{d}") for d in args.depths]

    print(
        f"{args.frames} frames {args.width}x{args.height}, {args.people} people; stand-in ms: "
        f"SAM-3D-Body {args.body_ms}/person-frame, SAM-3 {args.sam3_ms}/object-frame, "
        f"MHR {args.mhr_ms}/body, raster {args.raster_ms}/person drawn"
    )
    header = (
        "| stage | " + " | ".join(f"queue_depth {r['depth']}: wall s / GPU s / busy" for r in results) + " |"
    )
    print(header)
    print("|---" * (len(results) + 1) + "|")
    for name in END_TO_END:
        cells = [
            f"{r['stages'][name]['wall']:.1f} / {r['stages'][name]['gpu']:.1f} / {r['stages'][name]['busy']:.2f}"
            for r in results
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")
    cells = [f"{r['wall']:.1f} / {r['gpu']:.1f} / {r['busy']:.2f}" for r in results]
    print("| **end to end** | " + " | ".join(cells) + " |")
    print(
        "| main-thread CPU ms/frame | "
        + " | ".join(f"{r['main_cpu_ms_per_frame']:.1f}" for r in results)
        + " |"
    )

    figures: dict[str, float] = {}
    for r in results:
        d = r["depth"]
        figures[f"recover busy (depth {d})"] = r["stages"]["recover"]["busy"]
        figures[f"end-to-end busy (depth {d})"] = r["busy"]
        figures[f"main-thread ms/frame (depth {d})"] = r["main_cpu_ms_per_frame"]
    headline("throughput", figures)


if __name__ == "__main__":
    main()
