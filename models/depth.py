"""Depth Anything V2 adapter: the relative-depth condition of Diffusion-VAS's amodal segmentation.

The checkpoint ``${paths.ckpt_root}/depth-anything-v2-large-hf`` is a snapshot of the Hub repository
``depth-anything/Depth-Anything-V2-Large-hf`` (CC-BY-NC-4.0): ``config.json``, ``model.safetensors``
and ``preprocessor_config.json``. It loads into transformers' ``DepthAnythingForDepthEstimation``, which
is the original network (outputs match to 3e-8 at 518x518). The file keeps the key names of the 2024
conversion script (``attention.attention.query``, ``attention.output.dense``, ...), which transformers 5
renames on load; the load is strict (no missing, unexpected or mismatched weight) and offline.

Preprocessing is ours, not ``DPTImageProcessor``: the processor keeps small frames small (a 256x512
frame runs at 252x518), whereas the original ``DepthAnythingV2.image2tensor`` that Diffusion-VAS calls
scales the short side up to 518 (518x1036). `network_input_size` reproduces the original rule.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from models.errors import CheckpointError, format_keys, setup_hint

if TYPE_CHECKING:
    from transformers import DepthAnythingForDepthEstimation

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
# The files transformers opens to build the network (preprocessor_config.json is not used: see above).
CHECKPOINT_FILES = (CONFIG_FILE, WEIGHTS_FILE)
# The original repository's checkpoint (Diffusion-VAS's README downloads it): transformers cannot load it.
ORIGINAL_CHECKPOINT = "depth_anything_v2_vitl.pth"
EXPECTED_MODEL_TYPE = "depth_anything"
# Diffusion-VAS conditions on the relative model (inverse depth); a metric model predicts metres.
EXPECTED_ESTIMATION_TYPE = "relative"

# DA-V2's `infer_image(input_size=518)`: the short side of the network input, in pixels.
INPUT_SIZE = 518
# Both sides of the network input are multiples of the ViT patch size.
PATCH_MULTIPLE = 14
# ImageNet statistics of DA-V2's NormalizeImage, applied to [0, 1] channels in the order fed.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Frames per forward pass: ViT-L at 518x1036 needs ~1 GB of activations per frame in fp16.
DEFAULT_BATCH_SIZE = 4
_UINT8_MAX = 255.0


def network_input_size(height: int, width: int) -> tuple[int, int]:
    """The (height, width) at which DA-V2 sees a ``height x width`` frame: its "lower_bound" resize rule.

    The scale brings the short side to `INPUT_SIZE` (upsampling small frames too), keeping the aspect
    ratio. Each scaled side is then rounded to the nearest multiple of `PATCH_MULTIPLE`, or rounded up
    when the nearest one is below `INPUT_SIZE` (the original ``Resize.constrain_to_multiple_of`` with
    ``min_val=518``; ``round`` halves to even like its ``np.round``). Examples: 64x128 and 512x1024 ->
    518x1036, 480x854 -> 518x924, 480x640 -> 518x686.
    """
    scale = INPUT_SIZE / min(height, width)

    def side(length: int) -> int:
        x = scale * length / PATCH_MULTIPLE
        nearest = round(x) * PATCH_MULTIPLE
        return nearest if nearest >= INPUT_SIZE else math.ceil(x) * PATCH_MULTIPLE

    return side(height), side(width)


class DepthEstimator:
    """A loaded Depth Anything V2 network that predicts relative inverse depth for video frames.

    Build it with `load`. Weights are in ``dtype``; resizing, normalisation and the output upsampling
    run in float32 on ``device``.
    """

    def __init__(
        self,
        model: DepthAnythingForDepthEstimation,
        device: torch.device,
        dtype: torch.dtype,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.model = model
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self._mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)

    def to(self, device: torch.device | str) -> DepthEstimator:
        """Move the network to ``device``, where it then runs (GPU memory plan: `body4d.memory`).

        Returns:
            This estimator.
        """
        self.device = torch.device(device)
        self.model.to(self.device)
        self._mean, self._std = self._mean.to(self.device), self._std.to(self.device)
        return self

    def predict(self, frames: np.ndarray, size: tuple[int, int], *, legacy_bgr: bool) -> np.ndarray:
        """Relative inverse depth of each frame, as DA-V2's ``infer_image`` computes it.

        Each frame is scaled to `network_input_size` (bicubic, no antialiasing, like cv2.INTER_CUBIC),
        mapped to [0, 1] and normalised with the ImageNet mean/std; the network runs on
        ``batch_size`` frames at a time, and its output is upsampled bilinearly (align_corners=True)
        to ``size``.

        Args:
            frames: RGB ``uint8[N, H, W, 3]``, N >= 1.
            size: ``(h, w)`` of the output in pixels: the Diffusion-VAS working resolution.
            legacy_bgr: feed the network the channels reversed (B, G, R), as the released Diffusion-VAS
                inference does: its ``rgb_to_depth`` passes RGB frames to ``infer_image``, which expects
                cv2's BGR and converts BGR->RGB, so the network sees BGR. Diffusion-VAS training fed cv2
                BGR images, i.e. correct RGB to the network: ``False``. ``True`` reproduces the
                published inference outputs.

        Returns:
            ``float32[N, h, w]`` relative inverse depth (disparity-like, affine-invariant, >= 0, larger
            means nearer; not metric, not normalised: see `normalise`).

        Raises:
            ValueError: ``frames`` is not ``uint8[N, H, W, 3]`` with N >= 1, or ``size`` is not two
                positive integers.
        """
        _check_frames(frames)
        if len(size) != 2 or not all(isinstance(s, int | np.integer) and s > 0 for s in size):
            raise ValueError(f"size must be (height, width) in positive pixels, got {size!r}")
        out_size = (int(size[0]), int(size[1]))
        depth = np.empty((len(frames), *out_size), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(frames), self.batch_size):
                chunk = frames[start : start + self.batch_size]
                predicted = self.model(pixel_values=self._preprocess(chunk, legacy_bgr)).predicted_depth
                upsampled = F.interpolate(
                    predicted.float()[:, None], out_size, mode="bilinear", align_corners=True
                )[:, 0]
                depth[start : start + len(chunk)] = upsampled.cpu().numpy()
        return depth

    def _preprocess(self, frames: np.ndarray, legacy_bgr: bool) -> torch.Tensor:
        """``uint8[n, H, W, 3]`` -> normalised ``[n, 3, h, w]`` network input in the model's dtype."""
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device).permute(0, 3, 1, 2)
        if legacy_bgr:
            x = x.flip(1)
        x = x.float() / _UINT8_MAX
        x = F.interpolate(x, network_input_size(*frames.shape[1:3]), mode="bicubic", align_corners=False)
        return ((x - self._mean) / self._std).to(self.dtype)


def normalise(depth: np.ndarray) -> np.ndarray:
    """Map relative depth to [-1, 1] with one min/max over all given frames, as Diffusion-VAS expects.

    ``(d - min) / (max - min) * 2 - 1``: the nearest pixel of the clip becomes +1, the farthest -1 (no
    inversion). Diffusion-VAS repeats it to 3 channels and encodes it like an image. A constant input
    (where the original divides by zero) gives zeros.

    Args:
        depth: ``float[N, h, w]`` (any shape) from `DepthEstimator.predict`; the scope of the min/max is
            what the caller passes (a window, a span or the whole video).

    Returns:
        ``float32`` of the same shape in [-1, 1].

    Raises:
        ValueError: ``depth`` is empty or not finite.
    """
    depth = np.asarray(depth, dtype=np.float32)
    if depth.size == 0:
        raise ValueError("no depth values to normalise")
    lo, hi = float(depth.min()), float(depth.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"depth has non-finite values (min {lo}, max {hi})")
    if hi <= lo:
        return np.zeros_like(depth)
    return ((depth - lo) / (hi - lo) * 2.0 - 1.0).astype(np.float32)


def checkpoint_problem(path: str | Path) -> str | None:
    """Why ``path`` is not a Depth-Anything-V2-Large-hf folder, or None when every needed file is there.

    Only presence is checked (cheap enough for a status panel); `load` reads the content. A file of
    0 bytes counts as missing (an interrupted copy).
    """
    path = Path(path)
    if not path.exists():
        return "not found"
    if not path.is_dir():
        return "not a folder"
    missing = [name for name in CHECKPOINT_FILES if not _non_empty_file(path / name)]
    if not missing:
        return None
    problem = f"incomplete, missing {', '.join(missing)}"
    if (path / ORIGINAL_CHECKPOINT).is_file():
        problem += (
            f" ({ORIGINAL_CHECKPOINT} there is the original repository's checkpoint, which transformers "
            "cannot load: the depth-anything/Depth-Anything-V2-Large-hf files are needed)"
        )
    return problem


def load(
    path: str | Path,
    device: torch.device | str,
    dtype: torch.dtype,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> DepthEstimator:
    """Load Depth Anything V2 from a ``Depth-Anything-V2-Large-hf`` folder, strictly and offline.

    Args:
        path: the snapshot folder (``completion.model_path_depth``).
        device: where the network runs.
        dtype: weight and compute precision of the network.
        batch_size: frames per forward pass.

    Returns:
        A `DepthEstimator` in eval mode on ``device``.

    Raises:
        CheckpointError: a file is missing (see `checkpoint_problem`) or unreadable, the config is not
            a relative Depth Anything model, or a weight is missing, unexpected or of the wrong shape
            (the message names the keys, in transformers' names after its legacy renaming, and the fix).
    """
    from safetensors import SafetensorError
    from transformers import DepthAnythingForDepthEstimation

    path = Path(path)
    problem = checkpoint_problem(path)
    if problem is not None:
        raise CheckpointError(path, f"Depth Anything V2 folder {path}: {problem}; {_fix(path)}")
    _check_config(path)
    try:
        # ignore_mismatched_sizes only turns transformers' shape error into loading info, so that the
        # error below can name the keys; any mismatch is refused.
        model, info = DepthAnythingForDepthEstimation.from_pretrained(
            path,
            dtype=dtype,
            local_files_only=True,
            output_loading_info=True,
            ignore_mismatched_sizes=True,
        )
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as exc:
        raise CheckpointError(
            path, f"cannot load Depth Anything V2 from {path} ({exc}); {_fix(path, again=True)}"
        ) from exc
    mismatched = [
        f"{key} (file {list(ours)}, model {list(theirs)})" for key, ours, theirs in info["mismatched_keys"]
    ]
    problems = [
        f"{what} {format_keys(keys)}"
        for what, keys in (
            ("missing keys", info["missing_keys"]),
            ("unexpected keys", info["unexpected_keys"]),
            ("mismatched shapes", mismatched),
        )
        if keys
    ]
    problems += [str(message) for message in info.get("error_msgs") or []]
    if problems:
        raise CheckpointError(
            path,
            f"{path / WEIGHTS_FILE} does not match the Depth Anything V2 model of {path / CONFIG_FILE}: "
            f"{'; '.join(problems)}; {_fix(path, again=True)}",
        )
    device = torch.device(device)
    model = model.to(device).eval()
    log.info("Loaded Depth Anything V2 from %s on %s (%s)", path, device, dtype)
    return DepthEstimator(model, device, dtype, batch_size)


def _check_config(path: Path) -> None:
    """Refuse a ``config.json`` that is not a relative-depth ``depth_anything`` model."""
    fix = _fix(path, again=True)
    try:
        config = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            path, f"{path / CONFIG_FILE} is not a valid JSON config ({exc}); {fix}"
        ) from exc
    if not isinstance(config, dict) or config.get("model_type") != EXPECTED_MODEL_TYPE:
        got = config.get("model_type") if isinstance(config, dict) else type(config).__name__
        raise CheckpointError(
            path,
            f"{path} holds a {got!r} checkpoint, not Depth Anything V2 (model_type {EXPECTED_MODEL_TYPE!r}); {fix}",
        )
    estimation = config.get("depth_estimation_type", EXPECTED_ESTIMATION_TYPE)
    if estimation != EXPECTED_ESTIMATION_TYPE:
        raise CheckpointError(
            path,
            f"{path} is a {estimation!r} depth model; Diffusion-VAS needs the {EXPECTED_ESTIMATION_TYPE!r} "
            f"one (depth-anything/Depth-Anything-V2-Large-hf); {fix}",
        )


def _check_frames(frames: np.ndarray) -> None:
    if (
        not isinstance(frames, np.ndarray)
        or frames.dtype != np.uint8
        or frames.ndim != 4
        or frames.shape[3] != 3
        or frames.shape[0] == 0
    ):
        got = f"{frames.dtype} {frames.shape}" if isinstance(frames, np.ndarray) else type(frames).__name__
        raise ValueError(f"depth expects RGB frames uint8[N, H, W, 3] with N >= 1, got {got}")


def _fix(path: Path, *, again: bool = False) -> str:
    """The fix for a missing folder, or (``again``) for broken files: setup skips a folder it completed."""
    command = f"{setup_hint(path.parent)} --with-completion"
    if again:
        return f"delete {path} and download it again with `{command}`"
    return f"download it with `{command}` or set completion.model_path_depth"


def _non_empty_file(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0
