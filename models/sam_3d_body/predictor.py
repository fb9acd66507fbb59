"""Batched SAM-3D-Body inference: many (image, box, mask, intrinsics) items -> body estimates.

Part of the body4d port of SAM 3D Body (Meta Platforms, Inc.), covered by the SAM License
(see LICENSE-SAM).

Batch invariance: every item is computed independently of the others in its batch. The
released "full" mode is not: with a single crop it drops keypoint prompts that fail the hand
checks (and skips the prompted pass when none is left), with several crops it replaces them by
placeholder ("invalid") prompts. This port always uses placeholders, i.e. the released
multi-person behaviour, so a person's result does not depend on who else is in the batch.

Deliberate differences from the released "full" mode, all invisible with default intrinsics:
final 2D keypoints use the item's principal point and (fx, fy) (the release uses the image
centre and fx), and ``joint_rotations`` are those of the final, hand-spliced pose (the release
returns the pre-splice ones).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from .geometry import euler_to_rotmat, fix_wrist_euler, rotation_angle, rotmat_to_euler
from .heads import MHRResult, MHRSkeleton, PoseOutput, flip_yz, flip_yz_rotations, mhr_skeleton
from .mhr_layout import NUM_HAND, NUM_JOINTS, NUM_KP, NUM_VERTS, default_intrinsics
from .network import CropBatch, SAM3DBodyNet
from .preprocess import HAND_PADDING, CropSpec, build_crops, crop_box
from .prompt import LABEL_INVALID

log = logging.getLogger(__name__)

InferenceType = Literal["full", "body"]

# --- "full" mode constants of the released model -------------------------------------------
# MHR70 keypoints used as prompts for the second body pass.
KP_RIGHT_WRIST, KP_LEFT_WRIST, KP_RIGHT_ELBOW, KP_LEFT_ELBOW = 41, 62, 8, 7
# MHR skeleton joints: lower arms, wrist-twist joints, right and left wrists.
JOINT_LOWARM = (76, 40)  # left, right
JOINT_WRIST_TWIST = (77, 41)  # left, right
JOINT_RIGHT_WRIST, JOINT_LEFT_WRIST = 42, 78
# Body-pose entries holding the wrist XZY Euler angles, left then right.
WRIST_POSE_IDXS = (41, 43, 42, 31, 33, 32)
SCALE_RIGHT_HAND, SCALE_LEFT_HAND = 8, 9
SCALE_SHARED_HAND = 18  # scale comps >= 18 are shared hand scales, averaged over valid hands
SHAPE_HAND = 40  # shape comps >= 40 are hand shape, averaged over valid hands
# A hand estimate replaces the body decoder's hand when all four checks pass:
MAX_WRIST_ANGLE = 1.4  # rad between hand- and body-implied local wrist rotation
MIN_HAND_BOX = 64.0  # px, side of the hand crop box
MAX_HAND_KP_CROP = 0.5  # every hand keypoint projected inside its crop ([-0.5, 0.5])
MAX_WRIST_DIST = 0.25  # hand vs body 2D wrist distance, in hand-box sides


@dataclass(frozen=True)
class BodyItem:
    """One person in one image.

    Attributes:
        image: (H, W, 3) uint8 RGB. Items of the same frame may share the array.
        box: (4,) float xyxy in pixels.
        mask: (H, W) bool person mask, or None (the model then uses its "no mask" embedding).
        K: (3, 3) float intrinsics in pixels, or None for f = image diagonal, c = image centre.
    """

    image: np.ndarray
    box: np.ndarray
    mask: np.ndarray | None = None
    K: np.ndarray | None = None


@dataclass(frozen=True)
class BodyEstimate:
    """MHR body of one person (float32 numpy; camera frame x right, y down, z forward).

    Geometry (``vertices``, ``keypoints_3d``, ``joint_coords``) is relative to the model origin
    in camera axes: add ``cam_t`` for camera-frame positions.

    Attributes:
        box: (4,) the input box, xyxy pixels.
        focal_length: fx of the intrinsics used, pixels.
        cam_t: (3,) model origin in the camera frame, metres.
        vertices: (18439, 3) mesh vertices, metres.
        keypoints_3d: (70, 3) MHR70 keypoints, metres.
        keypoints_2d: (70, 2) MHR70 keypoints projected into the image, pixels.
        joint_coords: (127, 3) skeleton joints, metres.
        joint_rotations: (127, 3, 3) global joint rotations (MHR frame).
        global_rot: (3,) global rotation, ZYX Euler angles as MHR consumes them, radians.
        body_pose: (133,) MHR body pose parameters (radians; 6 translation entries).
        hand_pose: (108,) left then right hand pose, hand-PCA coefficients.
        shape: (45,) identity coefficients.
        scale: (28,) skeleton scale coefficients.
        expression: (72,) face expression coefficients (zero: switched off in the release).
        mhr_model_params: (204,) the full MHR parameter vector.
        hand_boxes: (2, 4) left/right hand crop boxes, xyxy pixels ("full" mode), else None.
        hand_used: (2,) bool, whether the left/right hand decoder result was spliced in
            ("full" mode), else None.
    """

    box: np.ndarray
    focal_length: float
    cam_t: np.ndarray
    vertices: np.ndarray
    keypoints_3d: np.ndarray
    keypoints_2d: np.ndarray
    joint_coords: np.ndarray
    joint_rotations: np.ndarray
    global_rot: np.ndarray
    body_pose: np.ndarray
    hand_pose: np.ndarray
    shape: np.ndarray
    scale: np.ndarray
    expression: np.ndarray
    mhr_model_params: np.ndarray
    hand_boxes: np.ndarray | None = None
    hand_used: np.ndarray | None = None


@dataclass(frozen=True)
class PreparedCrops:
    """The person crops of one batch of items (`SAM3DBody.prepare`), on the model's device.

    Attributes:
        count: how many items they are of.
        images: the distinct source images (items of one frame share theirs).
        specs: one crop per item.
        img, mask, has_mask, crops: `build_crops` of ``specs``.
    """

    count: int
    images: list[np.ndarray]
    specs: list[CropSpec]
    img: torch.Tensor
    mask: torch.Tensor
    has_mask: torch.Tensor
    crops: CropBatch


# `BodyEstimate` array field -> the `PoseOutput` tensor it is read from, per item.
_ESTIMATE_FIELDS = {
    "cam_t": "cam_t",
    "vertices": "vertices",
    "keypoints_3d": "keypoints_3d",
    "keypoints_2d": "keypoints_2d",
    "joint_coords": "joint_coords",
    "joint_rotations": "joint_rots",
    "global_rot": "global_rot",
    "body_pose": "body_pose",
    "hand_pose": "hand",
    "shape": "shape",
    "scale": "scale",
    "expression": "face",
    "mhr_model_params": "model_params",
}


def _dummy_prompts(n: int, device: torch.device) -> torch.Tensor:
    """One placeholder prompt per crop: [n, 1, 3] = (0, 0, invalid)."""
    p = torch.zeros(n, 1, 3, device=device)
    p[..., 2] = LABEL_INVALID
    return p


def _to_host(tensors: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Copy tensors to the host in one device->host transfer (a single ``.cpu()``).

    Args:
        tensors: name -> tensor of any shape, float or bool, all on one device.
    Returns:
        name -> float32 array of the tensor's shape (bool becomes 0/1), values identical to
        ``t.float().cpu().numpy()``. The arrays are C-contiguous views of one host buffer.
    """
    flat = torch.cat([t.float().flatten() for t in tensors.values()]).cpu().numpy()
    out: dict[str, np.ndarray] = {}
    start = 0
    for name, t in tensors.items():
        out[name] = flat[start : start + t.numel()].reshape(t.shape)
        start += t.numel()
    return out


class SAM3DBody:
    """SAM-3D-Body predictor. Build it with :func:`models.sam_3d_body.load_sam3dbody`.

    Args:
        net: the network with weights loaded, in eval mode, on its device.
        mhr: the TorchScript MHR body model on the same device.
        bbox_padding: person box padding factor before cropping.
        mask_value: value of a person pixel in the mask prompt (1, or 255 as SAM-Body4D and
            Meta's notebook pass it); background is 0.
        max_wrist_angle: radians; a hand estimate whose implied local wrist rotation differs
            more than this from the body decoder's is rejected ("full" mode).
    """

    def __init__(
        self,
        net: SAM3DBodyNet,
        mhr: torch.jit.ScriptModule,
        bbox_padding: float,
        mask_value: int,
        max_wrist_angle: float = MAX_WRIST_ANGLE,
    ) -> None:
        self.net = net
        self.mhr = mhr
        self.bbox_padding = bbox_padding
        self.mask_value = mask_value
        self.max_wrist_angle = max_wrist_angle
        self.device = net.image_mean.device
        self.crop_size = net.cfg.image_size

    @property
    def faces(self) -> np.ndarray:
        """(36874, 3) int64 triangle indices of the MHR mesh."""
        return self.net.body.pose_head.faces.cpu().numpy()

    def mesh_from_params(
        self,
        global_rot: np.ndarray,
        body_pose: np.ndarray,
        hand_pose: np.ndarray,
        shape: np.ndarray,
        scale: np.ndarray,
        expression: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Evaluate the MHR body model on (e.g. temporally smoothed) parameters.

        Args:
            global_rot: (N, 3) root rotation Euler angles, radians, as in `BodyEstimate`.
            body_pose: (N, 133); hand_pose: (N, 108); shape: (N, 45); scale: (N, 28);
            expression: (N, 72).
        Returns:
            vertices (N, 18439, 3) and MHR70 keypoints (N, 70, 3), metres, camera axes, relative
            to the model origin (add ``cam_t``), float32. Feeding a `BodyEstimate`'s own
            parameters reproduces its ``vertices`` and ``keypoints_3d``.
        """
        with torch.inference_mode():
            res = self._run_params((global_rot, body_pose, hand_pose, shape, scale, expression))
            if res is None:
                return np.zeros((0, NUM_VERTS, 3), np.float32), np.zeros((0, NUM_KP, 3), np.float32)
            host = _to_host({"vertices": flip_yz(res.vertices), "keypoints_3d": flip_yz(res.keypoints_3d)})
        return host["vertices"], host["keypoints_3d"]

    def skeleton_from_params(
        self,
        global_rot: np.ndarray,
        body_pose: np.ndarray,
        hand_pose: np.ndarray,
        shape: np.ndarray,
        scale: np.ndarray,
        expression: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Evaluate the MHR skeleton on (e.g. temporally smoothed) parameters.

        Args: as :meth:`mesh_from_params`.
        Returns:
            joint positions (N, 127, 3), metres, camera axes, relative to the model origin (add
            ``cam_t``), and global joint rotations (N, 127, 3, 3) in **camera axes**
            (``F R F`` with F = diag(1, -1, -1) of the MHR-frame ``BodyEstimate.joint_rotations``),
            float32. Same MHR call as :meth:`mesh_from_params`, so the skeleton fits the mesh.
        """
        with torch.inference_mode():
            res = self._run_params((global_rot, body_pose, hand_pose, shape, scale, expression))
            if res is None:
                return np.zeros((0, NUM_JOINTS, 3), np.float32), np.zeros((0, NUM_JOINTS, 3, 3), np.float32)
            host = _to_host({"joints": flip_yz(res.joint_coords), "rots": flip_yz_rotations(res.joint_rots)})
        return host["joints"], host["rots"]

    @property
    def skeleton(self) -> MHRSkeleton:
        """The MHR skeleton hierarchy and bind pose, read from the TorchScript body model."""
        return mhr_skeleton(self.mhr)

    def _run_params(self, arrays: tuple[np.ndarray, ...]) -> MHRResult | None:
        """One body-model call on the N rows of the six parameter arrays of :meth:`mesh_from_params`
        (in its argument order); None if N = 0."""
        n = len(arrays[0])
        if any(len(a) != n for a in arrays):
            raise ValueError(
                f"all parameter arrays need the same number of rows, got {[len(a) for a in arrays]}"
            )
        if n == 0:
            return None
        t = [torch.as_tensor(np.asarray(a, dtype=np.float32), device=self.device) for a in arrays]
        return self.net.body.pose_head.run_mhr(self.mhr, t[0], t[1], t[2], t[4], t[3], t[5])

    def prepare(self, items: list[BodyItem]) -> PreparedCrops:
        """Check ``items`` and cut their person crops, masks and rays, ready for `predict`.

        This is the per-item work before the network (warps, host-to-device copies); a caller
        that overlaps it with the network calls of the previous batch (`body4d.stages.recover`)
        makes it here, in another thread, and passes the result to `predict`. On a CUDA device
        the crops are cut there (`build_crops` ``on_device``).

        Raises:
            ValueError: an invalid item.
        """
        for i, item in enumerate(items):
            _check_item(i, item)
        return self._crops(items)

    def _crops(self, items: list[BodyItem]) -> PreparedCrops:
        """`prepare` of items already checked."""
        images: list[np.ndarray] = []
        index: dict[int, int] = {}
        specs = []
        for item in items:
            key = id(item.image)
            if key not in index:
                index[key] = len(images)
                images.append(item.image)
            h, w = item.image.shape[:2]
            K = default_intrinsics(h, w) if item.K is None else np.asarray(item.K, dtype=np.float64)
            center, size = crop_box(np.asarray(item.box, dtype=np.float64), self.bbox_padding)
            specs.append(CropSpec(index[key], center, size, K, item.mask))
        with torch.inference_mode():
            img, mask, has_mask, crops = build_crops(
                images, specs, self.crop_size, self.device, self.mask_value, on_device=self._crops_on_device
            )
        return PreparedCrops(len(items), images, specs, img, mask, has_mask, crops)

    @property
    def _crops_on_device(self) -> bool:
        return self.device.type == "cuda"

    def predict(
        self,
        items: list[BodyItem],
        inference_type: InferenceType = "full",
        batch_size: int = 64,
        prepared: PreparedCrops | None = None,
    ) -> list[BodyEstimate]:
        """Estimate one MHR body per item.

        Results reach the host in one device->host transfer per chunk of ``batch_size`` items
        ("body" mode); "full" mode adds one more per chunk, of the body decoder's hand boxes,
        which the hand crops are cut with (on the host images; on the device with CUDA).
        Nothing is copied per item.

        Args:
            items: people to estimate, any mix of images and intrinsics.
            inference_type: "body" (body decoder only) or "full" (adds the hand decoder on
                hand crops, a keypoint-prompted second body pass and the hand splice).
            batch_size: crops per network call.
            prepared: `prepare` of these very ``items`` (at most ``batch_size`` of them), made
                beforehand; None: the crops are cut here.
        Returns:
            one estimate per item, in order.
        Raises:
            ValueError: invalid inference type, batch size or item, or ``prepared`` of other items.
        """
        if inference_type not in ("full", "body"):
            raise ValueError(f"inference_type must be 'full' or 'body', got {inference_type!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if prepared is not None:
            if prepared.count != len(items) or len(items) > batch_size:
                raise ValueError(
                    f"prepared crops of {prepared.count} items given for {len(items)} items with "
                    f"batch_size={batch_size}: prepare the items of one batch"
                )
            with torch.inference_mode():
                return self._predict_chunk(items, prepared, inference_type)
        for i, item in enumerate(items):
            _check_item(i, item)
        out: list[BodyEstimate] = []
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            crops = self._crops(chunk)  # checked above, with their indices in ``items``
            with torch.inference_mode():
                out.extend(self._predict_chunk(chunk, crops, inference_type))
        return out

    def _predict_chunk(
        self, items: list[BodyItem], prepared: PreparedCrops, inference_type: InferenceType
    ) -> list[BodyEstimate]:
        p = prepared
        feats = self.net.encode(p.img, p.mask, p.has_mask)
        prompts = _dummy_prompts(len(items), self.device)
        body, hand_boxes = self.net.decode(self.net.body, feats, p.crops, prompts, None, self.mhr)
        if inference_type == "body":
            return _estimates(items, body)
        return self._full(items, p.images, p.specs, feats, p.crops, body, hand_boxes)

    def _hand_specs(
        self, images: list[np.ndarray], specs: list[CropSpec], crops: CropBatch, hand_boxes: torch.Tensor
    ) -> tuple[list[np.ndarray], list[CropSpec], list[CropSpec]]:
        """Hand crops from the body decoder's hand boxes; the left hand is cropped from the
        horizontally flipped image so that the right-hand decoder can process it.

        The crops are cut from the host images, so the chunk's hand boxes and crop affines come
        to the host here, together, in one transfer."""
        host = _to_host({"boxes": hand_boxes, "affine": crops.affine})
        boxes = host["boxes"] * self.crop_size  # [B, 2, 4] (cx, cy, w, h) crop pixels
        aff = host["affine"]
        s = aff[:, 0, 0][:, None]
        center = (boxes[..., :2] - aff[:, None, :, 2]) / s[:, None]
        side = boxes[..., 2:].max(-1) / s  # [B, 2] square box side, full-image pixels
        flipped = [np.ascontiguousarray(im[:, ::-1]) for im in images]
        all_images = images + flipped
        left, right = [], []
        for i, spec in enumerate(specs):
            width = images[spec.image].shape[1]
            lx1, ly1 = center[i, 0] - side[i, 0] / 2
            lx2, ly2 = center[i, 0] + side[i, 0] / 2
            left_box = np.array([width - lx2 - 1, ly1, width - lx1 - 1, ly2])
            right_box = np.concatenate([center[i, 1] - side[i, 1] / 2, center[i, 1] + side[i, 1] / 2])
            for box, img_idx, dst in (
                (left_box, spec.image + len(images), left),
                (right_box, spec.image, right),
            ):
                c, size = crop_box(box, HAND_PADDING)
                dst.append(CropSpec(img_idx, c, size, spec.K))
        return all_images, left, right

    def _full(
        self,
        items: list[BodyItem],
        images: list[np.ndarray],
        specs: list[CropSpec],
        feats: torch.Tensor,
        crops: CropBatch,
        body: PoseOutput,
        hand_boxes: torch.Tensor,
    ) -> list[BodyEstimate]:
        n = len(items)
        dev = self.device
        widths = torch.tensor([images[s.image].shape[1] for s in specs], dtype=torch.float32, device=dev)
        all_images, left_specs, right_specs = self._hand_specs(images, specs, crops, hand_boxes)
        h_img, h_mask, h_has, h_crops = build_crops(
            all_images,
            left_specs + right_specs,
            self.crop_size,
            dev,
            self.mask_value,
            on_device=self._crops_on_device,
        )
        h_feats = self.net.encode(h_img, h_mask, h_has)
        hands, _ = self.net.decode(
            self.net.hand, h_feats, h_crops, _dummy_prompts(2 * n, dev), None, self.mhr
        )
        head = self.net.body.pose_head
        lh = slice(0, n)
        rh = slice(n, 2 * n)

        # Un-flip the left-hand estimate (it was made as a right hand in a mirrored image).
        mean, comps = head.scale_mean, head.scale_comps
        l_scale = hands.scale[lh].clone()
        r_mean, r_std = mean[SCALE_RIGHT_HAND], comps[SCALE_RIGHT_HAND, SCALE_RIGHT_HAND]
        l_mean, l_std = mean[SCALE_LEFT_HAND], comps[SCALE_LEFT_HAND, SCALE_LEFT_HAND]
        l_scale[:, SCALE_LEFT_HAND] = ((r_mean + r_std * l_scale[:, SCALE_RIGHT_HAND]) - l_mean) / l_std
        mirror = torch.tensor([1.0, -1.0, -1.0], device=dev)[:, None]
        l_wrist_rot = hands.joint_rots[lh, JOINT_RIGHT_WRIST] * mirror
        l_hand = hands.hand[lh, NUM_HAND:]
        r_hand = hands.hand[rh, NUM_HAND:]
        r_scale = hands.scale[rh]
        hand_global = torch.stack(
            [l_wrist_rot, hands.joint_rots[rh, JOINT_RIGHT_WRIST]], dim=1
        )  # [B, 2, 3, 3]
        l_wrist_2d = hands.keypoints_2d[lh, KP_RIGHT_WRIST].clone()
        l_wrist_2d[:, 0] = widths - l_wrist_2d[:, 0] - 1
        r_wrist_2d = hands.keypoints_2d[rh, KP_RIGHT_WRIST]

        # Validity of each hand estimate (left, right).
        body_local_wrist = euler_to_rotmat("XZY", body.body_pose[:, WRIST_POSE_IDXS].unflatten(1, (2, 3)))
        fused = self._local_wrist(body.joint_rots, hand_global)
        ok_angle = rotation_angle(body_local_wrist, fused) < self.max_wrist_angle
        hand_size = h_crops.box_size.view(2, n).T  # [B, 2]
        ok_size = hand_size > MIN_HAND_BOX
        kp_crop_max = hands.keypoints_crop.abs().amax(dim=(1, 2)).view(2, n).T
        ok_inside = kp_crop_max < MAX_HAND_KP_CROP
        # The released code divides each wrist distance by the *other* hand's box side; kept
        # as released because the thresholds were tuned with it.
        l_dist = (l_wrist_2d - body.keypoints_2d[:, KP_LEFT_WRIST]).norm(dim=-1) / hand_size[:, 1]
        r_dist = (r_wrist_2d - body.keypoints_2d[:, KP_RIGHT_WRIST]).norm(dim=-1) / hand_size[:, 0]
        ok_wrist = torch.stack([l_dist, r_dist], dim=1) < MAX_WRIST_DIST
        hand_ok = ok_angle & ok_size & ok_inside & ok_wrist  # [B, 2]

        # Second body pass prompted with the hand wrists and the body elbows.
        pts = torch.stack(
            [
                r_wrist_2d,
                l_wrist_2d,
                body.keypoints_2d[:, KP_RIGHT_ELBOW],
                body.keypoints_2d[:, KP_LEFT_ELBOW],
            ],
            dim=1,
        )
        pts = crops.to_crop(pts)
        labels = torch.tensor([KP_RIGHT_WRIST, KP_LEFT_WRIST, KP_RIGHT_ELBOW, KP_LEFT_ELBOW], device=dev)
        usable = (pts >= -0.5).all(-1) & (pts <= 0.5).all(-1) & hand_ok[:, [1, 0, 1, 0]]
        prompts = torch.cat([(pts + 0.5).clamp(0.0, 1.0), labels.float().expand(n, -1)[..., None]], dim=-1)
        placeholder = torch.tensor([0.0, 0.0, float(LABEL_INVALID)], device=dev)
        prompts = torch.where(usable[..., None], prompts, placeholder)
        prev = torch.cat([body.pose_raw, body.shape, body.scale, body.hand, body.face, body.cam], dim=1)
        body2, _ = self.net.decode(self.net.body, feats, crops, prompts, prev, self.mhr)

        # Splice the accepted hands into the prompted body estimate.
        new_hand = torch.cat([l_hand, r_hand], dim=1)
        new_scale = body2.scale.clone()
        new_scale[:, SCALE_LEFT_HAND] = l_scale[:, SCALE_LEFT_HAND]
        new_scale[:, SCALE_RIGHT_HAND] = r_scale[:, SCALE_RIGHT_HAND]
        new_scale[:, SCALE_SHARED_HAND:] = (
            l_scale[:, SCALE_SHARED_HAND:] + r_scale[:, SCALE_SHARED_HAND:]
        ) / 2
        new_shape = body2.shape.clone()
        new_shape[:, SHAPE_HAND:] = (hands.shape[lh, SHAPE_HAND:] + hands.shape[rh, SHAPE_HAND:]) / 2
        fk = head.run_mhr(
            self.mhr, body2.global_rot, body2.body_pose, new_hand, new_scale, new_shape, body2.face
        )
        fused = self._local_wrist(fk.joint_rots, hand_global)
        wrist = fix_wrist_euler(rotmat_to_euler("XZY", fused))
        use = (rotation_angle(body_local_wrist, fused) < self.max_wrist_angle) & hand_ok  # [B, 2]
        body_pose = body2.body_pose.clone()
        old = body_pose[:, WRIST_POSE_IDXS].unflatten(1, (2, 3))
        body_pose[:, WRIST_POSE_IDXS] = torch.where(use[..., None], wrist, old).flatten(1)
        hand = torch.where(
            use[..., None], new_hand.unflatten(1, (2, NUM_HAND)), body2.hand.unflatten(1, (2, NUM_HAND))
        )
        hand = hand.flatten(1)
        scale = body2.scale.clone()
        scale[:, SCALE_LEFT_HAND] = torch.where(
            use[:, 0], new_scale[:, SCALE_LEFT_HAND], scale[:, SCALE_LEFT_HAND]
        )
        scale[:, SCALE_RIGHT_HAND] = torch.where(
            use[:, 1], new_scale[:, SCALE_RIGHT_HAND], scale[:, SCALE_RIGHT_HAND]
        )
        w = use.float()
        n_used = w.sum(dim=1, keepdim=True)
        any_used = n_used > 0
        shared = (l_scale[:, SCALE_SHARED_HAND:] * w[:, [0]] + r_scale[:, SCALE_SHARED_HAND:] * w[:, [1]]) / (
            n_used + 1e-8
        )
        scale[:, SCALE_SHARED_HAND:] = torch.where(any_used, shared, scale[:, SCALE_SHARED_HAND:])
        shape = body2.shape.clone()
        hshape = (hands.shape[lh, SHAPE_HAND:] * w[:, [0]] + hands.shape[rh, SHAPE_HAND:] * w[:, [1]]) / (
            n_used + 1e-8
        )
        shape[:, SHAPE_HAND:] = torch.where(any_used, hshape, shape[:, SHAPE_HAND:])

        res = head.run_mhr(self.mhr, body2.global_rot, body_pose, hand, scale, shape, body2.face)
        kps = flip_yz(res.keypoints_3d)
        pts3 = kps + body2.cam_t[:, None]
        f = torch.stack([crops.K[:, 0, 0], crops.K[:, 1, 1]], dim=-1)[:, None]
        c = crops.K[:, [0, 1], 2][:, None]
        kp2d = (pts3[..., :2] * f + c * pts3[..., 2:3]) / pts3[..., 2:3]
        final = PoseOutput(
            pose_raw=torch.zeros_like(body2.pose_raw),
            global_rot=body2.global_rot,
            body_pose=body_pose,
            shape=shape,
            scale=scale,
            hand=hand,
            face=body2.face,
            vertices=flip_yz(res.vertices),
            keypoints_3d=kps,
            joint_coords=flip_yz(res.joint_coords),
            joint_rots=res.joint_rots,
            model_params=res.model_params,
            cam=body2.cam,
            cam_t=body2.cam_t,
            focal=body2.focal,
            keypoints_2d=kp2d,
            keypoints_depth=pts3[..., 2],
            keypoints_crop=crops.to_crop(kp2d),
        )
        return _estimates(items, final, self._hand_boxes_xyxy(left_specs, right_specs, images), use)

    def _local_wrist(self, joint_rots: torch.Tensor, hand_global: torch.Tensor) -> torch.Tensor:
        """Local wrist rotations [B, 2, 3, 3] (left, right) that give the hand decoder's global
        wrist rotations under the body's lower-arm rotations."""
        rest = self.net.body.pose_head.joint_rotation[list(JOINT_WRIST_TWIST)]
        zero = joint_rots[:, list(JOINT_LOWARM)] @ rest
        return zero.transpose(-1, -2) @ hand_global

    @staticmethod
    def _hand_boxes_xyxy(left: list[CropSpec], right: list[CropSpec], images: list[np.ndarray]) -> np.ndarray:
        """(B, 2, 4) left/right hand crop boxes in the original (un-flipped) image, xyxy pixels."""
        out = np.empty((len(left), 2, 4), dtype=np.float32)
        for i, (ls, rs) in enumerate(zip(left, right, strict=True)):
            width = images[rs.image].shape[1]
            lc = np.array([width - ls.center[0] - 1, ls.center[1]])
            for j, (c, size) in enumerate(((lc, ls.size), (rs.center, rs.size))):
                out[i, j] = [c[0] - size / 2, c[1] - size / 2, c[0] + size / 2, c[1] + size / 2]
        return out


def _check_item(i: int, item: BodyItem) -> None:
    """Raise ValueError naming the item and the problem."""
    img = item.image
    if not (isinstance(img, np.ndarray) and img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8):
        raise ValueError(f"item {i}: image must be an (H, W, 3) uint8 RGB array")
    box = np.asarray(item.box, dtype=np.float64)
    if box.shape != (4,) or not np.all(np.isfinite(box)) or box[2] <= box[0] or box[3] <= box[1]:
        raise ValueError(f"item {i}: box must be finite xyxy with x2 > x1 and y2 > y1, got {item.box!r}")
    if item.mask is not None and np.shape(item.mask) != img.shape[:2]:
        raise ValueError(f"item {i}: mask shape {np.shape(item.mask)} != image shape {img.shape[:2]}")
    if item.K is not None:
        K = np.asarray(item.K, dtype=np.float64)
        if K.shape != (3, 3) or K[0, 0] <= 0 or K[1, 1] <= 0:
            raise ValueError(f"item {i}: K must be a (3, 3) pinhole matrix with positive focal lengths")


def _estimates(
    items: list[BodyItem],
    out: PoseOutput,
    hand_boxes: np.ndarray | None = None,
    hand_used: torch.Tensor | None = None,
) -> list[BodyEstimate]:
    """One estimate per item from a chunk's outputs, moved to the host in one transfer.

    Args:
        items: the chunk's items (B).
        out: the final prediction for the B crops.
        hand_boxes: (B, 2, 4) left/right hand boxes, xyxy pixels ("full" mode).
        hand_used: [B, 2] bool on the device, whether each hand was spliced in ("full" mode).
    """
    tensors = {name: getattr(out, attr) for name, attr in _ESTIMATE_FIELDS.items()}
    tensors["focal_length"] = out.focal
    if hand_used is not None:
        tensors["hand_used"] = hand_used
    host = _to_host(tensors)
    used = host["hand_used"].astype(bool) if hand_used is not None else None
    return [
        BodyEstimate(
            box=np.asarray(item.box, dtype=np.float32),
            focal_length=float(host["focal_length"][i]),
            **{name: host[name][i] for name in _ESTIMATE_FIELDS},
            hand_boxes=None if hand_boxes is None else hand_boxes[i],
            hand_used=None if used is None else used[i],
        )
        for i, item in enumerate(items)
    ]
