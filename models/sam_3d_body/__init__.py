"""body4d's port of the SAM-3D-Body inference path (image crop -> MHR body mesh).

This package is a derivative of SAM 3D Body by Meta Platforms, Inc. and is covered by the
SAM License (see LICENSE-SAM at the repository root). Model weights are not bundled.

Public API::

    from models.sam_3d_body import load_sam3dbody, SAM3DBody, BodyItem, BodyEstimate
    model = load_sam3dbody(ckpt_path, config_path, mhr_path, device="cuda", dtype="bf16")
    estimates = model.predict([BodyItem(image, box, mask, K)], inference_type="full")
"""

from __future__ import annotations

from .checkpoint import load_sam3dbody
from .predictor import BodyEstimate, BodyItem, SAM3DBody

__all__ = ["BodyEstimate", "BodyItem", "SAM3DBody", "load_sam3dbody"]
