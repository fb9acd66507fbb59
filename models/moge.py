"""MoGe-2 (PyPI ``dlr-moge``) adapter: loads the checkpoint strictly and estimates pinhole intrinsics.

The checkpoint ``${paths.ckpt_root}/moge-2-vitl-normal/model.pt`` is a torch file
``{"model_config": dict, "model": state_dict}``; it is the only file upstream's
``MoGeModel.from_pretrained(path)`` opens (the DINOv2 backbone is built with ``pretrained=False``).
Upstream loads it with ``strict=False`` (a wrong file silently keeps random weights) and falls back to
downloading from the Hub; this adapter builds the same ``MoGeModel`` from ``model_config`` and refuses
any missing or unexpected key, and never touches the network.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from models.errors import CheckpointError, format_keys, setup_hint

if TYPE_CHECKING:
    from moge.model.v2 import MoGeModel

log = logging.getLogger(__name__)

# The one file of Ruicheng/moge-2-vitl-normal that MoGeModel.from_pretrained reads (its hub download
# name; a local path may be named anything).
CHECKPOINT_FILE = "model.pt"

# MoGe's `infer` picks num_tokens = lo + level/9 * (hi - lo) from the model's num_tokens_range.
MAX_RESOLUTION_LEVEL = 9
_UINT8_MAX = 255.0


class MoGeSettings(Protocol):
    """The settings this adapter reads: the ``camera`` config section (``body4d.config.CameraConfig``).

    Attributes:
        ckpt_path: the ``model.pt`` file.
        resolution_level: 0..9, MoGe's token budget (more = slower, finer).
    """

    @property
    def ckpt_path(self) -> str: ...
    @property
    def resolution_level(self) -> int: ...


class MoGe:
    """A loaded MoGe-2 model that estimates camera intrinsics from single RGB images.

    Build it with `load`. The weights stay in fp32; ``dtype`` selects the autocast precision used
    on CUDA only (MoGe's ``infer`` offers fp16 autocast, which is also used when bf16 is requested).
    """

    def __init__(
        self,
        model: MoGeModel,
        device: torch.device,
        dtype: torch.dtype,
        resolution_level: int,
    ) -> None:
        if not 0 <= resolution_level <= MAX_RESOLUTION_LEVEL:
            raise ValueError(f"resolution_level must be in 0..{MAX_RESOLUTION_LEVEL}, got {resolution_level}")
        self.model = model
        self.device = device
        self.dtype = dtype
        self.resolution_level = resolution_level
        # Half precision only where it pays off and is supported: CUDA. CPU always runs fp32.
        self.use_half = device.type == "cuda" and dtype != torch.float32
        if dtype == torch.bfloat16 and self.use_half:
            log.info("MoGe runs under fp16 autocast (its infer() offers no bf16 autocast)")

    def estimate_intrinsics(self, image: np.ndarray) -> np.ndarray:
        """Pinhole intrinsics of one image as MoGe-2 predicts them.

        Args:
            image: RGB ``uint8[H, W, 3]``.

        Returns:
            ``float64[3, 3]`` K in pixels: ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` where MoGe's
            normalised intrinsics are scaled by the image size (fx*W, fy*H, cx*W, cy*H). MoGe builds
            square pixels in (``fx == fy`` up to rounding) and puts the principal point at the centre.
            The values are not checked: a degenerate prediction may be non-finite or non-positive.

        Raises:
            ValueError: ``image`` is not ``uint8[H, W, 3]``.
        """
        if (
            not isinstance(image, np.ndarray)
            or image.dtype != np.uint8
            or image.ndim != 3
            or image.shape[2] != 3
        ):
            got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
            raise ValueError(f"MoGe expects an RGB uint8[H, W, 3] image, got {got}")
        height, width = image.shape[:2]
        x = (
            torch.from_numpy(np.ascontiguousarray(image)).to(self.device).permute(2, 0, 1).float()
            / _UINT8_MAX
        )
        with torch.inference_mode():
            # `infer` scopes its own fp16 autocast to the forward pass when use_fp16 is True.
            out = self.model.infer(x, resolution_level=self.resolution_level, use_fp16=self.use_half)
        k_norm = out["intrinsics"].double().cpu().numpy()
        scale = np.array([[width], [height], [1.0]])
        k = k_norm * scale
        k[2] = (0.0, 0.0, 1.0)
        return k


def checkpoint_problem(path: str | Path) -> str | None:
    """Why ``path`` is not a MoGe-2 checkpoint file dlr-moge can open, or None when it is one.

    Only presence is checked (cheap enough for a status panel); `load` reads the content.
    """
    path = Path(path)
    if path.is_dir():
        return f"a folder, not the {CHECKPOINT_FILE} file: point camera.ckpt_path at the file"
    if not path.is_file():
        return "not found"
    if path.stat().st_size == 0:
        return "empty file (an interrupted download?)"
    return None


def load(settings: MoGeSettings, device: torch.device | str, dtype: torch.dtype) -> MoGe:
    """Load MoGe-2 from ``settings.ckpt_path`` (``model.pt``) with a strict key check.

    Args:
        settings: checkpoint file and resolution level (the ``camera`` config section).
        device: where the model runs.
        dtype: autocast precision on CUDA (``torch.float32``, ``torch.float16`` or ``torch.bfloat16``).

    Returns:
        A `MoGe` in eval mode on ``device``.

    Raises:
        CheckpointError: the file is missing, empty or a folder (see `checkpoint_problem`), unreadable,
            of the wrong layout, or its keys or shapes do not fit the model.
    """
    from moge.model.v2 import MoGeModel
    from transformers.initialization import no_init_weights

    path = Path(settings.ckpt_path)
    resolution_level = settings.resolution_level
    fix = f"run `{setup_hint(path.parent.parent)}` to download it"
    problem = checkpoint_problem(path)
    if problem is not None:
        raise CheckpointError(path, f"MoGe-2 checkpoint {path}: {problem}; {fix}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(path, f"cannot read MoGe-2 checkpoint {path} ({exc}); {fix}") from exc
    if not isinstance(ckpt, dict) or not {"model_config", "model"} <= ckpt.keys():
        got = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(
            path,
            f"{path} is not a MoGe-2 checkpoint: expected a dict with 'model_config' and 'model', got {got}; {fix}",
        )
    try:
        # Weights are all replaced by the checked load below: skip the random initialisation.
        with no_init_weights():
            model = MoGeModel(**ckpt["model_config"])
    except Exception as exc:
        raise CheckpointError(
            path, f"{path}: model_config does not build a MoGe-2 model ({exc}); {fix}"
        ) from exc
    try:
        result = model.load_state_dict(ckpt["model"], strict=False)
    except RuntimeError as exc:  # shape mismatches raise even with strict=False
        raise CheckpointError(path, f"{path}: weights do not fit the model ({exc}); {fix}") from exc
    problems = []
    if result.missing_keys:
        problems.append(f"missing keys {format_keys(result.missing_keys)}")
    if result.unexpected_keys:
        problems.append(f"unexpected keys {format_keys(result.unexpected_keys)}")
    if problems:
        raise CheckpointError(path, f"{path} does not match the MoGe-2 model: {'; '.join(problems)}; {fix}")
    device = torch.device(device)
    model = model.to(device).eval()
    log.info("Loaded MoGe-2 from %s on %s (resolution level %d)", path, device, resolution_level)
    return MoGe(model, device, dtype, resolution_level)
