"""A GPU stand-in for measuring throughput without a GPU: the network calls take a set time.

`StandIn.install()` replaces, for the duration of a ``with`` block, exactly the calls that run
on the GPU in production by calls that sleep (``time.sleep`` releases the GIL, as a CUDA call
does while the device works) and return outputs of the real shapes; every other line of the
pipeline, including the pre- and post-processing around those calls, runs as it is:

- SAM-3: the tracker's forward pass on one frame (`models.sam3.TrackerSession`'s
  ``models.tracker``), ``sam3_s`` per object; its low-resolution masks are the targets' true
  masks, so the adapter's upsampling and everything after work on real masks.
- SAM-3D-Body: the network part of one batch (`SAM3DBody._predict_chunk`: encoder, decoders,
  MHR), ``body_s`` per person-frame; crops are still cut by `SAM3DBody.prepare`.
- MHR on parameters (`SAM3DBody.mesh_from_params`/`skeleton_from_params`: smoothing, export,
  render, bundles), ``mhr_s`` per body.
- The mesh rasteriser (`body4d.render.MeshRenderer.render`), ``raster_s`` per person drawn; it
  returns the frame with each person's box filled in their colour.

Times are summed per stage (the stage is the one the driver last reported progress for), so a
benchmark can compare them with the stage's wall time: the GPU busy fraction.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from body4d.render import MeshRenderer
from models.sam3 import FrameMasks, TrackerSession
from models.sam_3d_body import BodyEstimate, SAM3DBody
from models.sam_3d_body.mhr_layout import NUM_JOINTS, NUM_KP, NUM_VERTS

# The tiny SAM-3's low-resolution mask side (the real model's is 288; upsampling is the same code).
LOW_RES = 288


class StandIn:
    """Sleeping stand-ins for the GPU calls, with their time summed per stage.

    Args:
        truth: ``truth(frame) -> {obj_id: bool[H, W]}``, the targets' true masks on a frame.
        sam3_s, body_s, mhr_s, raster_s: seconds per object-frame, person-frame, body, person drawn.
    """

    def __init__(
        self,
        truth: Callable[[int], dict[int, np.ndarray]],
        *,
        sam3_s: float,
        body_s: float,
        mhr_s: float,
        raster_s: float,
    ) -> None:
        self.truth = truth
        self.sam3_s, self.body_s, self.mhr_s, self.raster_s = sam3_s, body_s, mhr_s, raster_s
        self.stage = "setup"
        self.seconds: dict[str, float] = defaultdict(float)
        self._lock = threading.Lock()
        rng = np.random.default_rng(0)
        self._template = (rng.normal(0, 0.25, (NUM_VERTS, 3)) * [0.4, 1.0, 0.2]).astype(np.float32)

    def progress(self, stage: str, _fraction: float, _message: str) -> None:
        """The driver's progress callback: follows which stage is running."""
        self.stage = stage

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.seconds[self.stage] += seconds
        time.sleep(seconds)

    @contextlib.contextmanager
    def install(self) -> Iterator[StandIn]:
        patches = {
            (TrackerSession, "track"): self._track,
            (SAM3DBody, "_predict_chunk"): self._predict_chunk,
            (SAM3DBody, "mesh_from_params"): self._mesh_from_params,
            (SAM3DBody, "skeleton_from_params"): self._skeleton_from_params,
            (MeshRenderer, "render"): self._render,
        }
        saved = {key: getattr(*key) for key in patches}
        try:
            for (owner, name), fn in patches.items():
                setattr(owner, name, fn)
            yield self
        finally:
            for (owner, name), fn in saved.items():
                setattr(owner, name, fn)

    # ------------------------------------------------------------------ the stand-ins
    @property
    def _track(self) -> Callable[..., Any]:
        stand_in = self

        def track(session: TrackerSession, frame: int, *, reverse: bool = False) -> Any:
            ids = sorted(session.obj_ids)
            stand_in.sleep(stand_in.sam3_s * len(ids))
            truth = stand_in.truth(frame)
            low = np.zeros((len(ids), 1, LOW_RES, LOW_RES), np.float32)
            for k, obj_id in enumerate(ids):
                inside = _resized(truth[obj_id], LOW_RES) if obj_id in truth else 0.0
                low[k, 0] = np.where(inside, 10.0, -10.0)  # logits
            out = SimpleNamespace(pred_masks=torch.from_numpy(low), object_ids=ids)
            return FrameMasks(frame=frame, masks=session._to_masks(out))

        return track

    @property
    def _predict_chunk(self) -> Callable[..., Any]:
        stand_in = self

        def predict_chunk(
            model: SAM3DBody, items: list[Any], _prepared: Any, _kind: str
        ) -> list[BodyEstimate]:
            stand_in.sleep(stand_in.body_s * len(items))
            return [stand_in._estimate(item) for item in items]

        return predict_chunk

    def _estimate(self, item: Any) -> BodyEstimate:
        x1, y1, x2, y2 = (float(v) for v in item.box)
        f = float(item.K[0, 0])
        depth = f * 1.7 / max(y2 - y1, 1.0)  # a 1.7 m person filling the box
        cx, cy = float(item.K[0, 2]), float(item.K[1, 2])
        cam_t = np.array(
            [((x1 + x2) / 2 - cx) * depth / f, ((y1 + y2) / 2 - cy) * depth / f, depth], np.float32
        )
        kp3d = self._template[:NUM_KP].copy()
        kp2d = (kp3d[:, :2] + cam_t[:2]) / (kp3d[:, 2:] + cam_t[2]) * f + [cx, cy]
        z = np.zeros
        return BodyEstimate(
            box=np.asarray(item.box, np.float32),
            focal_length=f,
            cam_t=cam_t,
            vertices=self._template,
            keypoints_3d=kp3d,
            keypoints_2d=kp2d.astype(np.float32),
            joint_coords=z((NUM_JOINTS, 3), np.float32),
            joint_rotations=np.tile(np.eye(3, dtype=np.float32), (NUM_JOINTS, 1, 1)),
            global_rot=z(3, np.float32),
            body_pose=z(133, np.float32),
            hand_pose=z(108, np.float32),
            shape=z(45, np.float32),
            scale=z(28, np.float32),
            expression=z(72, np.float32),
            mhr_model_params=z(204, np.float32),
        )

    @property
    def _mesh_from_params(self) -> Callable[..., Any]:
        stand_in = self

        def mesh_from_params(_model: SAM3DBody, global_rot: np.ndarray, *_rest: np.ndarray) -> Any:
            n = len(global_rot)
            stand_in.sleep(stand_in.mhr_s * n)
            verts = np.broadcast_to(stand_in._template, (n, NUM_VERTS, 3)).copy()
            return verts, verts[:, :NUM_KP].copy()

        return mesh_from_params

    @property
    def _skeleton_from_params(self) -> Callable[..., Any]:
        stand_in = self

        def skeleton_from_params(_model: SAM3DBody, global_rot: np.ndarray, *_rest: np.ndarray) -> Any:
            n = len(global_rot)
            stand_in.sleep(stand_in.mhr_s * n)
            joints = np.broadcast_to(stand_in._template[:NUM_JOINTS], (n, NUM_JOINTS, 3)).copy()
            return joints, np.tile(np.eye(3, dtype=np.float32), (n, NUM_JOINTS, 1, 1))

        return skeleton_from_params

    @property
    def _render(self) -> Callable[..., Any]:
        stand_in = self

        def render(
            _renderer: MeshRenderer,
            frame: np.ndarray | None,
            people: list[tuple[np.ndarray, tuple[int, int, int]]],
            K: np.ndarray,
            _faces: np.ndarray,
            *,
            width: int,
            height: int,
            background: tuple[int, int, int] | None = None,
            alpha: float | None = None,
        ) -> np.ndarray:
            stand_in.sleep(stand_in.raster_s * len(people))
            out = (
                frame.copy()
                if frame is not None
                else np.full((height, width, 3), background or 255, np.uint8)
            )
            for verts, colour in people:  # each person's projected box, in their colour
                p = verts[:, :2] / verts[:, 2:] * K[0, 0] + K[:2, 2]
                x1, y1 = np.clip(p.min(0), 0, [width, height]).astype(int)
                x2, y2 = np.clip(p.max(0), 0, [width, height]).astype(int)
                out[y1:y2, x1:x2] = colour
            return out

        return render


def _resized(mask: np.ndarray, side: int) -> np.ndarray:
    """``mask`` resampled (nearest) to ``side`` x ``side``, as float 0/1."""
    rows = np.linspace(0, mask.shape[0] - 1, side).astype(int)
    cols = np.linspace(0, mask.shape[1] - 1, side).astype(int)
    return mask[np.ix_(rows, cols)].astype(np.float32)
