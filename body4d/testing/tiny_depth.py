"""A tiny random Depth Anything V2 checkpoint in the layout of ``depth-anything/Depth-Anything-V2-Large-hf``.

The Hub snapshot holds ``config.json`` (``model_type: depth_anything`` with a nested ``dinov2`` backbone
config, ``depth_estimation_type: relative``, written by transformers 4.4x), ``model.safetensors`` (fp32)
and ``preprocessor_config.json`` (a ``DPTImageProcessor``). Its weights carry the key names of the 2024
conversion script: the DINOv2 attention is ``attention.attention.{query,key,value}`` and
``attention.output.dense``, which transformers 5 renames on load to ``attention.{q,k,v,o}_proj``
(its checkpoint conversion mapping for ``Dinov2Model``). We write the same three files at tiny size,
the weights under those legacy names (through ``safetensors`` directly: ``save_pretrained`` would
write the new names), so `models.depth.load` is tested on what the real folder contains.

The model is the real ``DepthAnythingForDepthEstimation`` with the real neck (four reassemble levels,
factors 4, 2, 1, 0.5 as in every V2 size): a 4-layer, 32-wide DINOv2 (one layer per tapped level, as
ViT-L taps layers 5, 12, 18 and 24) and 8-channel fusion (the full-resolution convolutions of the neck
and head dominate the CPU time). transformers' default initialisation (std 0.02) makes the output
almost zero (~1e-7); weights are redrawn with unit-gain scaling and the head's last bias is positive,
so the relative depth is of order one and varies with the input.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation

from models.depth import CONFIG_FILE, IMAGENET_MEAN, IMAGENET_STD, INPUT_SIZE, PATCH_MULTIPLE, WEIGHTS_FILE
from models.errors import TINY_MARKER

DEPTH_DIR = "depth-anything-v2-large-hf"
PREPROCESSOR_FILE = "preprocessor_config.json"
SEED = 0
# Bias of head.conv3 (the last conv before the ReLU): keeps most of the tiny model's output positive.
_HEAD_BIAS = 0.5

_HIDDEN = 32
_LAYERS = 4
# transformers 5 parameter name -> name in the Hub file (the 2024 converter's). transformers maps
# them back on load; every other key has the same name in both.
LEGACY_NAMES = {
    ".attention.q_proj.": ".attention.attention.query.",
    ".attention.k_proj.": ".attention.attention.key.",
    ".attention.v_proj.": ".attention.attention.value.",
    ".attention.o_proj.": ".attention.output.dense.",
}

# config.json as transformers 4.4x wrote it for the Hub repository (same keys, tiny sizes; ViT-L is
# hidden 1024, 16 heads, 24 layers, out_indices 5/12/18/24, neck 256/512/1024/1024, fusion 256).
TINY_DEPTH_CONFIG: dict[str, Any] = {
    "_name_or_path": "depth-anything/Depth-Anything-V2-Large-hf",
    "architectures": ["DepthAnythingForDepthEstimation"],
    "backbone": None,
    "backbone_config": {
        "architectures": ["Dinov2Model"],
        "hidden_size": _HIDDEN,
        "image_size": INPUT_SIZE,
        "mlp_ratio": 2,
        "model_type": "dinov2",
        "num_attention_heads": 2,
        "num_hidden_layers": _LAYERS,
        "out_features": [f"stage{i}" for i in range(1, _LAYERS + 1)],
        "out_indices": list(range(1, _LAYERS + 1)),
        "patch_size": PATCH_MULTIPLE,
        "reshape_hidden_states": False,
        "torch_dtype": "float32",
    },
    "backbone_kwargs": None,
    "depth_estimation_type": "relative",
    "fusion_hidden_size": 8,
    "head_hidden_size": 4,
    "head_in_index": -1,
    "initializer_range": 0.02,
    "model_type": "depth_anything",
    "neck_hidden_sizes": [8, 8, 16, 16],
    "patch_size": PATCH_MULTIPLE,
    "reassemble_factors": [4, 2, 1, 0.5],
    "reassemble_hidden_size": _HIDDEN,
    "torch_dtype": "float32",
    "transformers_version": "4.42.0.dev0",
    "use_pretrained_backbone": False,
    "use_timm_backbone": False,
}

# preprocessor_config.json of the Hub repository (body4d does its own resize, see models.depth).
PREPROCESSOR_CONFIG: dict[str, Any] = {
    "do_normalize": True,
    "do_pad": False,
    "do_rescale": True,
    "do_resize": True,
    "ensure_multiple_of": PATCH_MULTIPLE,
    "image_mean": list(IMAGENET_MEAN),
    "image_processor_type": "DPTImageProcessor",
    "image_std": list(IMAGENET_STD),
    "keep_aspect_ratio": True,
    "resample": 3,
    "rescale_factor": 1 / 255,
    "size": {"height": INPUT_SIZE, "width": INPUT_SIZE},
    "size_divisor": None,
}


def to_legacy_name(key: str) -> str:
    """The name a transformers 5 ``DepthAnythingForDepthEstimation`` parameter has in the Hub file."""
    for new, old in LEGACY_NAMES.items():
        key = key.replace(new, old)
    return key


def build_tiny_depth() -> DepthAnythingForDepthEstimation:
    """The tiny model with seeded weights (see the module docstring)."""
    model = DepthAnythingForDepthEstimation(DepthAnythingConfig.from_dict(TINY_DEPTH_CONFIG))
    generator = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim >= 2:  # linear/conv kernels and embeddings; norms and biases keep their init
                fan_in = param[0].numel()
                param.copy_(torch.randn(param.shape, generator=generator) / fan_in**0.5)
        model.head.conv3.bias.fill_(_HEAD_BIAS)
    return model.eval()


def write_tiny_depth(root: Path) -> None:
    """Write ``root/depth-anything-v2-large-hf/`` (config, legacy-named fp32 weights, preprocessor, marker).

    Args:
        root: a checkpoint root (``paths.ckpt_root``); created if missing.
    """
    folder = Path(root) / DEPTH_DIR
    folder.mkdir(parents=True, exist_ok=True)
    state = {to_legacy_name(k): v.contiguous() for k, v in build_tiny_depth().state_dict().items()}
    save_file(state, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    (folder / CONFIG_FILE).write_text(json.dumps(TINY_DEPTH_CONFIG, indent=2) + "\n", encoding="utf-8")
    (folder / PREPROCESSOR_FILE).write_text(
        json.dumps(PREPROCESSOR_CONFIG, indent=2) + "\n", encoding="utf-8"
    )
    (folder / TINY_MARKER).touch()
