"""CPU cost of the non-network work of 4D reconstruction per frame at 1280x720 with 5 people.

Usage: .venv/bin/python benchmarks/reconstruct_cpu.py [--frames 60] [--people 5] [--crop 512]

Measured parts (network excluded):
- items: label map -> per-person mask + box (what `stages.recover` does per frame);
- crops: the port's affine crop + mask + camera-ray preparation at the real 512x512 crop size;
- smoothing: per-identity consistency (`stages.consistency.make_consistent`) over the sequence;
- export: OBJ (18,439 vertices) + camera JSON per person, written atomically through RunDir.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report import headline  # noqa: E402

from body4d import export  # noqa: E402
from body4d.config import SmoothingConfig, load_config  # noqa: E402
from body4d.masks import mask_box  # noqa: E402
from body4d.run_dir import RunDir  # noqa: E402
from body4d.stages.consistency import make_consistent  # noqa: E402
from body4d.types import BodyTrack  # noqa: E402
from models.sam_3d_body.mhr_layout import default_intrinsics  # noqa: E402
from models.sam_3d_body.preprocess import CropSpec, build_crops, crop_box  # noqa: E402

H, W = 720, 1280
NUM_VERTS, NUM_FACES = 18439, 36874


def synthetic_labels(t: int, people: int) -> np.ndarray:
    labels = np.zeros((H, W), np.uint8)
    for k in range(people):
        x0 = 60 + 230 * k + 2 * t
        labels[150:650, x0 : x0 + 140] = k + 1
    return labels


def synthetic_track(obj_id: int, n: int, rng: np.random.Generator) -> BodyTrack:
    t = np.arange(n)
    noisy = lambda shape, s: (rng.normal(0, s, size=(n, *shape))).astype(np.float32)  # noqa: E731
    return BodyTrack(
        obj_id=obj_id,
        frames=t.astype(np.int64),
        valid=np.ones(n, bool),
        filled=np.zeros(n, bool),
        box=np.tile(np.float32([100, 100, 300, 600]), (n, 1)),
        focal=np.full(n, 1400, np.float32),
        cam_t=(np.stack([0.01 * t, 0 * t, 4 + 0 * t], 1) + noisy((3,), 0.02)).astype(np.float32),
        global_rot=(np.stack([0.01 * t, 0.3 + 0 * t, 0 * t], 1) + noisy((3,), 0.03)).astype(np.float32),
        body_pose=noisy((133,), 0.05),
        hand_pose=noisy((108,), 0.1),
        shape=noisy((45,), 0.1),
        scale=noisy((28,), 0.1),
        expression=np.zeros((n, 72), np.float32),
        keypoints_3d=noisy((70, 3), 0.3),
        keypoints_2d=noisy((70, 2), 100.0),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--people", type=int, default=5)
    ap.add_argument("--crop", type=int, default=512)
    args = ap.parse_args()
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, size=(H, W, 3), dtype=np.uint8)
    K = default_intrinsics(H, W)
    n, p = args.frames, args.people
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    specs_per_frame = []
    for t in range(n):
        labels = synthetic_labels(t, p)
        specs = []
        for obj_id in (int(i) for i in np.unique(labels) if i):
            mask = labels == obj_id
            centre, size = crop_box(np.asarray(mask_box(mask)), 1.25)
            specs.append(CropSpec(0, centre, size, K, mask))
        specs_per_frame.append(specs)
    timings["items (masks, boxes)"] = (time.perf_counter() - t0) / n

    t0 = time.perf_counter()
    for specs in specs_per_frame[: max(1, n // 4)]:
        build_crops([frame], specs, args.crop, torch.device("cpu"), mask_value=1)
    timings[f"crops ({args.crop}px, image+mask+rays)"] = (time.perf_counter() - t0) / max(1, n // 4)

    tracks = [synthetic_track(i + 1, n, rng) for i in range(p)]
    t0 = time.perf_counter()
    for tr in tracks:
        make_consistent(tr, SmoothingConfig(), fps=30.0)
    timings["smoothing (whole sequence, per frame)"] = (time.perf_counter() - t0) / n

    faces = (np.arange(NUM_FACES)[:, None] + np.arange(3)[None]) % NUM_VERTS
    verts = rng.normal(size=(NUM_VERTS, 3)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        run = RunDir.create(tmp, load_config())
        writer = export.ObjWriter(faces)
        m = max(1, n // 6)
        t0 = time.perf_counter()
        for t in range(m):
            for k in range(p):
                run.write_bytes(run.mesh_path(k + 1, t), writer.mesh(verts, (200, 80, 20)))
                run.write_json(run.focal_path(k + 1, t), export.camera_json(1400.0, (640, 360), np.zeros(3)))
        timings["export (OBJ + JSON)"] = (time.perf_counter() - t0) / m

    print(f"1280x720, {p} people, {n} frames (ms per frame, all people)")
    print("| part | ms/frame |\n|---|---|")
    for name, sec in timings.items():
        print(f"| {name} | {1000 * sec:.1f} |")
    print(f"| total | {1000 * sum(timings.values()):.1f} |")
    headline(
        "reconstruct_cpu",
        {f"{name} ms/frame": 1000 * sec for name, sec in timings.items()}
        | {"total ms/frame": 1000 * sum(timings.values())},
    )


if __name__ == "__main__":
    main()
