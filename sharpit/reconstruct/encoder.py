"""Camera-modulated DINO ViT image encoder.

A ViT with Hugging Face ``ViTModel`` parameter names (so ``facebook/dino-vitb16`` weights load
unchanged) whose layers add adaLN modulation from a camera embedding: every layer maps the
embedding through ``SiLU -> Linear(D, 4D)`` (zero-initialised) to ``shift_msa, scale_msa,
shift_mlp, scale_mlp`` and applies ``x * (1 + scale) + shift`` after ``layernorm_before`` and
``layernorm_after``. LayerNorm eps is 1e-12 (ViT's), GELU is exact, attention runs through
``F.scaled_dot_product_attention``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import DINO_IMAGE_MEAN, DINO_IMAGE_STD

__all__ = ["ModulatedViT", "CameraModulatedEncoder", "VIT_LAYER_NORM_EPS"]

#: LayerNorm eps of every ViT norm (DINO / Hugging Face ViT default).
VIT_LAYER_NORM_EPS = 1e-12


class _PatchEmbeddings(nn.Module):
    def __init__(self, dim: int, patch_size: int, channels: int = 3):
        super().__init__()
        self.projection = nn.Conv2d(channels, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.projection(pixels).flatten(2).transpose(1, 2)


class _Embeddings(nn.Module):
    """CLS token + patch embeddings + position embeddings stored for a ``pos_grid^2`` grid and
    bicubically interpolated to the input's patch grid."""

    def __init__(self, dim: int, patch_size: int, pos_grid: int):
        super().__init__()
        self.patch_size = patch_size
        self.pos_grid = pos_grid
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.patch_embeddings = _PatchEmbeddings(dim, patch_size)
        self.position_embeddings = nn.Parameter(torch.randn(1, pos_grid * pos_grid + 1, dim) * 0.02)

    def interpolated_positions(self, height: int, width: int) -> torch.Tensor:
        """(1, 1 + h*w, D) position embeddings for a ``height x width`` pixel input.

        Matches DINO / transformers' original ``interpolate_pos_encoding``: bicubic, no corner
        alignment, with the scale factor ``(n + 0.1) / pos_grid`` rather than a target size.
        """
        h, w = height // self.patch_size, width // self.patch_size
        pos = self.position_embeddings
        if h == w == self.pos_grid:
            return pos
        g, dim = self.pos_grid, pos.shape[-1]
        grid = pos[:, 1:].reshape(1, g, g, dim).permute(0, 3, 1, 2)
        grid = F.interpolate(grid.float(), scale_factor=((h + 0.1) / g, (w + 0.1) / g), mode="bicubic",
                             align_corners=False).to(pos.dtype)
        grid = grid.permute(0, 2, 3, 1).reshape(1, h * w, dim)
        return torch.cat([pos[:, :1], grid], dim=1)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embeddings(pixels)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([cls, tokens], dim=1)
        return tokens + self.interpolated_positions(pixels.shape[-2], pixels.shape[-1])


class _SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        split = lambda t: t.view(b, n, self.heads, d // self.heads).transpose(1, 2)  # noqa: E731
        out = F.scaled_dot_product_attention(split(self.query(x)), split(self.key(x)), split(self.value(x)))
        return out.transpose(1, 2).reshape(b, n, d)


class _Dense(nn.Module):
    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.dense = nn.Linear(dim_in, dim_out)


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.attention = _SelfAttention(dim, heads)
        self.output = _Dense(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output.dense(self.attention(x))


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class _ModulatedLayer(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_dim: int):
        super().__init__()
        self.attention = _Attention(dim, heads)
        self.intermediate = _Dense(dim, mlp_dim)
        self.output = _Dense(mlp_dim, dim)
        self.layernorm_before = nn.LayerNorm(dim, eps=VIT_LAYER_NORM_EPS)
        self.layernorm_after = nn.LayerNorm(dim, eps=VIT_LAYER_NORM_EPS)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 4 * dim))
        nn.init.zeros_(self.adaLN_modulation[1].weight)
        nn.init.zeros_(self.adaLN_modulation[1].bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        shift_msa, scale_msa, shift_mlp, scale_mlp = self.adaLN_modulation(cond).chunk(4, dim=1)
        x = x + self.attention(_modulate(self.layernorm_before(x), shift_msa, scale_msa))
        h = _modulate(self.layernorm_after(x), shift_mlp, scale_mlp)
        return x + self.output.dense(F.gelu(self.intermediate.dense(h)))


class _LayerStack(nn.Module):
    def __init__(self, dim: int, layers: int, heads: int, mlp_dim: int):
        super().__init__()
        self.layer = nn.ModuleList([_ModulatedLayer(dim, heads, mlp_dim) for _ in range(layers)])


class ModulatedViT(nn.Module):
    """ViT (Hugging Face names, no pooler) with per-layer adaLN camera modulation.

    Args:
        dim, layers, heads, mlp_dim, patch_size: ViT hyper-parameters (ViT-B/16: 768, 12, 12, 3072, 16).
        pos_grid: side of the stored position-embedding grid (14 for DINO's 224 px).
    """

    def __init__(self, dim: int, layers: int, heads: int, mlp_dim: int, patch_size: int, pos_grid: int):
        super().__init__()
        self.embeddings = _Embeddings(dim, patch_size, pos_grid)
        self.encoder = _LayerStack(dim, layers, heads, mlp_dim)
        self.layernorm = nn.LayerNorm(dim, eps=VIT_LAYER_NORM_EPS)

    def forward(self, pixels: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """``pixels`` (N, 3, H, W) normalised images, ``cond`` (N, D) -> (N, 1 + HW/p^2, D)."""
        x = self.embeddings(pixels)
        for layer in self.encoder.layer:
            x = layer(x, cond)
        return self.layernorm(x)


class CameraModulatedEncoder(nn.Module):
    """Images + InstantMesh camera vectors -> DINO tokens (``encoder.*`` of the checkpoints).

    ``camera_embedder`` is ``Linear(camera_dim, D) -> SiLU -> Linear(D, D)``.
    """

    def __init__(self, dim: int, layers: int, heads: int, mlp_dim: int, patch_size: int, pos_grid: int,
                 camera_dim: int = 16):
        super().__init__()
        self.model = ModulatedViT(dim, layers, heads, mlp_dim, patch_size, pos_grid)
        self.camera_embedder = nn.Sequential(nn.Linear(camera_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, images: torch.Tensor, cameras: torch.Tensor) -> torch.Tensor:
        """Encode views.

        Args:
            images: (N, 3, H, W) RGB in [0, 1], H and W multiples of the patch size.
            cameras: (N, camera_dim) InstantMesh camera vectors (triplane frame).
        Returns:
            (N, 1 + (H/p)(W/p), D) last hidden states, CLS token first.
        """
        dtype = self.camera_embedder[0].weight.dtype
        mean = torch.tensor(DINO_IMAGE_MEAN, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(DINO_IMAGE_STD, device=images.device).view(1, 3, 1, 1)
        x = ((images.float() - mean) / std).to(dtype)
        return self.model(x, self.camera_embedder(cameras.to(dtype)))
