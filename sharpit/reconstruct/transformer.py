"""Image-to-triplane transformer.

``3 * R * R`` learned query tokens (R = ``triplane_low_res``, 32) of width D cross-attend to the
DINO tokens of all views, then self-attend, then pass a 4x GELU MLP (pre-LN, residual). A final
LayerNorm (eps 1e-6; the block norms use PyTorch's default 1e-5) and a ConvTranspose2d(D, C, 2,
stride 2) turn the tokens into planes (B, 3, C, 2R, 2R). Token ``p * R * R + i * R + j`` becomes
row ``i``, column ``j`` of plane ``p`` before the upsampling.

Attention is :class:`torch.nn.MultiheadAttention` without biases (its parameter names are the
checkpoint's); called with ``need_weights=False`` it runs scaled-dot-product attention.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError

__all__ = ["TriplaneTransformer", "TriplaneBlock", "FINAL_NORM_EPS"]

#: LayerNorm eps of the final transformer norm (the blocks' norms use the default 1e-5).
FINAL_NORM_EPS = 1e-6


class TriplaneBlock(nn.Module):
    """``x += CrossAttn(norm1(x), cond); x += SelfAttn(norm2(x)); x += MLP(norm3(x))``."""

    def __init__(self, dim: int, cond_dim: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, heads, kdim=cond_dim, vdim=cond_dim, bias=False,
                                                batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, heads, bias=False, batch_first=True)
        self.norm3 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(0.0),
                                 nn.Linear(4 * dim, dim), nn.Dropout(0.0))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """``x`` (B, L, D) tokens, ``cond`` (B, S, cond_dim) image tokens -> (B, L, D)."""
        x = x + self.cross_attn(self.norm1(x), cond, cond, need_weights=False)[0]
        h = self.norm2(x)
        x = x + self.self_attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm3(x))


class TriplaneTransformer(nn.Module):
    """Image tokens -> triplanes (``transformer.*`` of the checkpoints).

    Args:
        dim: token width (1024). cond_dim: image-token width (768). layers, heads: depth, heads.
        low_res: token grid side per plane (32). high_res: plane side after upsampling (64).
        triplane_dim: plane channels C (40 base, 80 large).
    """

    def __init__(self, dim: int, cond_dim: int, layers: int, heads: int, low_res: int, high_res: int,
                 triplane_dim: int):
        super().__init__()
        if high_res != 2 * low_res:
            raise ConfigError(f"high_res must be 2 * low_res (one stride-2 upsampling), got {high_res}, {low_res}")
        self.low_res = low_res
        self.pos_embed = nn.Parameter(torch.randn(1, 3 * low_res * low_res, dim) * dim ** -0.5)
        self.layers = nn.ModuleList([TriplaneBlock(dim, cond_dim, heads) for _ in range(layers)])
        self.norm = nn.LayerNorm(dim, eps=FINAL_NORM_EPS)
        self.deconv = nn.ConvTranspose2d(dim, triplane_dim, kernel_size=2, stride=2)

    def forward(self, image_tokens: torch.Tensor) -> torch.Tensor:
        """(B, S, cond_dim) tokens of all views -> (B, 3, C, high_res, high_res) planes."""
        b, r = image_tokens.shape[0], self.low_res
        x = self.pos_embed.expand(b, -1, -1)
        for layer in self.layers:
            x = layer(x, image_tokens)
        x = self.norm(x)
        x = x.view(b, 3, r, r, -1).permute(0, 1, 4, 2, 3).reshape(b * 3, -1, r, r)
        planes = self.deconv(x)
        return planes.view(b, 3, *planes.shape[1:])
