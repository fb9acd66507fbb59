"""Frozen dataclasses that cross stage boundaries (numpy only, never torch).

Conventions used everywhere in body4d:
- images are RGB ``uint8`` arrays of shape ``(H, W, 3)``;
- object ids are integers ``>= 1``; ``0`` is background in label maps;
- frame indices are 0-based; spans are half-open ``[start, stop)``;
- pixel coordinates are in the original video resolution;
- 3D quantities are in metres in the OpenCV camera frame (x right, y down, z forward).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from fractions import Fraction
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class VideoInfo:
    """What a probe learns about a video or a frame folder.

    Attributes:
        path: the video file or frame folder.
        fps: exact frame rate (e.g. ``Fraction(30000, 1001)`` for 29.97 fps).
        n_frames: number of decodable frames.
        height: frame height in pixels after rotation metadata is applied.
        width: frame width in pixels after rotation metadata is applied.
        codec: codec name (``"png"``/``"jpeg"``/``"bmp"`` for frame folders).
        rotation: clockwise rotation in degrees applied to the stored frames (0, 90, 180, 270).
    """

    path: Path
    fps: Fraction
    n_frames: int
    height: int
    width: int
    codec: str
    rotation: int = 0

    @property
    def duration(self) -> float:
        """Length in seconds (``n_frames / fps``)."""
        return float(self.n_frames / self.fps) if self.fps else 0.0


@dataclass(frozen=True)
class Click:
    """One point prompt on one frame.

    Attributes:
        frame: 0-based frame index.
        x: column in pixels (original resolution).
        y: row in pixels (original resolution).
        positive: ``True`` for a foreground click (label 1), ``False`` for background (label 0).
    """

    frame: int
    x: float
    y: float
    positive: bool = True


@dataclass(frozen=True)
class Prompts:
    """Point prompts per object id: ``{obj_id: (Click, ...)}``."""

    clicks: dict[int, tuple[Click, ...]] = field(default_factory=dict)

    @property
    def obj_ids(self) -> list[int]:
        """Sorted object ids that have at least one click."""
        return sorted(k for k, v in self.clicks.items() if v)


@dataclass(frozen=True)
class MaskTrack:
    """Per-frame label maps for all tracked objects.

    Attributes:
        obj_ids: sorted object ids present in the track (even if empty on some frames).
        labels: ``uint8[T, H, W]`` (array or memmap); pixel value = object id, 0 = background.
    """

    obj_ids: tuple[int, ...]
    labels: np.ndarray

    @property
    def n_frames(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole camera intrinsics.

    Attributes:
        K: ``float64[3, 3]`` in pixels, ``fx == fy`` (square pixels), principal point ``(cx, cy)``.
        width: image width in pixels the intrinsics refer to.
        height: image height in pixels.
        source: how they were obtained (``"moge"`` or ``"default"``).
    """

    K: np.ndarray
    width: int
    height: int
    source: str = "default"

    @property
    def focal(self) -> float:
        return float(self.K[0, 0])

    @property
    def principal_point(self) -> tuple[float, float]:
        return float(self.K[0, 2]), float(self.K[1, 2])


@dataclass(frozen=True)
class Segmentation:
    """Result of the masks stage.

    Attributes:
        track: label maps of every frame and the ids of every target.
        first_frames: ``{obj_id: first frame}`` where each target was prompted, detected or (for
            imported masks) first seen.
        mode: ``"prompts"`` (clicks), ``"auto"`` (people detection) or ``"imported"`` (a masks folder).
    """

    track: MaskTrack
    first_frames: dict[int, int]
    mode: str


@dataclass(frozen=True)
class BodyTrack:
    """One identity's MHR body over every frame from its first to its last appearance.

    Rows where the person was not estimated (not visible, or a gap) hold NaN unless ``valid``.
    Geometry is rebuilt from the parameters by the body model (`SAM3DBody.mesh_from_params`), so
    no per-frame vertices are stored here (18,439 x 3 floats per frame would not scale).

    Attributes:
        obj_id: object id (>= 1), the same id as in the masks.
        frames: ``int64[T]`` consecutive global frame indices.
        valid: ``bool[T]`` the row holds an estimate (observed, or filled by smoothing).
        filled: ``bool[T]`` the row was interpolated across a short gap, not observed.
        box: ``float32[T, 4]`` person box xyxy in pixels (from the mask).
        focal: ``float32[T]`` focal length in pixels used for the row.
        cam_t: ``float32[T, 3]`` model origin in the OpenCV camera frame, metres.
        global_rot: ``float32[T, 3]`` MHR root rotation Euler angles, radians.
        body_pose: ``float32[T, 133]`` MHR body pose parameters.
        hand_pose: ``float32[T, 108]`` left/right hand PCA coefficients.
        shape: ``float32[T, 45]`` identity shape coefficients.
        scale: ``float32[T, 28]`` skeleton scale coefficients.
        expression: ``float32[T, 72]`` face expression coefficients.
        keypoints_3d: ``float32[T, 70, 3]`` MHR70 keypoints in the camera frame (``cam_t``
            applied), metres.
        keypoints_2d: ``float32[T, 70, 2]`` the same projected into the image with the run's K, pixels.
    """

    obj_id: int
    frames: np.ndarray
    valid: np.ndarray
    filled: np.ndarray
    box: np.ndarray
    focal: np.ndarray
    cam_t: np.ndarray
    global_rot: np.ndarray
    body_pose: np.ndarray
    hand_pose: np.ndarray
    shape: np.ndarray
    scale: np.ndarray
    expression: np.ndarray
    keypoints_3d: np.ndarray
    keypoints_2d: np.ndarray

    PARAM_FIELDS = ("global_rot", "body_pose", "hand_pose", "shape", "scale", "expression")

    def arrays(self) -> dict[str, np.ndarray]:
        """Every per-frame array by name (for ``bodies.npz``)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "obj_id"}


@dataclass(frozen=True)
class CompletedFrame:
    """One occluded person-frame after completion (encoded, at the video's resolution).

    Attributes:
        obj_id: the person.
        frame: global frame index.
        image: JPEG of the completed person on a white background (the recovery crop source).
        mask: palette PNG of the amodal (whole-body) mask, pixel = ``obj_id``.
    """

    obj_id: int
    frame: int
    image: bytes
    mask: bytes


@dataclass(frozen=True)
class Completion:
    """What occlusion completion produced: the completed person-frames and a JSON-able work report."""

    frames: tuple[CompletedFrame, ...]
    report: dict


@dataclass(frozen=True)
class PersonBundle:
    """One person's deliverables, encoded (written under ``people/<id>/``).

    Attributes:
        obj_id: the person.
        glb: animated GLB of the mesh, or None when GLBs are off.
        npz: ``<id>.npz`` bytes: the `BodyTrack` arrays, K and fps.
        info: ``<id>.json``: frame range, observed / interpolated / completed frames, units, axes,
            fps, the weights used and their licences.
        bvh: ``<id>.bvh`` text: the MHR skeleton over the frame range (cm, Y-up), or None when
            the person has no estimate.
    """

    obj_id: int
    glb: bytes | None
    npz: bytes
    info: dict
    bvh: str | None = None


@dataclass(frozen=True)
class RunResult:
    """What a (possibly partial) run produced.

    Attributes:
        run_id: the run folder's name.
        root: the run folder.
        obj_ids: object ids found by segmentation (or in the imported masks).
        done: stages finished (including ones skipped on resume).
        artefacts: stage name -> paths relative to ``root``.
    """

    run_id: str
    root: Path
    obj_ids: tuple[int, ...]
    done: tuple[str, ...]
    artefacts: dict[str, list[str]] = field(default_factory=dict)
