"""Fixtures for the SAM-3D-Body port tests: the tiny checkpoint folder and the reference oracle.

The reference is Meta's ``sam_3d_body`` as vendored by the PyPI package ``sam3d`` (a test-only
dependency; body4d never imports it). Inside these fixtures only, its torch.hub DINOv3
backbone is replaced by transformers' ``DINOv3ViTModel`` of the same shape and its hard-coded
CUDA calls are redirected to the CPU.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from transformers import DINOv3ViTConfig, DINOv3ViTModel

from body4d.config import load_config
from body4d.testing.tiny_sam3dbody import FOLDER, TINY_BACKBONE, write_tiny_sam3dbody
from models.sam_3d_body import SAM3DBody, load_sam3dbody


@pytest.fixture(scope="session")
def tiny_folder(tiny_ckpt_root: Path) -> Path:
    """The tiny ``sam-3d-body-dinov3`` folder of the session's tiny checkpoints."""
    return tiny_ckpt_root / FOLDER


@pytest.fixture(scope="session")
def port(tiny_folder: Path) -> SAM3DBody:
    """Our port loaded from the tiny folder, fp32 on CPU."""
    return load_folder(tiny_folder)


@pytest.fixture(scope="session")
def hands_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny folder whose "full" mode accepts the hand estimates (``accept_hands=True``)."""
    root = tmp_path_factory.mktemp("s3b_hands")
    write_tiny_sam3dbody(root, seed=3, accept_hands=True)
    return root / FOLDER


def load_folder(folder: Path, **kwargs: Any) -> SAM3DBody:
    """``load_sam3dbody`` on a checkpoint folder with the config's settings unless given."""
    s = load_config(env={}).sam_3d_body
    kwargs = {"bbox_padding": s.bbox_padding, "mask_value": s.mask_value, **kwargs}
    return load_sam3dbody(
        folder / "model.ckpt", folder / "model_config.yaml", folder / "assets" / "mhr_model.pt", **kwargs
    )


class _ReferenceEncoder(torch.nn.Module):
    """What the reference's Dinov3Backbone reads from the hub ViT, backed by transformers."""

    def __init__(self) -> None:
        super().__init__()
        b = TINY_BACKBONE
        config = DINOv3ViTConfig(
            hidden_size=b.hidden_size,
            num_hidden_layers=b.num_layers,
            num_attention_heads=b.num_heads,
            intermediate_size=b.intermediate_size,
            hidden_act="silu",
            use_gated_mlp=True,
            num_register_tokens=b.num_registers,
            patch_size=b.patch_size,
            layer_norm_eps=b.layer_norm_eps,
            rope_theta=b.rope_theta,
            key_bias=False,
        )
        self.vit = DINOv3ViTModel(config)
        self.patch_size, self.embed_dim, self.n_blocks = b.patch_size, b.hidden_size, b.num_layers

    def get_intermediate_layers(self, x: torch.Tensor, **_: Any) -> tuple[torch.Tensor]:
        out = self.vit(pixel_values=x).last_hidden_state[:, 1 + TINY_BACKBONE.num_registers :]
        n, _, h, w = x.shape
        return (out.reshape(n, h // 16, w // 16, -1).permute(0, 3, 1, 2),)


# Test-local statement of the hub -> transformers layout (kept independent of the port's map).
_HUB_TO_HF = [
    (r"cls_token", r"embeddings.cls_token"),
    (r"storage_tokens", r"embeddings.register_tokens"),
    (r"patch_embed\.proj\.(weight|bias)", r"embeddings.patch_embeddings.\1"),
    (r"norm\.(weight|bias)", r"norm.\1"),
    (r"blocks\.(\d+)\.(norm[12])\.(weight|bias)", r"model.layer.\1.\2.\3"),
    (r"blocks\.(\d+)\.attn\.proj\.(weight|bias)", r"model.layer.\1.attention.o_proj.\2"),
    (r"blocks\.(\d+)\.ls([12])\.gamma", r"model.layer.\1.layer_scale\2.lambda1"),
    (r"blocks\.(\d+)\.mlp\.w1\.(weight|bias)", r"model.layer.\1.mlp.gate_proj.\2"),
    (r"blocks\.(\d+)\.mlp\.w2\.(weight|bias)", r"model.layer.\1.mlp.up_proj.\2"),
    (r"blocks\.(\d+)\.mlp\.w3\.(weight|bias)", r"model.layer.\1.mlp.down_proj.\2"),
]


def reference_state_dict(released: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Released checkpoint -> keys of the reference model with the transformers encoder."""
    out: dict[str, torch.Tensor] = {}
    for key, value in released.items():
        if not key.startswith("backbone.encoder."):
            out[key] = value
            continue
        rel = key[len("backbone.encoder.") :]
        if rel == "mask_token":
            out["backbone.encoder.vit.embeddings.mask_token"] = value.reshape(1, 1, -1)
            continue
        if m := re.fullmatch(r"blocks\.(\d+)\.attn\.qkv\.(weight|bias)", rel):
            if m.group(2) == "bias":  # the hub's masked-bias linear
                value = value.float() * released[key + "_mask"].float()
            for name, part in zip("qkv", value.chunk(3), strict=True):
                if not (name == "k" and m.group(2) == "bias"):
                    out[
                        f"backbone.encoder.vit.model.layer.{m.group(1)}.attention.{name}_proj.{m.group(2)}"
                    ] = part
            continue
        for pattern, repl in _HUB_TO_HF:
            if re.fullmatch(pattern, rel):
                out["backbone.encoder.vit." + re.sub(pattern, repl, rel)] = value
                break
    return out


@pytest.fixture(scope="session")
def reference_modules() -> Iterator[SimpleNamespace]:
    """The vendored ``sam_3d_body`` package with the hub backbone and CUDA calls patched."""
    import sam3d

    meta = str(Path(sam3d.__file__).parent / "third_party" / "meta")
    sys.path.insert(0, meta)
    os.environ["MOMENTUM_ENABLED"] = "0"  # any value: use the TorchScript MHR, not pymomentum
    mp = pytest.MonkeyPatch()
    import sam_3d_body.models.meta_arch.sam3d_body as arch_mod
    import sam_3d_body.sam_3d_body_estimator as est_mod
    from sam_3d_body.models.backbones import dinov3 as dinov3_mod
    from sam_3d_body.models.meta_arch import SAM3DBody as RefModel
    from sam_3d_body.utils import recursive_to
    from sam_3d_body.utils.config import get_config

    def backbone_init(
        self: torch.nn.Module, name: str = "", pretrained_weight: Any = None, cfg: Any = None
    ) -> None:
        torch.nn.Module.__init__(self)
        self.name, self.cfg = name, cfg
        self.encoder = _ReferenceEncoder()
        self.patch_size, self.embed_dim, self.embed_dims = (
            16,
            TINY_BACKBONE.hidden_size,
            TINY_BACKBONE.hidden_size,
        )

    def to_cpu(x: Any, target: str) -> Any:
        return recursive_to(x, "cpu" if target == "cuda" else target)

    mp.setattr(dinov3_mod.Dinov3Backbone, "__init__", backbone_init)
    mp.setattr(est_mod, "recursive_to", to_cpu)
    mp.setattr(arch_mod, "recursive_to", to_cpu)
    mp.setattr(torch.Tensor, "cuda", lambda self, *a, **k: self)
    yield SimpleNamespace(RefModel=RefModel, get_config=get_config, Estimator=est_mod.SAM3DBodyEstimator)
    mp.undo()
    sys.path.remove(meta)


@pytest.fixture(scope="session")
def reference(reference_modules: SimpleNamespace, tiny_folder: Path) -> Any:
    """The reference estimator with the same tiny weights, loaded strictly."""
    return build_reference(reference_modules, tiny_folder)


def build_reference(reference_modules: SimpleNamespace, tiny_folder: Path) -> Any:
    """Reference estimator for a tiny folder (strict load)."""
    cfg = reference_modules.get_config(str(tiny_folder / "model_config.yaml"))
    cfg.defrost()
    cfg.MODEL.MHR_HEAD.MHR_MODEL_PATH = str(tiny_folder / "assets" / "mhr_model.pt")
    cfg.freeze()
    model = reference_modules.RefModel(cfg)
    released = torch.load(tiny_folder / "model.ckpt", weights_only=True)
    sd = reference_state_dict(released)
    sd.update({k: v for k, v in model.state_dict().items() if ".mhr." in k})  # the TorchScript MHR itself
    # Absent from the released file; unused at inference (Meta's class still holds them).
    sd["backbone.encoder.vit.embeddings.mask_token"] = torch.zeros(1, 1, TINY_BACKBONE.hidden_size)
    for head in ("head_pose", "head_pose_hand"):
        sd[f"{head}.hand_pose_comps_ori"] = released[f"{head}.hand_pose_comps"]
    model.load_state_dict(sd, strict=True)
    # The hub encoder rotates by its stored RoPE periods, not recomputed ones.
    rope = model.backbone.encoder.vit.rope_embeddings
    rope.inv_freq = 1.0 / released["backbone.encoder.rope_embed.periods"].float()
    model.eval()
    return reference_modules.Estimator(model, cfg)


def run_reference(
    estimator: Any,
    image: np.ndarray,
    boxes: np.ndarray,
    mode: str,
    masks: np.ndarray | None = None,
    K: np.ndarray | None = None,
) -> list[dict[str, np.ndarray]]:
    """One image through the reference ``process_one_image``."""
    cam = None if K is None else torch.as_tensor(K, dtype=torch.float32)[None]
    return estimator.process_one_image(
        image, bboxes=boxes.astype(np.float32), masks=masks, cam_int=cam, inference_type=mode
    )
