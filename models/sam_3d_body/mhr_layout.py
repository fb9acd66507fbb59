"""Sizes and parameter layout of the MHR body model, and the default camera, as SAM-3D-Body uses
them (numpy only, no torch).

Part of the body4d port of SAM 3D Body (Meta Platforms, Inc.), covered by the SAM License
(see LICENSE-SAM). Kept free of torch so that pure-numpy code (temporal smoothing, exports)
can read the layout without loading the network stack.
"""

from __future__ import annotations

import numpy as np

NUM_VERTS = 18439  # MHR LOD1 mesh
NUM_JOINTS = 127
NUM_FACES = 36874
NUM_SHAPE = 45
NUM_SCALE = 28
NUM_HAND = 54  # per hand (PCA space)
NUM_EXPR = 72
NUM_KP = 70  # MHR70 keypoints (first rows of the 308-row keypoint regressor)
NUM_KP_ROWS = 308
NUM_MODEL_PARAMS = 204
NUM_BODY_PARAMS = 133

# MHR body pose (133 Euler/translation parameters): where the 23 three-DoF joints (x, y, z
# Euler angles each), the 58 one-DoF joint angles and the 6 translations live.
# fmt: off
BODY_3DOF_IDXS = np.array([
    (0, 2, 4), (6, 8, 10), (12, 13, 14), (15, 16, 17), (18, 19, 20), (21, 22, 23), (24, 25, 26),
    (27, 28, 29), (34, 35, 36), (37, 38, 39), (44, 45, 46), (53, 54, 55), (64, 65, 66), (85, 69, 73),
    (86, 70, 79), (87, 71, 82), (88, 72, 76), (91, 92, 93), (112, 96, 100), (113, 97, 106),
    (114, 98, 109), (115, 99, 103), (130, 131, 132),
])
BODY_1DOF_IDXS = np.array([
    1, 3, 5, 7, 9, 11, 30, 31, 32, 33, 40, 41, 42, 43, 47, 48, 49, 50, 51, 52, 56, 57, 58, 59, 60,
    61, 62, 63, 67, 68, 74, 75, 77, 78, 80, 81, 83, 84, 89, 90, 94, 95, 101, 102, 104, 105, 107, 108,
    110, 111, 116, 117, 118, 119, 120, 121, 122, 123,
])
# fmt: on
BODY_TRANS_IDXS = np.arange(124, 130)


def default_intrinsics(height: int, width: int) -> np.ndarray:
    """SAM-3D-Body's fallback pinhole intrinsics ``float64[3, 3]``: focal = image diagonal,
    principal point = image centre ``(W/2, H/2)``, pixels."""
    f = float(np.hypot(height, width))
    return np.array([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]])
