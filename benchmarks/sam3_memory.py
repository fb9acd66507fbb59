"""SAM-3 tracking-session memory per frame per object as the video grows (trimmed vs untrimmed).

Runs the real adapter (`models.sam3.TrackerSession`) on tiny random checkpoints written by
`body4d.testing.tiny_sam3` at several model input sizes, propagates N objects through T frames
of a synthetic video and reads the bytes of every tensor the session holds (`memory()`):
per-frame outputs of all objects, preprocessed frames and cached ViT features.

Every stored per-frame tensor is spatial at a fixed fraction of the input side (masks at 1/4 of
the side, memory features at 1/14), so bytes per object-frame scale with ``side^2``; the last
column extrapolates the measurement to the real 1008 px input.

    .venv/bin/python benchmarks/sam3_memory.py [--sizes 112 224] [--frames 16 32 64 128] [--objects 3]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from report import headline

from body4d.config import load_config
from body4d.testing.tiny_sam3 import write_tiny_sam3
from body4d.types import Click
from models.frames import ArrayFrames
from models.sam3 import Sam3Models

REAL_SIDE = 1008  # input side of facebook/sam3
FRAME_HEIGHT, FRAME_WIDTH = 96, 128  # synthetic video size (masks are stored at model resolution)
MB = 1e6


def synthetic(n: int, n_objects: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Moving boxes on grey: frames ``uint8[n, H, W, 3]`` and one click ``(x, y)`` per box on frame 0."""
    frames = np.full((n, FRAME_HEIGHT, FRAME_WIDTH, 3), 128, np.uint8)
    clicks = []
    for k in range(n_objects):
        x0, y0 = 8 + 36 * k, 10 + 20 * (k % 2)
        clicks.append((x0 + 10, y0 + 15))
        for t in range(n):
            dx = (t % 20) - 10
            frames[t, y0 : y0 + 30, max(0, x0 + dx) : x0 + dx + 20] = (60 * k + 40, 200 - 50 * k, 90)
    return frames, clicks


def measure(models: Sam3Models, n_frames: int, n_objects: int, keep: int) -> dict[str, float]:
    frames, clicks = synthetic(n_frames, n_objects)
    session = models.open_session(ArrayFrames(frames), replace(models.settings, max_cached_frames=keep))
    for obj_id, (x, y) in enumerate(clicks, start=1):
        session.add_points(obj_id, 0, [Click(0, x, y, True)])
    start = time.perf_counter()
    for _ in session.propagate(0, n_frames):
        pass
    seconds = time.perf_counter() - start
    mem = session.memory()
    return {
        "outputs": mem.outputs,
        "frames": mem.frames,
        "vision": mem.vision_features,
        "stored_frames": mem.n_output_frames,
        "per_obj_frame": mem.outputs / (n_objects * n_frames),
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[112, 224], help="model input sides (x14)")
    parser.add_argument("--frames", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--objects", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    print(f"objects: {args.objects}; synthetic video {FRAME_WIDTH}x{FRAME_HEIGHT}; CPU fp32\n")
    print(
        "| input side | max_cached_frames | frames T | stored frames | outputs MB | bytes / object / frame "
        f"| extrapolated to {REAL_SIDE} px, MB / object / frame | frames MB | ViT cache MB | s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    figures: dict[str, float] = {}
    for side in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            write_tiny_sam3(Path(tmp), image_size=side)
            section = load_config(overrides=[f"paths.ckpt_root={tmp}"], env={}).sam3
            models = Sam3Models.load(section, "cpu", torch.float32, with_detector=False)
            for keep in (0, section.max_cached_frames):
                for n in args.frames:
                    r = measure(models, n, args.objects, keep)
                    scale = (REAL_SIDE / side) ** 2
                    print(
                        f"| {side} | {keep or 'all (0)'} | {n} | {r['stored_frames']} | {r['outputs'] / MB:.2f} "
                        f"| {r['per_obj_frame']:.0f} | {r['per_obj_frame'] * scale / MB:.2f} "
                        f"| {r['frames'] / MB:.2f} | {r['vision'] / MB:.2f} | {r['seconds']:.1f} |"
                    )
                # The last side and the longest video lead the README's reading (later sides overwrite).
                at_real = r["per_obj_frame"] * scale / MB
                if keep:
                    figures[f"trimmed stored frames at T={n}"] = r["stored_frames"]
                    figures[f"trimmed MB/object at {REAL_SIDE} px"] = at_real * n
                else:
                    figures[f"untrimmed MB/object/frame at {REAL_SIDE} px"] = at_real
    headline("sam3_memory", figures)


if __name__ == "__main__":
    main()
