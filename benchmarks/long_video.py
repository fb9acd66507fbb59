"""Long videos: peak RSS of a whole ``body4d run`` against the frame count, and disk use per frame.

Usage: .venv/bin/python benchmarks/long_video.py [--frames 300 3000] [--people 1]
[--set KEY=VALUE ...] [--disk-frames 100]

For each frame count of ``--frames`` it writes a 1280x720 clip (frames of the real street clip
vtest.avi scaled to 720p and looped, so that images and videos compress like footage, not like
flat colour) with a masks folder of walking person-shaped silhouettes, then runs
``python -m body4d run --masks`` on the tiny checkpoints (CPU; their meshes have the real MHR's
18,439 vertices) in a fresh process with the ``--set`` overrides, and reads that process's peak
RSS (``ru_maxrss`` from ``os.wait4``; the OBJ export workers are processes of their own, not in
it) and, sampled every 0.5 s, its peak per stage. Then one run of ``--disk-frames`` frames with
every optional output on (``outputs.frame_images``, ``outputs.mask_images``, ``render.frames``)
gives the bytes per frame of every artefact kind of `body4d.disk_use` (apparent size and the
blocks the files take on disk) from its run folder; `body4d.disk_use`'s constants come from it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report import headline, skip  # noqa: E402

from body4d.disk_use import artefact_kind  # noqa: E402
from body4d.masks import encode_palette_png  # noqa: E402
from body4d.testing.tiny_checkpoints import write_all  # noqa: E402
from body4d.video import encode_video, open_video  # noqa: E402

VTEST = ROOT.parent / "shared" / "data" / "vtest.avi"
H, W = 720, 1280
FPS = Fraction(30)
# Person silhouette (px at 720p): head radius, torso and legs size, walking speed and bob.
HEAD_R, BODY_W, BODY_H = 28, 110, 380
SPEED_PX, BOB_PX = 3, 6
# How often the child's resident set is sampled (per stage figures), s.
POLL_S = 0.5
# The disk run writes every optional output, so that each kind is measured.
ALL_OUTPUTS = ["outputs.frame_images=true", "outputs.mask_images=true", "render.frames=true"]
STAGE_LINE = re.compile(r"body4d\.driver: (\w+) +\d+%")


@dataclass(frozen=True)
class Child:
    """One ``body4d run``: peak RSS (MB, ``ru_maxrss``), wall time (s), sampled peak RSS per stage (MB)."""

    peak_mb: float
    seconds: float
    stages: dict[str, float]


def footage(n: int) -> Iterator[np.ndarray]:
    """``n`` frames of vtest.avi scaled to 1280x720, looped forwards then backwards (no jump)."""
    with open_video(VTEST) as video:
        frames = len(video)
        period = 2 * frames - 2
        for i in range(n):
            j = i % period
            k = j if j < frames else period - j
            yield np.asarray(Image.fromarray(video.frame(k)).resize((W, H), Image.BILINEAR))


def silhouettes(t: int, people: int) -> np.ndarray:
    """The label map of frame ``t``: ``people`` walkers (ids 1..people) crossing the frame."""
    labels = np.zeros((H, W), np.uint8)
    yy, xx = np.mgrid[0:H, 0:W]
    span = W - BODY_W - 40
    for k in range(people):
        x = 20 + (k * 260 + SPEED_PX * t) % (2 * span)
        x = x if x < span else 2 * span - x
        y = 200 + int(BOB_PX * np.sin(t / 4 + k))
        body = (xx >= x) & (xx < x + BODY_W) & (yy >= y + 2 * HEAD_R) & (yy < y + 2 * HEAD_R + BODY_H)
        head = (xx - x - BODY_W // 2) ** 2 + (yy - y - HEAD_R) ** 2 <= HEAD_R**2
        labels[body | head] = k + 1
    return labels


def make_input(folder: Path, n: int, people: int) -> tuple[Path, Path]:
    """The clip and its masks folder for ``n`` frames."""
    masks = folder / "masks"
    masks.mkdir(parents=True)
    for t in range(n):
        (masks / f"{t:06d}.png").write_bytes(encode_palette_png(silhouettes(t, people)))
    return encode_video(footage(n), folder / "clip.mp4", FPS), masks


def run_child(clip: Path, masks: Path, out: Path, ckpt: Path, sets: list[str]) -> Child:
    """``body4d run`` in a fresh process: its peak RSS, wall time and peak RSS per stage."""
    overrides = [f"paths.ckpt_root={ckpt}", "runtime.device=cpu", "runtime.dtype=fp32", "video.max_frames=0"]
    command = [sys.executable, "-m", "body4d", "run", "--input_video", str(clip), "--masks", str(masks)]
    command += ["--output_dir", str(out)]
    for item in overrides + sets:
        command += ["--set", item]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    log = out.parent / f"{out.name}.log"
    stages: dict[str, float] = {}
    start = time.perf_counter()
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink
        )
        while True:  # wait4: this child's own rusage (Popen has not reaped it)
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            stage, rss = _current_stage(log), _rss_mb(proc.pid)
            if stage is not None and rss is not None:
                stages[stage] = max(stages.get(stage, 0.0), rss)
            time.sleep(POLL_S)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(f"body4d run failed ({proc.returncode}): {log.read_text()[-2000:]}")
    return Child(usage.ru_maxrss / 1024, seconds, stages)


def _current_stage(log: Path) -> str | None:
    """The stage the run's log last reported progress of (``body4d.driver: <stage> <n>%``)."""
    found = STAGE_LINE.findall(log.read_text(errors="replace")[-4000:])
    return found[-1] if found else None


def _rss_mb(pid: int) -> float | None:
    """The resident set of process ``pid`` now (``VmRSS``), MB; None once it has exited."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    line = next((row for row in status.splitlines() if row.startswith("VmRSS:")), None)
    return int(line.split()[1]) / 1024 if line else None


def disk_per_frame(run: Path, n: int) -> dict[str, tuple[float, float]]:
    """Per artefact kind: (apparent bytes per frame, bytes of disk blocks per frame)."""
    sizes: dict[str, list[int]] = {}
    for path in run.rglob("*"):
        if path.is_file():
            kind = artefact_kind(path.relative_to(run).as_posix(), run.name)
            st = path.stat()
            size = sizes.setdefault(kind, [0, 0])
            size[0] += st.st_size
            size[1] += st.st_blocks * 512
    return {kind: (a / n, b / n) for kind, (a, b) in sorted(sizes.items())}


def measure(
    tmp: Path, ckpt: Path, n: int, people: int, sets: list[str]
) -> tuple[Child, dict[str, tuple[float, float]]]:
    """One whole run of ``n`` frames: the child's figures and the disk use per frame of its run folder."""
    clip, masks = make_input(tmp / f"in{n}", n, people)
    out = tmp / f"out{n}"
    child = run_child(clip, masks, out, ckpt, sets)
    (run,) = [p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")]
    disk = disk_per_frame(run, n)
    print(
        f"\n{n} frames, --set {' '.join(sets) or '(none)'}: peak RSS {child.peak_mb:.0f} MB, "
        f"{child.seconds:.0f} s ({child.seconds / n * 1000:.0f} ms/frame)"
    )
    print("sampled peak RSS per stage (MB): " + ", ".join(f"{k} {v:.0f}" for k, v in child.stages.items()))
    print("| artefact kind | bytes/frame | disk blocks bytes/frame |\n|---|---|---|")
    for kind, (apparent, blocks) in disk.items():
        print(f"| {kind} | {apparent:,.0f} | {blocks:,.0f} |")
    print(f"| total | {sum(a for a, _ in disk.values()):,.0f} | {sum(b for _, b in disk.values()):,.0f} |")
    bundle = sorted((run / "people").rglob("*.*")) + sorted(run.glob("*.glb"))
    print(
        "bundle files, disk bytes/frame: "
        + ", ".join(f"{p.name} {p.stat().st_blocks * 512 / n:,.0f}" for p in bundle)
    )
    shutil.rmtree(tmp / f"in{n}")  # the next count's inputs and outputs take their place
    shutil.rmtree(out)
    return child, disk


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, nargs="+", default=[300, 3000], help="frame counts of the RSS runs")
    ap.add_argument("--people", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config of the RSS runs")
    ap.add_argument(
        "--disk-frames", type=int, default=100, help="frames of the disk run, every output on (0: none)"
    )
    args = ap.parse_args()
    if not VTEST.is_file():
        skip("long_video", f"{VTEST} is missing (the shared/ folder beside the repository)")
    with tempfile.TemporaryDirectory(prefix="body4d_long_") as tmp:
        tmp = Path(tmp)
        ckpt = write_all(tmp / "ckpt")
        rss = {n: measure(tmp, ckpt, n, args.people, args.set)[0].peak_mb for n in args.frames}
        disk = measure(tmp, ckpt, args.disk_frames, args.people, ALL_OUTPUTS)[1] if args.disk_frames else {}
    first, last = args.frames[0], args.frames[-1]
    ratio = rss[last] / rss[first]
    print(f"\npeak RSS {last} / {first} frames: {ratio:.3f}")
    figures = {f"peak RSS {n} frames MB": mb for n, mb in rss.items()}
    figures[f"RSS ratio {last}/{first}"] = ratio
    figures |= {f"{kind} disk B/frame": blocks for kind, (_, blocks) in disk.items()}
    headline("long_video", figures, f"1280x720, {args.people} person, tiny models, CPU")


if __name__ == "__main__":
    main()
