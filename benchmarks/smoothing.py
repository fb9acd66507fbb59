"""Benchmark of `body4d.stages.smooth.smooth_track` on synthetic tracks (CPU, numpy only).

Run: ``.venv/bin/python benchmarks/smoothing.py`` (``--frames``/``--people`` change the timing case).

Table 1: for each motion type x noise level, the acceleration error (mean |a - a_true|, the "Accel"
metric of video HMR papers) of all 24 rotations (rad/s^2) and of ``cam_t`` (m/s^2) before and after
smoothing (reduction factor), and the mean rotation / translation error against the noise-free
ground truth before and after.
Table 2: CPU milliseconds per frame for ``--people`` identities of ``--frames`` frames each
(MHR-sized parameters: 23 three-DoF joints, 58 one-DoF angles, 108 hand, 6 body translations,
45 shape, 28 scale, 72 expr), with and without a 10 % share of 10-frame gaps to fill.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
from report import headline

from body4d.config import SmoothingConfig
from body4d.stages.smooth import PoseSequence, axis_angle_to_matrix, matrix_to_axis_angle, smooth_track

FPS = 30.0
N_ROT = 24  # global rotation + 23 three-DoF joints
N_ANGLES = 58
SEED = 0

# Motion types: rotation vectors [T, K, 3] (rad) and root translation [T, 3] (m) over time t [T] (s).
Motion = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def _phase() -> np.ndarray:
    return np.arange(N_ROT)[None, :, None] * 0.4 + np.arange(3)[None, None, :] * 1.3


def _static(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rv = np.broadcast_to(0.3 * np.sin(_phase()), (t.size, N_ROT, 3)).copy()
    return rv, np.tile([0.0, 0.0, 4.0], (t.size, 1))


def _slow(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rv = 0.3 * np.sin(2 * np.pi * 0.3 * t[:, None, None] + _phase())
    cam = np.stack([0.5 * np.sin(0.5 * t), 0.02 * t, 4.0 + 0.3 * np.cos(0.4 * t)], axis=1)
    return rv, cam


def _walk(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rv = 0.5 * np.sin(2 * np.pi * 1.0 * t[:, None, None] + _phase())  # ~1 Hz limb swing
    cam = np.stack([1.2 * t - 2.0, 0.03 * np.sin(2 * np.pi * 2.0 * t), 5.0 + 0 * t], axis=1)
    return rv, cam


def _fast(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rv = 0.6 * np.sin(2 * np.pi * 2.0 * t[:, None, None] + _phase())  # 2 Hz, dancing/sport
    cam = np.stack(
        [0.6 * np.sin(2 * np.pi * 0.7 * t), 0.1 * np.sin(2 * np.pi * 1.5 * t), 4.0 + 0 * t], axis=1
    )
    return rv, cam


MOTIONS: dict[str, Motion] = {"static": _static, "slow 0.3 Hz": _slow, "walk 1 Hz": _walk, "fast 2 Hz": _fast}
# (rotation noise std per axis in rad, translation noise std in m); z noise is 3x (depth is worst).
NOISES: dict[str, tuple[float, float]] = {"low": (0.01, 0.005), "medium": (0.03, 0.015), "high": (0.06, 0.03)}


def _ang_vel(rot: np.ndarray) -> np.ndarray:
    return matrix_to_axis_angle(np.swapaxes(rot[:-1], -1, -2) @ rot[1:]) * FPS


def rot_accel_err(rot: np.ndarray, truth: np.ndarray) -> float:
    """Mean |angular acceleration - true angular acceleration| (rad/s^2) of ``[T, K, 3, 3]`` stacks."""
    acc = np.diff(_ang_vel(rot), axis=0) * FPS
    acc_true = np.diff(_ang_vel(truth), axis=0) * FPS
    return float(np.linalg.norm(acc - acc_true, axis=-1).mean())


def lin_accel_err(x: np.ndarray, truth: np.ndarray) -> float:
    """Mean |acceleration - true acceleration| (m/s^2) of ``[T, 3]`` tracks."""
    return float(np.linalg.norm(np.diff(x - truth, 2, axis=0), axis=-1).mean() * FPS**2)


def rot_err(a: np.ndarray, b: np.ndarray) -> float:
    """Mean geodesic angle (degrees) between ``[T, K, 3, 3]`` stacks."""
    return float(np.degrees(np.linalg.norm(matrix_to_axis_angle(np.swapaxes(a, -1, -2) @ b), axis=-1).mean()))


def _sequence(
    rot: np.ndarray, cam: np.ndarray, rng: np.random.Generator, valid: np.ndarray | None = None
) -> PoseSequence:
    n = rot.shape[0]
    return PoseSequence.create(
        frames=np.arange(n),
        valid=np.ones(n, bool) if valid is None else valid,
        global_rot=rot[:, 0],
        body_pose=rot[:, 1:],
        cam_t=cam,
        joint_angles=rng.uniform(-1, 1, (n, N_ANGLES)),
        hand=rng.normal(size=(n, 108)),
        body_linear=rng.normal(size=(n, 6)),
        shape=rng.normal(size=(n, 45)),
        scale=rng.normal(size=(n, 28)),
        expr=np.zeros((n, 72)),
    )


# The cases whose figures head the README's reading: jitter cut on slow motion, over-smoothing on fast.
HEADLINE_NOISE = "medium"
HEADLINE_MOTIONS = ("slow 0.3 Hz", "fast 2 Hz")


def quality_table(cfg: SmoothingConfig, figures: dict[str, float], n_frames: int = 300) -> list[str]:
    """Markdown rows of the jitter / error table; the headline cases' figures go into ``figures``."""
    rng = np.random.default_rng(SEED)
    t = np.arange(n_frames) / FPS
    rows = [
        "| motion | noise (rad, m) | rot accel err raw → smooth (rad/s²) | ×less "
        "| cam_t accel err raw → smooth (m/s²) "
        "| ×less | rot err raw → smooth (°) | cam_t err raw → smooth (mm) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mname, motion in MOTIONS.items():
        rv, cam = motion(t)
        truth = axis_angle_to_matrix(rv)
        for nname, (rn, tn) in NOISES.items():
            noisy_rot = truth @ axis_angle_to_matrix(rng.normal(0, rn, truth.shape[:2] + (3,)))
            noisy_cam = cam + rng.normal(0, tn, cam.shape) * np.array([1.0, 1.0, 3.0])
            out = smooth_track(_sequence(noisy_rot, noisy_cam, rng), cfg, FPS)
            rot_out = np.concatenate([out.global_rot[:, None], out.body_pose], axis=1)
            ra, rb = rot_accel_err(noisy_rot, truth), rot_accel_err(rot_out, truth)
            ca, cb = lin_accel_err(noisy_cam, cam), lin_accel_err(out.cam_t, cam)
            ea, eb = rot_err(noisy_rot, truth), rot_err(rot_out, truth)
            ta = np.linalg.norm(noisy_cam - cam, axis=1).mean() * 1e3
            tb = np.linalg.norm(out.cam_t - cam, axis=1).mean() * 1e3
            rows.append(
                f"| {mname} | {nname} ({rn}, {tn}) | {ra:.1f} → {rb:.1f} | {ra / rb:.1f} | {ca:.2f} → {cb:.2f} "
                f"| {ca / cb:.1f} | {ea:.2f} → {eb:.2f} | {ta:.1f} → {tb:.1f} |"
            )
            if nname == HEADLINE_NOISE and mname in HEADLINE_MOTIONS:
                figures[f"{mname} {nname} rot accel ×less"] = ra / rb
                figures[f"{mname} {nname} rot err raw °"] = ea
                figures[f"{mname} {nname} rot err smooth °"] = eb
    return rows


def timing_table(
    cfg: SmoothingConfig, n_frames: int, n_people: int, figures: dict[str, float], repeats: int = 3
) -> list[str]:
    """Markdown rows of CPU ms per frame (best of ``repeats``) for ``n_people`` tracks; ms per
    person-frame of each case go into ``figures``."""
    rng = np.random.default_rng(SEED + 1)
    t = np.arange(n_frames) / FPS
    rv, cam = _walk(t)
    rot = axis_angle_to_matrix(rv + rng.normal(0, 0.03, rv.shape))
    gaps = np.ones(n_frames, bool)
    for start in range(50, n_frames - 20, 100):
        gaps[start : start + 10] = False  # 10 % of the frames in 10-frame gaps
    rows = ["| case | total ms | ms per frame (all people) | ms per person-frame |", "|---|---|---|---|"]
    for label, valid in (("all visible", None), ("10 % in 10-frame gaps", gaps)):
        seqs = [_sequence(rot, cam, rng, valid) for _ in range(n_people)]
        best = np.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            for s in seqs:
                smooth_track(s, cfg, FPS)
            best = min(best, time.perf_counter() - t0)
        ms = best * 1e3
        rows.append(
            f"| {n_people} people × {n_frames} frames, {label} | {ms:.0f} | {ms / n_frames:.3f} "
            f"| {ms / (n_frames * n_people):.4f} |"
        )
        figures[f"{label} ms/person-frame"] = ms / (n_frames * n_people)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--people", type=int, default=5)
    parser.add_argument("--min-cutoff", type=float, default=SmoothingConfig.min_cutoff)
    parser.add_argument("--beta", type=float, default=SmoothingConfig.beta)
    args = parser.parse_args()
    cfg = SmoothingConfig(min_cutoff=args.min_cutoff, beta=args.beta)
    print(f"SmoothingConfig: {cfg}\n")
    figures: dict[str, float] = {}
    print("\n".join(quality_table(cfg, figures)))
    print()
    print("\n".join(timing_table(cfg, args.frames, args.people, figures)))
    headline("smoothing", figures)


if __name__ == "__main__":
    main()
