"""A tiny MoGe-2 checkpoint in the real file layout, for CPU tests of `models.moge`.

The model is the real ``moge.model.v2.MoGeModel`` at its smallest accepted size: the ViT-S/14 backbone
(the smallest vendored DINOv2; its depth is fixed by the backbone name) with random weights, 16-channel
neck and heads without residual blocks, and a 64-token budget so inference takes ~0.1 s on a CPU.

Random heads give a random (often negative) focal. To make the adapter's pixel conversion testable,
the neck and points head are set so that the predicted point map is the view-plane UV grid at depth 1,
i.e. a pinhole camera whose focal is half the image diagonal in pixels (90 degree diagonal FOV), and
the mask head predicts "valid" everywhere. The backbone output is ignored by those heads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from moge.model.v2 import MoGeModel

from models.errors import TINY_MARKER
from models.moge import CHECKPOINT_FILE

MOGE_DIR = "moge-2-vitl-normal"
SEED = 0
# Number of pyramid levels of MoGe-2's neck and heads (base tokens x 1, 2, 4, 8, 16).
_LEVELS = 5
_WIDTH = 16
# Mask-head logit bias: sigmoid(10) ~ 1, so every pixel counts as valid.
_MASK_LOGIT = 10.0
_VITS_DIM = 384
_RESAMPLERS = ["conv_transpose", "conv_transpose", "conv_transpose", "bilinear"]


def _stack(dim_in: list[int | None], dim_out: list[int | None]) -> dict[str, Any]:
    return {
        "dim_in": dim_in,
        "dim_out": dim_out,
        "dim_res_blocks": [_WIDTH] * _LEVELS,
        "num_res_blocks": [0] * _LEVELS,
        "res_block_in_norm": "none",
        "res_block_hidden_norm": "none",
        "resamplers": _RESAMPLERS,
    }


def _head(out_channels: int) -> dict[str, Any]:
    return _stack([_WIDTH] * _LEVELS, [None] * (_LEVELS - 1) + [out_channels])


# Level 0 of the neck gets backbone features + 2 UV channels; levels 1-4 get the UV grid only.
TINY_MOGE_CONFIG: dict[str, Any] = {
    "encoder": {"backbone": "dinov2_vits14", "intermediate_layers": 4, "dim_out": _WIDTH},
    "neck": _stack([_WIDTH + 2] + [2] * (_LEVELS - 1), [None] * _LEVELS),
    "points_head": _head(3),
    "normal_head": _head(3),
    "mask_head": _head(1),
    "scale_head": {"dims": [_VITS_DIM, _WIDTH, 1]},
    "remap_output": "exp",
    "num_tokens_range": [64, 64],
}


def build_tiny_moge() -> MoGeModel:
    """The tiny model with seeded random weights and the pinhole geometry described in the module doc."""
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        model = MoGeModel(**TINY_MOGE_CONFIG)
    last = _LEVELS - 1
    with torch.no_grad():
        for stack in (model.neck, model.points_head, model.mask_head):
            for module in (*stack.input_blocks, *stack.resamplers, *stack.output_blocks):
                for p in module.parameters():
                    p.zero_()
        # The neck's last level carries the UV grid in channels 0-1 ...
        model.neck.input_blocks[last].weight[0, 0, 0, 0] = 1.0
        model.neck.input_blocks[last].weight[1, 1, 0, 0] = 1.0
        # ... which the points head passes through as (x, y) with z = exp(0) = 1.
        for c in (0, 1):
            model.points_head.input_blocks[last].weight[c, c, 0, 0] = 1.0
            model.points_head.output_blocks[last].weight[c, c, 0, 0] = 1.0
        model.mask_head.output_blocks[last].bias.fill_(_MASK_LOGIT)
    return model.eval()


def write_tiny_moge(root: Path) -> None:
    """Write ``root/moge-2-vitl-normal/model.pt`` (``{"model_config", "model"}``) and the tiny marker file.

    That is the real repository's file set: ``model.pt`` is the only file ``MoGeModel.from_pretrained``
    reads.

    Args:
        root: a checkpoint root (``paths.ckpt_root``); created if missing.
    """
    folder = Path(root) / MOGE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    model = build_tiny_moge()
    torch.save({"model_config": TINY_MOGE_CONFIG, "model": model.state_dict()}, folder / CHECKPOINT_FILE)
    (folder / TINY_MARKER).touch()
