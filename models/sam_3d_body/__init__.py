"""body4d's port of the SAM-3D-Body inference path (image crop -> MHR body mesh).

This package is a derivative of SAM 3D Body by Meta Platforms, Inc. and is covered by the
SAM License (see LICENSE-SAM at the repository root). Model weights are not bundled.

Public API::

    from models.sam_3d_body import load, SAM3DBody, BodyItem, BodyEstimate
    model = load(cfg.sam_3d_body, torch.device("cuda"), torch.bfloat16)  # the config section
    estimates = model.predict([BodyItem(image, box, mask, K)], inference_type="full")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .checkpoint import load, load_sam3dbody
    from .predictor import BodyEstimate, BodyItem, SAM3DBody

__all__ = ["BodyEstimate", "BodyItem", "SAM3DBody", "load", "load_sam3dbody"]
# Imported on first use, so that torch-free submodules (mhr_layout) stay importable without torch.
_WHERE = {
    "load": ".checkpoint",
    "load_sam3dbody": ".checkpoint",
    "BodyEstimate": ".predictor",
    "BodyItem": ".predictor",
    "SAM3DBody": ".predictor",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name], __name__), name)
