"""Transformer building blocks of the SAM-3D-Body promptable decoder.

Part of the body4d port of SAM 3D Body (Meta Platforms, Inc.), covered by the SAM License
(see LICENSE-SAM). Submodule names follow the released checkpoint so its keys load as-is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# LayerNorm epsilon of every decoder norm in the released config.
DECODER_LN_EPS = 1e-6


class LayerNorm32(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the input dtype; output keeps the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of [B, C, H, W] maps."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class FFN(nn.Module):
    """Stack of linear layers with an activation between them (keys ``layers.i.0`` / ``layers.n``).

    Args:
        in_dim: input width.
        hidden_dim: width of the hidden layers.
        out_dim: output width.
        num_layers: linear layers (>= 1).
        act: activation class between layers.
    """

    def __init__(
        self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2, act: type[nn.Module] = nn.ReLU
    ) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        width = in_dim
        for _ in range(num_layers - 1):
            blocks.append(nn.Sequential(nn.Linear(width, hidden_dim), act()))
            width = hidden_dim
        blocks.append(nn.Linear(width, out_dim))
        self.layers = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class MLP(nn.Module):
    """Plain ReLU MLP (keys ``layers.i``), used for the hand-box regressor."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1)
        outs = [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, outs, strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class Attention(nn.Module):
    """Multi-head attention whose query, key and value inputs may have different widths.

    Args:
        inner_dim: heads * head width.
        num_heads: attention heads.
        query_dim: width of the query input (and of the output).
        kv_dim: width of the key/value input.
    """

    def __init__(self, inner_dim: int, num_heads: int, query_dim: int, kv_dim: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_proj = nn.Linear(query_dim, inner_dim)
        self.k_proj = nn.Linear(kv_dim, inner_dim)
        self.v_proj = nn.Linear(kv_dim, inner_dim)
        self.proj = nn.Linear(inner_dim, query_dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """[B, Nq, Dq], [B, Nk, Dk], [B, Nk, Dk] -> [B, Nq, Dq]."""
        out = F.scaled_dot_product_attention(
            self._heads(self.q_proj(q)), self._heads(self.k_proj(k)), self._heads(self.v_proj(v))
        )
        return self.proj(out.transpose(1, 2).flatten(2))


class DecoderLayer(nn.Module):
    """Pre-norm token self-attention, token->image cross-attention and FFN.

    Positional terms (token PE and image dense PE) are re-normalised and added to queries and
    keys in every layer; the first layer adds no PE inside self-attention.

    Args:
        dim: token width.
        context_dim: image feature width.
        num_heads: attention heads.
        head_dim: width per head.
        mlp_dim: FFN hidden width.
        first: whether this is layer 0.
    """

    def __init__(
        self, dim: int, context_dim: int, num_heads: int, head_dim: int, mlp_dim: int, first: bool
    ) -> None:
        super().__init__()
        self.first = first
        self.ln_pe_1 = LayerNorm32(dim, eps=DECODER_LN_EPS)
        self.ln_pe_2 = LayerNorm32(context_dim, eps=DECODER_LN_EPS)
        self.ln1 = LayerNorm32(dim, eps=DECODER_LN_EPS)
        self.self_attn = Attention(num_heads * head_dim, num_heads, dim, dim)
        self.ln2_1 = LayerNorm32(dim, eps=DECODER_LN_EPS)
        self.ln2_2 = LayerNorm32(context_dim, eps=DECODER_LN_EPS)
        self.cross_attn = Attention(num_heads * head_dim, num_heads, dim, context_dim)
        self.ln3 = LayerNorm32(dim, eps=DECODER_LN_EPS)
        self.ffn = FFN(dim, mlp_dim, dim, 2, nn.GELU)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor, x_pe: torch.Tensor, context_pe: torch.Tensor
    ) -> torch.Tensor:
        """Tokens [B, N, D], image [B, HW, C], token PE [B, N, D], image PE [1, HW, C] -> [B, N, D]."""
        x_pe = self.ln_pe_1(x_pe)
        context_pe = self.ln_pe_2(context_pe)
        h = self.ln1(x)
        qk = h if self.first else h + x_pe
        x = x + self.self_attn(qk, qk, h)
        ctx = self.ln2_2(context)
        x = x + self.cross_attn(self.ln2_1(x) + x_pe, ctx + context_pe, ctx)
        return x + self.ffn(self.ln3(x))


class PromptableDecoder(nn.Module):
    """The decoder layers plus the shared final norm (``layers.i``, ``norm_final``)."""

    def __init__(
        self, dim: int, context_dim: int, depth: int, num_heads: int, head_dim: int, mlp_dim: int
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            DecoderLayer(dim, context_dim, num_heads, head_dim, mlp_dim, first=(i == 0)) for i in range(depth)
        )
        self.norm_final = LayerNorm32(dim, eps=DECODER_LN_EPS)
