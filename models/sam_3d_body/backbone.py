"""DINOv3 image encoder of SAM-3D-Body on transformers' ``DINOv3ViTModel``.

Part of the body4d port of SAM 3D Body (Meta Platforms, Inc.), covered by the SAM License
(see LICENSE-SAM). The released checkpoint stores the encoder in the torch.hub DINOv3 layout
(``backbone.encoder.blocks.i.attn.qkv`` ...); :func:`hub_to_hf` maps it deterministically onto
the transformers layout and :func:`hf_to_hub` is its inverse (used to write test checkpoints).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn
from transformers import DINOv3ViTConfig, DINOv3ViTModel

from .config import BackboneConfig

# Key prefixes: where the encoder lives in the released checkpoint and in this port.
HUB_PREFIX = "backbone.encoder."
HF_PREFIX = "backbone.vit."

# transformers' (unused at inference) mask token, absent from the released file.
MASK_TOKEN = "embeddings.mask_token"
# Entries of a hub block's fused attention input projection.
_QKV_PARTS = ("weight", "bias", "bias_mask")
# Stored RoPE periods may differ from the exact ones by bf16 rounding (the release stores them
# in bf16: up to 2**-9 relative); one bf16 step accepts that and still refuses any other base.
ROPE_PERIODS_RTOL = 2.0**-8

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

    def use_rope_periods(self, periods: torch.Tensor) -> None:
        """Rotate by the checkpoint's stored RoPE ``periods`` (kept in float32) instead of the
        recomputed ones, as the released model does. Call after any dtype cast of the module."""
        rope = self.vit.rope_embeddings
        rope.inv_freq = (1.0 / periods.float()).to(rope.inv_freq.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        tokens = self.vit(pixel_values=x).last_hidden_state[:, 1 + self.cfg.num_registers :]
        p = self.cfg.patch_size
        return tokens.reshape(b, h // p, w // p, -1).permute(0, 3, 1, 2).contiguous()


def expected_rope_periods(cfg: BackboneConfig) -> torch.Tensor:
    """The hub's RoPE ``periods`` buffer for this shape: base ** (2 i / (head_dim / 2))."""
    head_dim = cfg.hidden_size // cfg.num_heads
    return cfg.rope_theta ** (2 * torch.arange(head_dim // 4, dtype=torch.float32) / (head_dim // 2))


@dataclass(frozen=True)
class MappedEncoder:
    """The encoder entries of a released checkpoint, mapped onto this port.

    Attributes:
        weights: entries keyed ``backbone.vit.*`` (dtypes as stored).
        rope_periods: ``float32[head_dim / 4]`` RoPE periods as stored (None if absent).
        filled: released keys absent from the file that were filled with their inference value.
        problems: every entry that cannot be mapped, one sentence each (empty when all is well).
    """

    weights: dict[str, torch.Tensor]
    rope_periods: torch.Tensor | None
    filled: tuple[str, ...]
    problems: tuple[str, ...]


def hub_to_hf(sd: dict[str, torch.Tensor], cfg: BackboneConfig) -> MappedEncoder:
    """Map the encoder entries of a checkpoint (``backbone.encoder.*``, hub layout) to this port.

    The fused qkv is split in three. Its bias is multiplied by the stored 0/1 ``bias_mask`` as
    the hub's masked-bias linear does (the released file's masks are all zero: no attention
    bias at all). The K third is then dropped: a key bias adds ``q . b_k`` to every logit of a
    query row, which softmax cancels, so it never changes the output (transformers'
    ``key_bias=False``). The RoPE ``periods`` are returned as stored (bf16 in the release),
    checked against the configured base to within one bf16 step. An absent ``mask_token``
    (unused at inference; DINOv3 initialises it to zero) is filled with zeros.

    Args:
        sd: entries whose keys start with ``backbone.encoder.``.
        cfg: the backbone shape.
    Returns:
        the mapped entries, the stored periods, what was filled and every problem found.
    """
    out: dict[str, torch.Tensor] = {}
    problems: list[str] = []
    filled: list[str] = []
    periods = None
    qkv: dict[int, dict[str, torch.Tensor]] = {}
    for full_key, value in sd.items():
        key = full_key[len(HUB_PREFIX) :]
        m = _BLOCK.fullmatch(key)
        if key in _TOP_RENAMES:
            out[HF_PREFIX + _TOP_RENAMES[key]] = value
        elif key == "mask_token":
            out[HF_PREFIX + MASK_TOKEN] = value.reshape(1, 1, -1)
        elif key == "rope_embed.periods":
            periods = value.float()
            want = expected_rope_periods(cfg)
            if periods.shape != want.shape or not torch.allclose(
                periods, want, rtol=ROPE_PERIODS_RTOL, atol=0
            ):
                problems.append(f"{full_key} does not match RoPE base {cfg.rope_theta} of this architecture")
        elif m is not None and m.group(2).startswith("attn.qkv."):
            qkv.setdefault(int(m.group(1)), {})[m.group(2).removeprefix("attn.qkv.")] = value
        elif m is not None and m.group(2) in _BLOCK_RENAMES:
            out[f"{HF_PREFIX}model.layer.{m.group(1)}.{_BLOCK_RENAMES[m.group(2)]}"] = value
        else:
            problems.append(f"unmapped backbone key {full_key}")
    for i, parts in sorted(qkv.items()):
        problems += _split_qkv(i, parts, out)
    if HF_PREFIX + MASK_TOKEN not in out:
        out[HF_PREFIX + MASK_TOKEN] = torch.zeros(1, 1, cfg.hidden_size)
        filled.append(HUB_PREFIX + "mask_token")
    if periods is None:
        problems.append(f"missing key {HUB_PREFIX}rope_embed.periods")
    return MappedEncoder(out, periods, tuple(filled), tuple(problems))


def _split_qkv(block: int, parts: dict[str, torch.Tensor], out: dict[str, torch.Tensor]) -> list[str]:
    """Split one block's fused ``qkv`` into ``out``; returns the problems found."""
    hub = f"{HUB_PREFIX}blocks.{block}.attn.qkv."
    base = f"{HF_PREFIX}model.layer.{block}.attention."
    problems = [f"unmapped backbone key {hub}{name}" for name in parts if name not in _QKV_PARTS]
    problems += [f"missing key {hub}{name}" for name in _QKV_PARTS if name not in parts]
    if "weight" in parts:
        for name, w in zip("qkv", parts["weight"].chunk(3, dim=0), strict=True):
            out[f"{base}{name}_proj.weight"] = w
    bias, mask = parts.get("bias"), parts.get("bias_mask")
    if bias is None or mask is None:
        return problems
    binary = mask.is_meta or bool(torch.all((mask == 0) | (mask == 1)))  # meta: shapes only
    if mask.shape != bias.shape or not binary:
        return [*problems, f"{hub}bias_mask must be 0/1 values of the bias' shape {tuple(bias.shape)}"]
    q, _, v = (bias.float() * mask.to(bias.device).float()).to(bias.dtype).chunk(3, dim=0)
    out[f"{base}q_proj.bias"] = q
    out[f"{base}v_proj.bias"] = v
    return problems


def hf_to_hub(sd: dict[str, torch.Tensor], cfg: BackboneConfig) -> dict[str, torch.Tensor]:
    """Inverse of :func:`hub_to_hf`: this port's ``backbone.vit.*`` -> released layout.

    Adds the zero K bias, ``[1..., 0..., 1...]`` ``bias_mask`` buffers (DINOv3's constructor
    pattern) and the exactly computed RoPE periods.
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
        elif rel == MASK_TOKEN:
            out[HUB_PREFIX + "mask_token"] = value.reshape(1, -1)
        elif (m := re.fullmatch(r"model\.layer\.(\d+)\.(.+)", rel)) and m.group(2) in block:
            out[f"{HUB_PREFIX}blocks.{m.group(1)}.{block[m.group(2)]}"] = value
    out[HUB_PREFIX + "rope_embed.periods"] = expected_rope_periods(cfg)
    return out
