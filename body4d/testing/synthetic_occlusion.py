"""Synthetic multi-person clips with ground-truth amodal masks, for occlusion tests and benchmarks.

People are flat silhouettes (head circle, torso ellipse, two-segment legs and arms, all with
per-person widths) walking on a ground line, drawn with OpenCV. Each person and each static
occluder (a pole) has a depth; nearer things hide farther ones. Per frame:

* ``amodal[id]`` = the person's whole silhouette, clipped to the image;
* visible mask = amodal minus the amodal masks of nearer people and nearer occluders;
* ``labels`` = the visible masks painted as a label map (pixel = object id, 0 = background or
  occluder, which is no target).

A person hidden completely, or entirely outside the image, is absent from ``labels`` on that frame.
Every clip is a pure function of its scenario and seed (`make_clip`). Sizes are in pixels, times in
frames; `Clip.keypoints_3d` is a coarse first-pass body track in metres whose error grows with the
hidden fraction, as a single-frame body estimator's does.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import cv2
import numpy as np

# Ground truth: a visible person-frame is occluded when IoU(visible, amodal) is below this (the
# release's v1 rule; visible is a subset of amodal, so IoU = visible area / amodal area).
TRUTH_IOU = 0.7
# Joints of the keypoint track (the MHR70 count the body stage returns).
N_JOINTS = 70
# Pinhole camera of the keypoint track: focal (px) and depth (m) of the nearest person.
FOCAL = 300.0
NEAREST_Z = 3.0
# Per-frame keypoint noise (m) of a fully visible person, and the extra error (m) at the square of
# the hidden fraction (mild occlusion barely moves a single-frame body estimator; a heavily hidden
# person's limbs are guessed, differently on every frame).
KEYPOINT_NOISE = 0.004
OCCLUSION_ERROR = 0.25
# Body proportions as fractions of the standing height.
_LEG = 0.47
_SHOULDER = 0.8
_HEAD_RADIUS = 0.07
_TORSO_HALF_HEIGHT = 0.18
# Crouching: share of a thigh's bend seen on screen, and how much shorter the torso looks.
_THIGH_ON_SCREEN = 0.3
_LEAN = 0.35


@dataclass(frozen=True)
class Person:
    """One walking silhouette.

    Attributes:
        obj_id: label value (1..255).
        depth: drawing order; smaller is nearer the camera.
        x0: horizontal position (px) of the body axis at frame 0.
        vx: horizontal speed (px/frame).
        ground: image row (px) of the feet.
        height: standing height (px).
        width: torso half-width as a fraction of the height.
        stride: foot offset (fraction of height) at the peak of the gait; small for people
            walking towards the camera.
        gait: gait frequency (cycles/frame).
        phase: gait phase at frame 0 (rad).
        crouch: ``(start, stop, ramp)`` frames: the person crouches from ``start`` (taking
            ``ramp`` frames to go down) and is standing again at ``stop``; None = never.
        depth_m: camera distance (m) of the keypoint track.
    """

    obj_id: int
    depth: int
    x0: float
    vx: float
    ground: float
    height: float
    width: float
    stride: float
    gait: float
    phase: float
    crouch: tuple[int, int, int] | None = None
    depth_m: float = NEAREST_Z


@dataclass(frozen=True)
class Occluder:
    """A static rectangle that is no target (a pole, a pillar): pixel box xyxy and depth."""

    box: tuple[int, int, int, int]
    depth: int


@dataclass(frozen=True)
class Clip:
    """A rendered clip.

    Attributes:
        scenario: name of the scenario (`SCENARIOS`).
        labels: ``uint8[T, H, W]`` visible masks, pixel = object id.
        amodal: object id -> ``bool[T, H, W]`` whole silhouette in the image.
        keypoints_3d: object id -> ``float32[T, 70, 3]`` camera-frame keypoints (m), NaN rows
            where the person is not visible.
        people: the people drawn, nearest last.
        occluders: the static occluders.
    """

    scenario: str
    labels: np.ndarray
    amodal: dict[int, np.ndarray]
    keypoints_3d: dict[int, np.ndarray]
    people: tuple[Person, ...]
    occluders: tuple[Occluder, ...] = ()

    @property
    def obj_ids(self) -> list[int]:
        return sorted(self.amodal)

    @property
    def n_frames(self) -> int:
        return int(self.labels.shape[0])


def occluded_truth(clip: Clip, iou_threshold: float = TRUTH_IOU) -> dict[int, np.ndarray]:
    """Ground-truth occlusion: object id -> ``bool[T]``, IoU(visible, amodal) < threshold, visible."""
    truth = {}
    for oid, amodal in clip.amodal.items():
        visible = (clip.labels == oid).reshape(clip.n_frames, -1).sum(axis=1)
        whole = amodal.reshape(clip.n_frames, -1).sum(axis=1)
        truth[oid] = (visible > 0) & (visible < iou_threshold * np.maximum(whole, 1))
    return truth


def _crouch_amount(p: Person, t: int) -> float:
    """0 = standing, 1 = fully crouched (smooth ramps in and out)."""
    if p.crouch is None:
        return 0.0
    start, stop, ramp = p.crouch
    u = min(max((t - start) / ramp, 0.0), 1.0) * min(max((stop - t) / ramp, 0.0), 1.0)
    return 0.5 - 0.5 * math.cos(math.pi * u)


def _skeleton(p: Person, t: int) -> dict[str, np.ndarray]:
    """2D joint positions (px) of a person at frame ``t``: name -> ``float[2]`` (x, y).

    A crouch is seen from the front-side: the hips drop to half their height, the thighs point
    partly towards the camera (foreshortened) and the torso leans forwards (shorter on screen).
    """
    h = p.height
    x = p.x0 + p.vx * t
    c = _crouch_amount(p, t)
    swing = p.stride * h * math.sin(2 * math.pi * p.gait * t + p.phase) * (1.0 - c)
    leg = _LEG * h
    hip_y = p.ground - leg * (1.0 - 0.5 * c)
    # The knee leaves the hip-foot line by the bend a segment of length leg/2 needs, foreshortened.
    reach = math.sqrt(max((leg / 2) ** 2 - ((p.ground - hip_y) / 2) ** 2, 0.0)) * _THIGH_ON_SCREEN
    forward = 1.0 if p.vx >= 0 else -1.0
    lean = 1.0 - _LEAN * c  # on-screen length of everything above the hips
    j = {
        "hip": np.array([x, hip_y]),
        "foot_l": np.array([x + swing, p.ground]),
        "foot_r": np.array([x - swing, p.ground]),
        "torso": np.array([x, hip_y - _TORSO_HALF_HEIGHT * h * lean]),
        "shoulder": np.array([x, hip_y - (_SHOULDER - _LEG) * h * lean]),
        "head": np.array([x, hip_y - (1.0 - _HEAD_RADIUS - _LEG) * h * lean]),
    }
    for side, foot in (("l", j["foot_l"]), ("r", j["foot_r"])):
        j[f"knee_{side}"] = (j["hip"] + foot) / 2 + np.array([forward * reach, 0.0])
    arm = 0.32 * h * lean
    for side, sign in (("l", -1.0), ("r", 1.0)):
        hand = j["shoulder"] + np.array([sign * swing * 0.8, arm])
        j[f"elbow_{side}"] = (j["shoulder"] + hand) / 2 + np.array([sign * 0.03 * h, 0.0])
        j[f"hand_{side}"] = hand
    return j


def _draw(p: Person, t: int, height: int, width: int) -> np.ndarray:
    """The person's whole silhouette at frame ``t``: ``bool[H, W]`` (clipped to the image)."""
    j = _skeleton(p, t)
    h = p.height
    canvas = np.zeros((height, width), np.uint8)

    def pt(name: str) -> tuple[int, int]:
        x, y = j[name]
        return round(x), round(y)

    half_w = round(p.width * h)
    torso_half_h = round(float(j["hip"][1] - j["torso"][1]))
    cv2.ellipse(canvas, pt("torso"), (half_w, torso_half_h), 0, 0, 360, 1, -1)
    cv2.circle(canvas, pt("head"), round(_HEAD_RADIUS * h), 1, -1)
    cv2.line(canvas, pt("head"), pt("shoulder"), 1, max(round(0.06 * h), 1))  # neck
    leg_w = max(round(0.45 * half_w), 2)
    arm_w = max(round(0.25 * half_w), 2)
    for side in ("l", "r"):
        cv2.line(canvas, pt("hip"), pt(f"knee_{side}"), 1, leg_w)
        cv2.line(canvas, pt(f"knee_{side}"), pt(f"foot_{side}"), 1, leg_w)
        cv2.line(canvas, pt("shoulder"), pt(f"elbow_{side}"), 1, arm_w)
        cv2.line(canvas, pt(f"elbow_{side}"), pt(f"hand_{side}"), 1, arm_w)
    return canvas.astype(bool)


def _keypoints(p: Person, t: int, height: int, width: int) -> np.ndarray:
    """``float[70, 3]`` camera-frame points (m) spread along the skeleton's segments."""
    j = _skeleton(p, t)
    segments = [
        ("head", "shoulder"),
        ("shoulder", "torso"),
        ("torso", "hip"),
        ("hip", "knee_l"),
        ("knee_l", "foot_l"),
        ("hip", "knee_r"),
        ("knee_r", "foot_r"),
        ("shoulder", "elbow_l"),
        ("elbow_l", "hand_l"),
        ("shoulder", "elbow_r"),
        ("elbow_r", "hand_r"),
    ]
    u = np.linspace(0.0, 1.0, math.ceil(N_JOINTS / len(segments)))
    pts = np.concatenate([j[a] + u[:, None] * (j[b] - j[a]) for a, b in segments])[:N_JOINTS]
    xy = (pts - np.array([width / 2, height / 2])) * p.depth_m / FOCAL
    return np.concatenate([xy, np.full((N_JOINTS, 1), p.depth_m)], axis=1)


def render(
    scenario: str,
    people: list[Person],
    occluders: list[Occluder],
    n_frames: int,
    height: int,
    width: int,
    rng: np.random.Generator,
) -> Clip:
    """Draw people and occluders over ``n_frames`` frames (nearer hides farther)."""
    order = sorted(people, key=lambda p: -p.depth)  # farthest first
    labels = np.zeros((n_frames, height, width), np.uint8)
    amodal = {p.obj_id: np.zeros((n_frames, height, width), bool) for p in people}
    keypoints = {p.obj_id: np.full((n_frames, N_JOINTS, 3), np.nan, np.float32) for p in people}
    for t in range(n_frames):
        for p in order:
            amodal[p.obj_id][t] = _draw(p, t, height, width)
        for p in order:
            visible = amodal[p.obj_id][t].copy()
            for q in people:
                if q.depth < p.depth:
                    visible &= ~amodal[q.obj_id][t]
            for o in occluders:
                if o.depth < p.depth:
                    x0, y0, x1, y1 = o.box
                    visible[y0:y1, x0:x1] = False
            labels[t][visible] = p.obj_id
            n_visible = int(visible.sum())
            if n_visible:
                hidden = 1.0 - n_visible / int(amodal[p.obj_id][t].sum())
                noise = rng.normal(0.0, KEYPOINT_NOISE + OCCLUSION_ERROR * hidden**2, (N_JOINTS, 3))
                keypoints[p.obj_id][t] = _keypoints(p, t, height, width) + noise
    return Clip(scenario, labels, amodal, keypoints, tuple(order), tuple(occluders))


def _person(
    rng: np.random.Generator, image_h: int, obj_id: int, depth: int, x0: float, vx: float, **kw: object
) -> Person:
    """A person with random build and gait (0.42-0.58 of the image high, torso half-width 0.11-0.16)."""
    args: dict = {
        "ground": image_h * (0.92 - 0.025 * depth),  # farther people stand a little higher
        "height": float(rng.uniform(0.42, 0.58) * image_h),
        "width": float(rng.uniform(0.11, 0.16)),
        "stride": 0.12,
        "gait": float(rng.uniform(0.025, 0.04)),
        "phase": float(rng.uniform(0, 2 * math.pi)),
        "depth_m": NEAREST_Z + depth,
    }
    args.update(kw)
    return Person(obj_id=obj_id, depth=depth, x0=x0, vx=vx, **args)


def _pass_behind(rng: np.random.Generator, t: int, w: int, h: int) -> tuple[list[Person], list[Occluder]]:
    """Two people cross in opposite directions, one behind the other; a bystander far away."""
    speed = rng.uniform(1.5, 3.0, 2)
    meet = rng.uniform(0.4, 0.6) * w
    front = _person(rng, h, 1, 0, meet - speed[0] * t / 2, speed[0])
    back = _person(rng, h, 2, 1, meet + speed[1] * t / 2, -speed[1])
    bystander = _person(rng, h, 3, 2, rng.uniform(0.05, 0.12) * w, 0.1, stride=0.03)
    return [front, back, bystander], []


def _overtake(rng: np.random.Generator, t: int, w: int, h: int) -> tuple[list[Person], list[Occluder]]:
    """A nearer person slowly overtakes a farther one walking the same way (long occlusion)."""
    slow, extra = rng.uniform(0.8, 1.5), rng.uniform(0.8, 1.5)
    back = _person(rng, h, 1, 1, 0.4 * w, slow)
    front = _person(rng, h, 2, 0, 0.4 * w - extra * t / 2, slow + extra)
    return [back, front], []


def _side_by_side(rng: np.random.Generator, t: int, w: int, h: int) -> tuple[list[Person], list[Occluder]]:
    """Two people walk towards the camera side by side, a few pixels apart, never overlapping."""
    vx = rng.uniform(-0.5, 0.5)
    a = _person(rng, h, 1, 0, 0.4 * w, vx, stride=0.02)
    b = _person(rng, h, 2, 0, 0.0, vx, stride=0.02, depth_m=a.depth_m)
    gap = rng.uniform(5.0, 9.0)  # between the torsos, the widest part of a silhouette
    return [a, replace(b, x0=a.x0 + (a.width * a.height + b.width * b.height) + gap)], []


def _leave_enter(rng: np.random.Generator, t: int, w: int, h: int) -> tuple[list[Person], list[Occluder]]:
    """One person walks out of the frame on the right; another walks in from the left."""
    speed = rng.uniform(2.0, 3.0, 2)
    leaving = _person(rng, h, 1, 0, w - speed[0] * t * 0.55, speed[0])
    entering = _person(rng, h, 2, 1, -speed[1] * t * 0.35, speed[1])
    return [leaving, entering], []


def _crouch(rng: np.random.Generator, t: int, w: int, h: int) -> tuple[list[Person], list[Occluder]]:
    """One person crouches down and stands up again; another walks by, far from them."""
    start = int(rng.integers(t // 5, t // 3))
    drift = rng.uniform(-0.3, 0.3)
    squat = _person(rng, h, 1, 0, 0.7 * w, drift, crouch=(start, start + t // 2, 8), stride=0.02)
    walker = _person(rng, h, 2, 1, 0.05 * w, rng.uniform(0.5, 1.2))
    return [squat, walker], []


def _pole(rng: np.random.Generator, t: int, w: int, h: int) -> tuple[list[Person], list[Occluder]]:
    """Two people walk past a pole: one behind it (hidden in part), one in front of it."""
    speed = rng.uniform(1.5, 3.0, 2)
    behind = _person(rng, h, 1, 2, 0.5 * w - speed[0] * t * 0.5, speed[0])
    front = _person(rng, h, 2, 0, 0.5 * w + speed[1] * t * 0.5, -speed[1])
    pole_half = round(rng.uniform(0.45, 0.7) * behind.width * behind.height)
    x = round(0.5 * w)
    return [behind, front], [Occluder((x - pole_half, 0, x + pole_half, h), 1)]


Scenario = Callable[[np.random.Generator, int, int, int], tuple[list[Person], list[Occluder]]]
SCENARIOS: dict[str, Scenario] = {
    "pass behind": _pass_behind,
    "overtake": _overtake,
    "side by side": _side_by_side,
    "leave / enter": _leave_enter,
    "crouch": _crouch,
    "pole": _pole,
}


def make_clip(scenario: str, seed: int, n_frames: int = 80, height: int = 240, width: int = 320) -> Clip:
    """Render one scenario of `SCENARIOS`; the same (scenario, seed, size) gives the same clip."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}: choose one of {', '.join(SCENARIOS)}")
    rng = np.random.default_rng([seed, list(SCENARIOS).index(scenario)])
    people, occluders = SCENARIOS[scenario](rng, n_frames, width, height)
    return render(scenario, people, occluders, n_frames, height, width, rng)
