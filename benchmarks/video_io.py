"""Video I/O benchmark: decode/encode ms per frame at 1280x720 and peak RSS while streaming vtest.avi.

Usage: .venv/bin/python benchmarks/video_io.py [--frames 120] [--json out.json]

Peak RSS is measured in a fresh child process per run length, so the numbers show whether
memory grows with the number of frames streamed (it must not).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report import headline, skip  # noqa: E402

from body4d.video import encode_video, open_video  # noqa: E402

VTEST = ROOT.parent / "shared" / "data" / "vtest.avi"


def synthetic_frames(n: int, height: int = 720, width: int = 1280) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)
    return [np.roll(base, 8 * i, axis=1) for i in range(n)]


def bench_encode_decode(n: int) -> dict[str, float]:
    frames = synthetic_frames(n)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.mp4"
        t0 = time.perf_counter()
        encode_video(frames, path, Fraction(30))
        enc = (time.perf_counter() - t0) / n * 1000
        video = open_video(path)
        t0 = time.perf_counter()
        count = sum(1 for _ in video)
        dec = (time.perf_counter() - t0) / count * 1000
        t0 = time.perf_counter()
        idx = np.random.default_rng(1).integers(0, n, size=20)
        for i in idx:
            video.frame(int(i))
        rand = (time.perf_counter() - t0) / len(idx) * 1000
        video = open_video(path)
        t0 = time.perf_counter()
        for i in range(n - 1, -1, -1):
            video.frame(i)
        rev = (time.perf_counter() - t0) / n * 1000
    return {
        "encode_ms_per_frame": enc,
        "decode_ms_per_frame": dec,
        "random_access_ms_per_frame": rand,
        "backward_read_ms_per_frame": rev,
    }


def _stream_rss_child(limit: int) -> None:
    video = open_video(VTEST)
    for _ in video.iter_range(0, limit):
        pass
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def bench_rss() -> dict[int, float]:
    out = {}
    for limit in (50, 200, 795):
        res = subprocess.run(
            [sys.executable, __file__, "--rss-child", str(limit)], capture_output=True, text=True, check=True
        )
        out[limit] = float(res.stdout.strip().splitlines()[-1])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--rss-child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        _stream_rss_child(args.rss_child)
        return
    if not VTEST.exists():
        skip("video_io", f"{VTEST} not found (the shared test clip the RSS rows stream)")
    io = bench_encode_decode(args.frames)
    rss = bench_rss()
    print(f"machine: {platform.machine()}, {platform.python_version()}, frames={args.frames} at 1280x720")
    print("| metric | value |\n|---|---|")
    for k, v in io.items():
        print(f"| {k} | {v:.2f} |")
    for limit, mb in rss.items():
        print(f"| peak RSS streaming {limit} frames of vtest.avi (MB) | {mb:.0f} |")
    if args.json:
        args.json.write_text(json.dumps({"io": io, "rss_mb": rss}, indent=2))
    headline(
        "video_io",
        {
            "encode ms/frame": io["encode_ms_per_frame"],
            "decode ms/frame": io["decode_ms_per_frame"],
            "random access ms/frame": io["random_access_ms_per_frame"],
            "backward read ms/frame": io["backward_read_ms_per_frame"],
            **{f"peak RSS {limit} frames MB": mb for limit, mb in rss.items()},
        },
    )


if __name__ == "__main__":
    main()
