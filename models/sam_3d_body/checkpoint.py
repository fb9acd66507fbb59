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
import re
import warnings
from pathlib import Path

import torch
from transformers.initialization import no_init_weights

from .backbone import HF_PREFIX, HUB_PREFIX, hf_to_hub, hub_to_hf
from .config import ModelConfig, read_model_config
from .network import SAM3DBodyNet
from .predictor import SAM3DBody

log = logging.getLogger(__name__)

SETUP_HINT = "python scripts/setup.py --ckpt-root DIR"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

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


def to_port_state_dict(sd: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Released ``model.ckpt`` state dict -> this port's key names (unused entries dropped)."""
    out: dict[str, torch.Tensor] = {}
    encoder = {k: v for k, v in sd.items() if k.startswith(HUB_PREFIX)}
    out.update(hub_to_hf(encoder, cfg.backbone))
    for key, value in sd.items():
        if key.startswith(HUB_PREFIX) or any(re.fullmatch(p, key) for p in UNUSED):
            continue
        top, _, rest = key.partition(".")
        out[f"{BRANCH_NAMES[top]}.{rest}" if top in BRANCH_NAMES else key] = value
    return out


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


def check_keys(net: SAM3DBodyNet, sd: dict[str, torch.Tensor], source: Path | str) -> None:
    """Raise ValueError listing every missing key, unexpected key and shape mismatch.

    Args:
        net: the model (may live on the meta device).
        sd: entries already mapped with :func:`to_port_state_dict`.
        source: the checkpoint path, for the message.
    """
    want = net.state_dict()
    missing = sorted(set(want) - set(sd))
    unexpected = sorted(set(sd) - set(want))
    shapes = sorted(
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(want[k].shape)}"
        for k in set(want) & set(sd)
        if sd[k].shape != want[k].shape
    )
    if missing or unexpected or shapes:
        parts = [f"{source} does not match the SAM-3D-Body architecture of its model_config.yaml:"]
        for title, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", shapes),
        ):
            if keys:
                parts.append(f"{title} ({len(keys)}): " + ", ".join(keys))
        raise ValueError("\n".join(parts))


def _require(path: Path, what: str) -> None:
    if not path.is_file():
        raise FileNotFoundError(
            f"SAM-3D-Body {what} not found: {path}. Download the checkpoints with: {SETUP_HINT}"
        )


def load_sam3dbody(
    ckpt_path: str | Path,
    config_path: str | Path,
    mhr_path: str | Path,
    device: str | torch.device = "cpu",
    dtype: str = "fp32",
    bbox_padding: float = 1.25,
) -> SAM3DBody:
    """Load the released SAM-3D-Body folder strictly.

    Args:
        ckpt_path: ``model.ckpt`` (a Lightning checkpoint with ``state_dict`` or a bare state dict).
        config_path: ``model_config.yaml``.
        mhr_path: ``assets/mhr_model.pt`` (TorchScript MHR body model).
        device: torch device for every weight.
        dtype: "fp32", "bf16" or "fp16" for the DINOv3 encoder (about 90 % of the compute);
            decoders, heads and MHR stay float32 as in the released model.
        bbox_padding: person box padding factor before cropping.
    Raises:
        FileNotFoundError: a file is missing (names it and the setup command).
        ValueError: unsupported dtype or config, or any key/shape mismatch.
    """
    ckpt_path, config_path, mhr_path = Path(ckpt_path), Path(config_path), Path(mhr_path)
    for path, what in ((ckpt_path, "checkpoint"), (config_path, "model config"), (mhr_path, "MHR model")):
        _require(path, what)
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    cfg, _ = read_model_config(config_path)
    raw = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    sd = raw.get("state_dict", raw)
    with torch.device("meta"):
        net = SAM3DBodyNet(cfg)
    mapped = to_port_state_dict(sd, cfg)
    check_keys(net, mapped, ckpt_path)
    # Every parameter is overwritten by the strict load below, so skip the random initialisation
    # (27 s -> 0.1 s for the released 941 M-parameter model on a 2-core CPU).
    with no_init_weights():
        net = SAM3DBodyNet(cfg)
    net.load_state_dict(mapped, strict=True)
    net.backbone.to(DTYPES[dtype])
    net.to(device).eval().requires_grad_(False)
    with warnings.catch_warnings():  # MHR ships as TorchScript; torch marks jit.load deprecated
        warnings.simplefilter("ignore", FutureWarning)
        mhr = torch.jit.load(str(mhr_path), map_location=device).eval()
    log.info("loaded SAM-3D-Body from %s (%s, backbone %s)", ckpt_path, device, dtype)
    return SAM3DBody(net, mhr, bbox_padding)
