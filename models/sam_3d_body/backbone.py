"""DINOv3 image encoder of SAM-3D-Body on transformers' ``DINOv3ViTModel``.

Part of the body4d port of SAM 3D Body (Meta Platforms, Inc.), covered by the SAM License
(see LICENSE-SAM). The released checkpoint stores the encoder in the torch.hub DINOv3 layout
(``backbone.encoder.blocks.i.attn.qkv`` ...); :func:`hub_to_hf` maps it deterministically onto
the transformers layout and :func:`hf_to_hub` is its inverse (used to write test checkpoints).
"""

from __future__ import annotations

import re

import torch
from torch import nn
from transformers import DINOv3ViTConfig, DINOv3ViTModel

from .config import BackboneConfig

# Key prefixes: where the encoder lives in the released checkpoint and in this port.
HUB_PREFIX = "backbone.encoder."
HF_PREFIX = "backbone.vit."

_BLOCK = re.compile(r"blocks\.(\d+)\.(.+)")
# Per-block hub -> transformers renames (the fused qkv is handled separately).
_BLOCK_RENAMES = {
    "norm1.weight": "norm1.weight",
    "norm1.bias": "norm1.bias",
    "norm2.weight": "norm2.weight",
    "norm2.bias": "norm2.bias",
    "attn.proj.weight": "attention.o_proj.weight",
    "attn.proj.bias": "attention.o_proj.bias",
    "ls1.gamma": "layer_scale1.lambda1",
    "ls2.gamma": "layer_scale2.lambda1",
    "mlp.w1.weight": "mlp.gate_proj.weight",
    "mlp.w1.bias": "mlp.gate_proj.bias",
    "mlp.w2.weight": "mlp.up_proj.weight",
    "mlp.w2.bias": "mlp.up_proj.bias",
    "mlp.w3.weight": "mlp.down_proj.weight",
    "mlp.w3.bias": "mlp.down_proj.bias",
    "mlp.fc1.weight": "mlp.up_proj.weight",
    "mlp.fc1.bias": "mlp.up_proj.bias",
    "mlp.fc2.weight": "mlp.down_proj.weight",
    "mlp.fc2.bias": "mlp.down_proj.bias",
}
_TOP_RENAMES = {
    "cls_token": "embeddings.cls_token",
    "storage_tokens": "embeddings.register_tokens",
    "patch_embed.proj.weight": "embeddings.patch_embeddings.weight",
    "patch_embed.proj.bias": "embeddings.patch_embeddings.bias",
    "norm.weight": "norm.weight",
    "norm.bias": "norm.bias",
}


def hf_config(cfg: BackboneConfig) -> DINOv3ViTConfig:
    """transformers config equivalent to the hub DINOv3 ViT (masked, i.e. absent, key bias)."""
    config = DINOv3ViTConfig(
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        hidden_act="silu" if cfg.gated_mlp else "gelu",
        use_gated_mlp=cfg.gated_mlp,
        num_register_tokens=cfg.num_registers,
        patch_size=cfg.patch_size,
        layer_norm_eps=cfg.layer_norm_eps,
        rope_theta=cfg.rope_theta,
        query_bias=True,
        key_bias=False,
        value_bias=True,
        proj_bias=True,
        mlp_bias=True,
    )
    config._attn_implementation = "sdpa"
    return config


class DINOv3Backbone(nn.Module):
    """Crops [B, 3, S, S] (ImageNet-normalised) -> final-normed patch features [B, C, S/p, S/p]."""

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.vit = DINOv3ViTModel(hf_config(cfg))

    @property
    def embed_dim(self) -> int:
        return self.cfg.hidden_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        tokens = self.vit(pixel_values=x).last_hidden_state[:, 1 + self.cfg.num_registers :]
        p = self.cfg.patch_size
        return tokens.reshape(b, h // p, w // p, -1).permute(0, 3, 1, 2).contiguous()


def expected_rope_periods(cfg: BackboneConfig) -> torch.Tensor:
    """The hub's RoPE ``periods`` buffer for this shape: base ** (2 i / (head_dim / 2))."""
    head_dim = cfg.hidden_size // cfg.num_heads
    return cfg.rope_theta ** (2 * torch.arange(head_dim // 4, dtype=torch.float32) / (head_dim // 2))


def hub_to_hf(sd: dict[str, torch.Tensor], cfg: BackboneConfig) -> dict[str, torch.Tensor]:
    """Map the encoder entries of a checkpoint (``backbone.encoder.*``, hub layout) to this port.

    The fused qkv is split in three; the K third of its bias is dropped because the hub
    multiplies it by a 0 ``bias_mask`` (transformers' ``key_bias=False``). ``bias_mask`` and
    ``rope_embed.periods`` carry no weights: they are checked against what this port computes
    and dropped.

    Args:
        sd: entries whose keys start with ``backbone.encoder.``.
        cfg: the backbone shape (for the RoPE check).
    Returns:
        entries keyed ``backbone.vit.*``.
    Raises:
        KeyError: an encoder key with no mapping (named in the message).
        ValueError: a ``bias_mask`` that does not mask exactly the K bias, or RoPE periods that
            do not match the configured base.
    """
    out: dict[str, torch.Tensor] = {}
    for full_key, value in sd.items():
        key = full_key[len(HUB_PREFIX) :]
        if key in _TOP_RENAMES:
            out[HF_PREFIX + _TOP_RENAMES[key]] = value
        elif key == "mask_token":
            out[HF_PREFIX + "embeddings.mask_token"] = value.reshape(1, 1, -1)
        elif key == "rope_embed.periods":
            if not torch.allclose(value.float(), expected_rope_periods(cfg), rtol=1e-3):
                raise ValueError(f"{full_key} does not match RoPE base {cfg.rope_theta}")
        elif (m := _BLOCK.fullmatch(key)) is None:
            raise KeyError(f"unmapped backbone key {full_key}")
        else:
            base = f"{HF_PREFIX}model.layer.{m.group(1)}."
            rest = m.group(2)
            if rest == "attn.qkv.weight":
                q, k, v = value.chunk(3, dim=0)
                out[base + "attention.q_proj.weight"] = q
                out[base + "attention.k_proj.weight"] = k
                out[base + "attention.v_proj.weight"] = v
            elif rest == "attn.qkv.bias":
                q, _, v = value.chunk(3, dim=0)
                out[base + "attention.q_proj.bias"] = q
                out[base + "attention.v_proj.bias"] = v
            elif rest == "attn.qkv.bias_mask":
                d = value.numel() // 3
                want = torch.cat([torch.ones(d), torch.zeros(d), torch.ones(d)])
                if not torch.equal(value.float().cpu(), want):
                    raise ValueError(f"{full_key} is not [1..., 0..., 1...]: the K bias would not be masked")
            elif rest in _BLOCK_RENAMES:
                out[base + _BLOCK_RENAMES[rest]] = value
            else:
                raise KeyError(f"unmapped backbone key {full_key}")
    return out


def hf_to_hub(sd: dict[str, torch.Tensor], cfg: BackboneConfig) -> dict[str, torch.Tensor]:
    """Inverse of :func:`hub_to_hf`: this port's ``backbone.vit.*`` -> released layout.

    Adds the zero K bias, the ``bias_mask`` buffers and the RoPE periods the hub stores.
    """
    out: dict[str, torch.Tensor] = {}
    top = {v: k for k, v in _TOP_RENAMES.items()}
    block = {v: k for k, v in _BLOCK_RENAMES.items() if not k.startswith("mlp.fc")}
    if not cfg.gated_mlp:
        block.update({"mlp.up_proj.weight": "mlp.fc1.weight", "mlp.up_proj.bias": "mlp.fc1.bias"})
        block.update({"mlp.down_proj.weight": "mlp.fc2.weight", "mlp.down_proj.bias": "mlp.fc2.bias"})
    for i in range(cfg.num_layers):
        base = f"{HF_PREFIX}model.layer.{i}.attention."
        hub = f"{HUB_PREFIX}blocks.{i}.attn.qkv."
        q_b = sd[base + "q_proj.bias"]
        out[hub + "weight"] = torch.cat([sd[base + f"{n}_proj.weight"] for n in "qkv"], dim=0)
        out[hub + "bias"] = torch.cat([q_b, torch.zeros_like(q_b), sd[base + "v_proj.bias"]])
        d = q_b.numel()
        out[hub + "bias_mask"] = torch.cat([torch.ones(d), torch.zeros(d), torch.ones(d)]).to(q_b.dtype)
    for key, value in sd.items():
        rel = key[len(HF_PREFIX) :]
        if rel in top:
            out[HUB_PREFIX + top[rel]] = value
        elif rel == "embeddings.mask_token":
            out[HUB_PREFIX + "mask_token"] = value.reshape(1, -1)
        elif (m := re.fullmatch(r"model\.layer\.(\d+)\.(.+)", rel)) and m.group(2) in block:
            out[f"{HUB_PREFIX}blocks.{m.group(1)}.{block[m.group(2)]}"] = value
    out[HUB_PREFIX + "rope_embed.periods"] = expected_rope_periods(cfg)
    return out
