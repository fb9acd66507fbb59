"""Architecture settings of SAM-3D-Body, read from the checkpoint's ``model_config.yaml``.

Part of the body4d port of SAM 3D Body (Meta Platforms, Inc.), covered by the SAM License
(see LICENSE-SAM at the repository root).

Only the settings the inference path depends on are read; every other value the released
config fixes (decoder type ``sam``, ``cliff`` conditioning, keypoint-token update ``v2``,
mask embedding ``v2``, ...) is checked and rejected when different, so a config this port
cannot reproduce fails at load time instead of running with silently different maths.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# model_config.yaml of facebook/sam-3d-body-dinov3 as released (used to size the full model
# without downloading it: FLOP counts, key-layout checks).
RELEASED_MODEL_CONFIG: dict[str, Any] = yaml.safe_load(
    """
TRAIN: {USE_FP16: true, FP16_TYPE: float16}
MODEL:
  IMAGE_SIZE: [512, 512]
  IMAGE_MEAN: [0.485, 0.456, 0.406]
  IMAGE_STD: [0.229, 0.224, 0.225]
  BACKBONE: {TYPE: dinov3_vith16plus, PRETRAINED_WEIGHTS: '', FROZEN_STAGES: -1, DROP_PATH_RATE: 0.1}
  DECODER: {TYPE: sam, DIM: 1024, DEPTH: 6, HEADS: 8, MLP_DIM: 1024, DIM_HEAD: 64, LAYER_SCALE_INIT: 0.0,
    DROP_RATE: 0.0, ATTN_DROP_RATE: 0.0, DROP_PATH_RATE: 0.0, FFN_TYPE: origin, ENABLE_TWOWAY: false,
    REPEAT_PE: true, FROZEN: false, CONDITION_TYPE: cliff, USE_INTRIN_CENTER: true, DO_INTERM_PREDS: true,
    DO_INTERM_SUP: true, DO_KEYPOINT_TOKENS: true, DO_HAND_DETECT_TOKENS: true, KEYPOINT_TOKEN_UPDATE: v2,
    KEYPOINT_TOKEN_UPDATE_COORD_EMB_USE_MLP: true, DO_KEYPOINT3D_TOKENS: true}
  PROMPT_ENCODER: {ENABLE: true, MAX_NUM_CLICKS: 2, PROMPT_KEYPOINTS: mhr70, FROZEN: false,
    KEYPOINT_SAMPLER: {TYPE: v1, WORST_RATIO: 0.8, KEYBODY_RATIO: 0.8, NEGATIVE_RATIO: 0.1,
      DUMMY_RATIO: 0.1, DISTANCE_THRESH: 0.0001}, MASK_EMBED_TYPE: v2, MASK_PROMPT: v1}
  PERSON_HEAD: {POSE_TYPE: mhr, CAMERA_ENABLE: true, CAMERA_TYPE: perspective, ZERO_POSE_INIT: true,
    ZERO_POSE_INIT_BODY_FACTOR: 1}
  MHR_HEAD: {MLP_DEPTH: 2, MLP_CHANNEL_DIV_FACTOR: 1}
  CAMERA_HEAD: {MLP_DEPTH: 2, MLP_CHANNEL_DIV_FACTOR: 1, DEFAULT_SCALE_FACTOR_HAND: 10}
  ENABLE_BODY: true
  ENABLE_HAND: true
"""
)

# Backbone presets this port knows: name -> (hidden size, layers, heads, SwiGLU, registers).
# ``dinov3_vith16plus`` is the released checkpoint; FFN ratio 6 with SwiGLU gives 5120 hidden
# units after the hub's 2/3 rule aligned to 8.
DINOV3_PRESETS: dict[str, tuple[int, int, int, bool, int]] = {
    "dinov3_vith16plus": (1280, 32, 20, True, 4),
    "dinov3_vitl16": (1024, 24, 16, False, 4),
    "dinov3_vitb16": (768, 12, 12, False, 4),
    "dinov3_vits16": (384, 12, 6, False, 4),
}

# (section, key) -> the only value this port implements.
_FIXED: dict[tuple[str, ...], Any] = {
    ("DECODER", "TYPE"): "sam",
    ("DECODER", "ENABLE_TWOWAY"): False,
    ("DECODER", "REPEAT_PE"): True,
    ("DECODER", "CONDITION_TYPE"): "cliff",
    ("DECODER", "USE_INTRIN_CENTER"): True,
    ("DECODER", "DO_INTERM_PREDS"): True,
    ("DECODER", "DO_KEYPOINT_TOKENS"): True,
    ("DECODER", "DO_KEYPOINT3D_TOKENS"): True,
    ("DECODER", "DO_HAND_DETECT_TOKENS"): True,
    ("DECODER", "KEYPOINT_TOKEN_UPDATE"): "v2",
    ("DECODER", "FFN_TYPE"): "origin",
    ("PROMPT_ENCODER", "ENABLE"): True,
    ("PROMPT_ENCODER", "MASK_EMBED_TYPE"): "v2",
    ("PROMPT_ENCODER", "PROMPT_KEYPOINTS"): "mhr70",
    ("PERSON_HEAD", "POSE_TYPE"): "mhr",
    ("PERSON_HEAD", "CAMERA_TYPE"): "perspective",
}


@dataclass(frozen=True)
class BackboneConfig:
    """DINOv3 ViT shape.

    Attributes:
        hidden_size: token width (1280 for ViT-H+/16).
        num_layers: transformer blocks.
        num_heads: attention heads (head dim = hidden_size / num_heads).
        gated_mlp: SwiGLU FFN (True for H+) instead of a GELU MLP.
        num_registers: register ("storage") tokens after the CLS token.
        intermediate_size: FFN hidden width.
        patch_size: pixels per patch side.
        rope_theta: RoPE base period.
        layer_norm_eps: epsilon of every backbone LayerNorm.
    """

    hidden_size: int
    num_layers: int
    num_heads: int
    gated_mlp: bool
    num_registers: int
    intermediate_size: int
    patch_size: int = 16
    rope_theta: float = 100.0
    layer_norm_eps: float = 1e-5


@dataclass(frozen=True)
class ModelConfig:
    """Everything the port needs from ``model_config.yaml``.

    Attributes:
        image_size: crop side in pixels (512 for the release; crops are square).
        image_mean: per-channel RGB mean on the [0, 1] scale.
        image_std: per-channel RGB std on the [0, 1] scale.
        backbone: DINOv3 shape.
        decoder_dim: token width of the promptable decoders.
        decoder_depth: decoder layers (each one also yields an intermediate MHR prediction).
        decoder_heads: attention heads of the decoders.
        decoder_head_dim: width per decoder head.
        decoder_mlp_dim: hidden width of the decoder FFN.
        head_mlp_depth: linear layers in the MHR and camera heads.
        head_mlp_div: hidden width divisor of those heads.
        hand_camera_scale: box-size multiplier of the hand camera head (10 in the release).
    """

    image_size: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    backbone: BackboneConfig
    decoder_dim: int
    decoder_depth: int
    decoder_heads: int
    decoder_head_dim: int
    decoder_mlp_dim: int
    head_mlp_depth: int
    head_mlp_div: int
    hand_camera_scale: float


def swiglu_hidden_size(hidden_size: int, ffn_ratio: float, align: int = 8) -> int:
    """Hidden width of the DINOv3 hub SwiGLU FFN: 2/3 of ``hidden_size * ffn_ratio``, aligned up."""
    d = int(int(hidden_size * ffn_ratio) * 2 / 3)
    return d + (-d % align)


def backbone_config(name: str) -> BackboneConfig:
    """The backbone shape for a hub model name such as ``dinov3_vith16plus``.

    Raises:
        ValueError: for a name this port has no preset for.
    """
    if name not in DINOV3_PRESETS:
        raise ValueError(f"unsupported SAM-3D-Body backbone {name!r}; supported: {sorted(DINOV3_PRESETS)}")
    dim, depth, heads, gated, regs = DINOV3_PRESETS[name]
    inter = swiglu_hidden_size(dim, 6.0) if gated else dim * 4
    return BackboneConfig(dim, depth, heads, gated, regs, inter)


def parse_model_config(raw: dict[str, Any], backbone: BackboneConfig | None = None) -> ModelConfig:
    """Build a :class:`ModelConfig` from the parsed YAML mapping.

    Args:
        raw: the YAML content (top-level keys ``MODEL`` and ``TRAIN``).
        backbone: overrides the preset named by ``MODEL.BACKBONE.TYPE`` (tiny test models).

    Raises:
        ValueError: when a setting differs from what this port implements, naming it.
    """
    model = raw["MODEL"]
    for path, expected in _FIXED.items():
        section, key = path
        value = model.get(section, {}).get(key, expected)
        if value != expected:
            raise ValueError(
                f"model_config.yaml: MODEL.{section}.{key}={value!r}; this port supports only {expected!r}"
            )
    size = model["IMAGE_SIZE"]
    if size[0] != size[1]:
        raise ValueError(
            f"model_config.yaml: IMAGE_SIZE {size} is not square; the port supports square crops"
        )
    dec = model["DECODER"]
    return ModelConfig(
        image_size=int(size[0]),
        image_mean=tuple(float(v) for v in model["IMAGE_MEAN"]),  # type: ignore[arg-type]
        image_std=tuple(float(v) for v in model["IMAGE_STD"]),  # type: ignore[arg-type]
        backbone=backbone or backbone_config(model["BACKBONE"]["TYPE"]),
        decoder_dim=int(dec["DIM"]),
        decoder_depth=int(dec["DEPTH"]),
        decoder_heads=int(dec["HEADS"]),
        decoder_head_dim=int(dec["DIM_HEAD"]),
        decoder_mlp_dim=int(dec["MLP_DIM"]),
        head_mlp_depth=int(model.get("MHR_HEAD", {}).get("MLP_DEPTH", 1)),
        head_mlp_div=int(model.get("MHR_HEAD", {}).get("MLP_CHANNEL_DIV_FACTOR", 1)),
        hand_camera_scale=float(model.get("CAMERA_HEAD", {}).get("DEFAULT_SCALE_FACTOR_HAND", 1.0)),
    )


def read_model_config(path: Path) -> tuple[ModelConfig, dict[str, Any]]:
    """Read ``model_config.yaml``; returns the parsed config and the raw mapping.

    A ``BODY4D_BACKBONE`` section (written only by body4d's tiny test checkpoints) gives an
    explicit backbone shape instead of a named preset.
    """
    raw = yaml.safe_load(Path(path).read_text())
    override = raw.get("BODY4D_BACKBONE")
    backbone = BackboneConfig(**override) if override else None
    return parse_model_config(raw, backbone), raw
