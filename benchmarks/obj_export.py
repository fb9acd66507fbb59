"""OBJ export of MHR-sized meshes: formatted in this process vs in the worker pool (`obj_meshes`).

Run: ``.venv/bin/python benchmarks/obj_export.py [--meshes 200] [--workers 2]``

Each mesh has 18,439 vertices and 36,874 faces (MHR's counts) with a per-vertex colour, as the
export stage writes them; only the formatting to bytes is timed (the stage then writes each file
atomically). The pool pays its start (~1 s, spawned processes) once per stage.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from report import headline

from body4d.export import obj_meshes

V, F = 18439, 36874


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--meshes", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    faces = rng.integers(0, V, size=(F, 3))
    base = rng.normal(size=(V, 3)).astype(np.float32)
    items = [(k, base + 0.01 * k, (200, 80, 40)) for k in range(args.meshes)]
    print("| formatting | meshes | total s | ms per mesh |\n|---|---|---|---|")
    ms_per_mesh = {}
    for label, workers in (("in process", 1), (f"pool of {args.workers}", args.workers)):
        start = time.perf_counter()
        n = sum(1 for _ in obj_meshes(iter(items), faces, workers=workers, expected=len(items)))
        seconds = time.perf_counter() - start
        ms_per_mesh[label] = 1000 * seconds / n
        print(f"| {label} | {n} | {seconds:.2f} | {ms_per_mesh[label]:.1f} |")
    headline("obj_export", {f"{label} ms/mesh": ms for label, ms in ms_per_mesh.items()})


if __name__ == "__main__":
    main()
