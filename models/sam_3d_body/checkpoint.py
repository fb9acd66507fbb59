"""Strict loading of the released SAM-3D-Body checkpoint folder.

Part of the body4d port of SAM 3D Body (Meta Platforms, Inc.), covered by the SAM License
(see LICENSE-SAM).

``model.ckpt`` keys are mapped deterministically onto this port: the DINOv3 encoder through
:func:`.backbone.hub_to_hf`, the duplicated body/hand modules by their top-level name
(:data:`BRANCH_NAMES`), everything else as-is. A small, named set of entries that inference
does not use is accepted and dropped (:data:`UNUSED`). Any other difference -- a missing key,
an unexpected key or a shape mismatch -- raises with the full list.
"""

from __future__ import annotations

import logging
import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from transformers.initialization import no_init_weights

from models.devices import DTYPE_NAMES, DTYPES
from models.errors import CheckpointError, setup_hint

from .backbone import HF_PREFIX, HUB_PREFIX, hf_to_hub, hub_to_hf
from .config import ModelConfig, read_model_config
from .network import SAM3DBodyNet
from .predictor import SAM3DBody

log = logging.getLogger(__name__)

# Encoder precisions this port runs (fp16 is refused, see FP16_REFUSED).
ENCODER_DTYPES = ("fp32", "bf16")
# Why the encoder never runs in fp16 (the reference casts it to fp16; we do not follow it there).
FP16_REFUSED = (
    "SAM-3D-Body's DINOv3 encoder does not run in fp16: with the released weights its block outputs "
    "reach ~3.1e4, within a factor of two of fp16's maximum (65,504), so an unusual crop overflows "
    "to inf and the meshes turn NaN silently. Use bf16 (same range as fp32; the default on CUDA "
    "GPUs that support it) or fp32 (GPUs without bf16, e.g. T4/V100, and CPUs)."
)
# Accepted person-pixel values of the mask prompt (see Sam3DBodyConfig.mask_value).
MASK_VALUES = (1, 255)

# Released top-level module name -> this port's name (body branch, then hand branch).
BRANCH_NAMES: dict[str, str] = {}
for _released, _ours in {
    "init_pose": "init_pose",
    "init_camera": "init_camera",
    "init_to_token_mhr": "init_to_token",
    "prev_to_token_mhr": "prev_to_token",
    "ray_cond_emb": "ray_encoder",
    "decoder": "decoder",
    "keypoint_embedding": "keypoint2d_tokens",
    "keypoint3d_embedding": "keypoint3d_tokens",
    "keypoint_posemb_linear": "keypoint2d_pe",
    "keypoint3d_posemb_linear": "keypoint3d_pe",
    "keypoint_feat_linear": "keypoint_feat",
    "head_pose": "pose_head",
    "head_camera": "camera_head",
}.items():
    BRANCH_NAMES[_released] = f"body.{_ours}"
    BRANCH_NAMES[f"{_released}_hand"] = f"hand.{_ours}"

# Released entries inference never reads, with the reason they are dropped.
UNUSED: dict[str, str] = {
    r"hand_cls_embed\.(weight|bias)": "hand-presence logits, not used at inference",
    r"head_pose(_hand)?\.hand_pose_comps_ori": "copy of the hand PCA basis kept by the training code",
}


@dataclass(frozen=True)
class PortWeights:
    """A released ``model.ckpt`` mapped onto this port.

    Attributes:
        state_dict: entries keyed by this port's names (unused entries dropped).
        rope_periods: the encoder's stored RoPE periods, float32 (None if absent).
        filled: released keys absent from the file that were filled with their inference value.
        problems: entries that cannot be mapped, one sentence each.
    """

    state_dict: dict[str, torch.Tensor]
    rope_periods: torch.Tensor | None
    filled: tuple[str, ...]
    problems: tuple[str, ...]


def to_port_state_dict(sd: dict[str, torch.Tensor], cfg: ModelConfig) -> PortWeights:
    """Released ``model.ckpt`` state dict -> this port's key names (unused entries dropped)."""
    encoder = hub_to_hf({k: v for k, v in sd.items() if k.startswith(HUB_PREFIX)}, cfg.backbone)
    out = dict(encoder.weights)
    for key, value in sd.items():
        if key.startswith(HUB_PREFIX) or any(re.fullmatch(p, key) for p in UNUSED):
            continue
        top, _, rest = key.partition(".")
        out[f"{BRANCH_NAMES[top]}.{rest}" if top in BRANCH_NAMES else key] = value
    return PortWeights(out, encoder.rope_periods, encoder.filled, encoder.problems)


def to_released_state_dict(net: SAM3DBodyNet) -> dict[str, torch.Tensor]:
    """This port's weights in the released ``model.ckpt`` layout (inverse of the load map).

    Dropped entries are written back: ``hand_cls_embed`` as zeros, ``hand_pose_comps_ori`` as
    a copy of ``hand_pose_comps``.
    """
    inverse = {v: k for k, v in BRANCH_NAMES.items()}
    sd = net.state_dict()
    out = hf_to_hub({k: v for k, v in sd.items() if k.startswith(HF_PREFIX)}, net.cfg.backbone)
    for key, value in sd.items():
        if key.startswith(HF_PREFIX):
            continue
        branch, _, rest = key.partition(".")
        name, _, tail = rest.partition(".")
        prefix = f"{branch}.{name}"
        out[f"{inverse[prefix]}.{tail}" if prefix in inverse else key] = value
    d = net.cfg.decoder_dim
    out["hand_cls_embed.weight"] = torch.zeros(2, d)
    out["hand_cls_embed.bias"] = torch.zeros(2)
    for head in ("head_pose", "head_pose_hand"):
        out[f"{head}.hand_pose_comps_ori"] = out[f"{head}.hand_pose_comps"].clone()
    return out


def check_keys(net: SAM3DBodyNet, weights: PortWeights, source: Path | str) -> None:
    """Raise ValueError listing every problem: unmappable entries, missing keys, unexpected keys
    and shape mismatches.

    Args:
        net: the model (may live on the meta device).
        weights: the checkpoint mapped with :func:`to_port_state_dict`.
        source: the checkpoint path, for the message.
    """
    sd = weights.state_dict
    want = net.state_dict()
    missing = sorted(set(want) - set(sd))
    unexpected = sorted(set(sd) - set(want))
    shapes = sorted(
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(want[k].shape)}"
        for k in set(want) & set(sd)
        if sd[k].shape != want[k].shape
    )
    if weights.problems or missing or unexpected or shapes:
        parts = [f"{source} does not match the SAM-3D-Body architecture of its model_config.yaml:"]
        for title, keys in (
            ("encoder entries", list(weights.problems)),
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", shapes),
        ):
            if keys:
                parts.append(f"{title} ({len(keys)}): " + ", ".join(keys))
        raise CheckpointError(source, "\n".join(parts))


def _setup(path: Path) -> str:
    """The setup command for the checkpoint root above ``path``'s ``sam-3d-body-dinov3`` folder."""
    folder = path.parent.parent if path.parent.name == "assets" else path.parent
    return setup_hint(folder.parent)


def _require(path: Path, what: str) -> None:
    if not path.is_file():
        raise CheckpointError(
            path, f"SAM-3D-Body {what} not found: {path}. Download the checkpoints with: {_setup(path)}"
        )


def backbone_dtype(name: str, device: str | torch.device) -> str:
    """The encoder precision to use: ``"auto"`` -> bf16 on a bf16-capable CUDA device, else fp32.

    Raises:
        ValueError: fp16 or an unknown name (see :data:`FP16_REFUSED`).
    """
    if name == "fp16":
        raise ValueError(FP16_REFUSED)
    if name == "auto":
        device = torch.device(device)
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if name not in ENCODER_DTYPES:
        raise ValueError(f"SAM-3D-Body dtype must be auto, fp32 or bf16, got {name!r}")
    return name


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors: a flat dict (the release) or Lightning's ``{"state_dict": ...}``.

    Read with ``weights_only`` (no code from the file runs) and memory-mapped when the file
    allows it, so the 2.1 GB release is not copied into RAM before the load.
    """
    try:
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) serialisation cannot be memory-mapped
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        why = (
            "not a plain PyTorch file of tensors"
            if isinstance(exc, pickle.UnpicklingError)
            else str(exc).strip().splitlines()[0][:200]
        )
        raise CheckpointError(
            path,
            f"{path} is not a readable SAM-3D-Body checkpoint ({why}); download it again with: {_setup(path)}",
        ) from exc
    sd = raw.get("state_dict", raw) if isinstance(raw, dict) else None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(
            path, f"{path} holds no state dict of tensors; download it again with: {_setup(path)}"
        )
    return sd


def load_sam3dbody(
    ckpt_path: str | Path,
    config_path: str | Path,
    mhr_path: str | Path,
    *,
    bbox_padding: float,
    mask_value: int,
    device: str | torch.device = "cpu",
    dtype: str = "fp32",
) -> SAM3DBody:
    """Load the released SAM-3D-Body folder strictly.

    Takes the released ``model.ckpt`` as it is (research/real-checkpoints.md): a flat dict of
    1,127 tensors with a bf16 encoder and fp32 heads, all-zero qkv bias masks (applied), RoPE
    periods rounded to bf16 (used as stored), no ``mask_token`` (filled with zeros, logged) and
    head buffers shared between the body and hand heads. Anything else that differs is refused
    with the full list.

    Args:
        ckpt_path: ``model.ckpt`` (a flat state dict, or a Lightning checkpoint with ``state_dict``).
        config_path: ``model_config.yaml``.
        mhr_path: ``assets/mhr_model.pt`` (TorchScript MHR body model).
        device: torch device for every weight.
        dtype: "fp32", "bf16" or "auto" (see :func:`backbone_dtype`) for the DINOv3 encoder
            (about 90 % of the compute); decoders, heads and MHR stay float32 as released.
            fp16 is refused (:data:`FP16_REFUSED`).
        bbox_padding: person box padding factor before cropping.
        mask_value: value of a person pixel in the mask prompt (1 or 255).
    Raises:
        CheckpointError: a file is missing or unreadable, or any key/shape mismatch (the message
            names the file and the fix).
        ValueError: unsupported dtype, mask value or model config.
    """
    ckpt_path, config_path, mhr_path = Path(ckpt_path), Path(config_path), Path(mhr_path)
    for path, what in ((ckpt_path, "checkpoint"), (config_path, "model config"), (mhr_path, "MHR model")):
        _require(path, what)
    dtype = backbone_dtype(dtype, device)
    if mask_value not in MASK_VALUES:
        raise ValueError(f"mask_value must be one of {MASK_VALUES}, got {mask_value!r}")
    cfg, _ = read_model_config(config_path)
    weights = to_port_state_dict(_read_state_dict(ckpt_path), cfg)
    with torch.device("meta"):
        net = SAM3DBodyNet(cfg)
    check_keys(net, weights, ckpt_path)
    if weights.filled:
        log.info(
            "%s has no %s (unused at inference): filled with zeros", ckpt_path, ", ".join(weights.filled)
        )
    # Every parameter is overwritten by the strict load below, so skip the random initialisation
    # (27 s -> 0.1 s for the released 941 M-parameter model on a 2-core CPU).
    with no_init_weights():
        net = SAM3DBodyNet(cfg)
    net.load_state_dict(weights.state_dict, strict=True)
    net.backbone.to(DTYPES[dtype])
    net.to(device).eval().requires_grad_(False)
    net.backbone.use_rope_periods(weights.rope_periods)
    with warnings.catch_warnings():  # MHR ships as TorchScript; torch marks jit.load deprecated
        warnings.simplefilter("ignore", FutureWarning)
        mhr = torch.jit.load(str(mhr_path), map_location=device).eval()
    log.info("loaded SAM-3D-Body from %s (%s, backbone %s)", ckpt_path, device, dtype)
    return SAM3DBody(net, mhr, bbox_padding, mask_value)


class SAM3DBodySettings(Protocol):
    """The settings this adapter reads: the ``sam_3d_body`` config section (``body4d.config``).

    Attributes:
        ckpt_path: ``model.ckpt``; config_path: ``model_config.yaml``; mhr_path: ``mhr_model.pt``.
        bbox_padding: person box padding factor before cropping.
        mask_value: value of a person pixel in the mask prompt (1 or 255).
    """

    @property
    def ckpt_path(self) -> str: ...
    @property
    def config_path(self) -> str: ...
    @property
    def mhr_path(self) -> str: ...
    @property
    def bbox_padding(self) -> float: ...
    @property
    def mask_value(self) -> int: ...


def load(settings: SAM3DBodySettings, device: torch.device | str, dtype: torch.dtype) -> SAM3DBody:
    """`load_sam3dbody` from a settings section; ``dtype`` is the encoder's (see `backbone_dtype`)."""
    return load_sam3dbody(
        settings.ckpt_path,
        settings.config_path,
        settings.mhr_path,
        device=device,
        dtype=DTYPE_NAMES[dtype],
        bbox_padding=settings.bbox_padding,
        mask_value=settings.mask_value,
    )
