"""The network of Shap-E's "transmitter" encoder: a coloured point cloud and multi-view RGB-D
renders in, a Shap-E latent out.

The released encoder (``transmitter.pt`` + ``transmitter_config.yaml`` of ``openai/shap-e``) is a
``PointCloudPerceiverChannelsEncoder`` with ``cross_attention_dataset: pcl_and_multiview_pcl``,
``use_pointconv: true``, ``fps_method: first``, ``pos_emb: nerf`` (see
:mod:`sharpit.coarse.encoder` for the config and its evidence). This module re-implements that
computation for inference (no training-time unrolls or noise) with the released parameter names,
so the ``encoder.*`` weights of ``transmitter.pt`` load as they are:

1. every point ``(x, y, z, r, g, b)`` is NeRF-encoded (itself plus ``sin`` of 2^0..2^14 times it,
   and the same shifted by pi/2: 6 * 31 = 186 features) and projected to ``width``
   (``input_proj``);
2. point convolution (``point_conv``): the first ``data_ctx`` points (the input is in
   farthest-point order, so these are themselves a farthest-point sample) are centres; each
   gathers the first ``pointconv_samples`` points (in input order) within ``pointconv_radius``,
   their offsets and features are shuffled along the sample axis by a random permutation per
   channel (the official code does this at inference too; drawn from ``generator``), and two
   circular convolutions over the sample axis with swish and a mean give one token per centre;
3. those ``data_ctx`` tokens and ``latent_ctx`` learned output tokens (``ln_pre``) cross-attend to
   all projected points (``encoder.0``), then to the multi-view patch tokens (``encoder.1``):
   every pixel's colour, camera origin and surface position (NeRF-encoded, or ``unk_token`` where
   the pixel is not fully covered) go through a 3x3 convolution (``mv_pcl_embed``) and a
   ``patch_size`` patch embedding (``patch_emb``);
4. a transformer (``processor``), ``ln_post`` and ``output_proj`` on the output tokens, then
   ``tanh`` (the bottleneck at inference, applied by :class:`~sharpit.coarse.encoder.ShapEEncoder`) give the latent, ``(latent_ctx, d_latent)`` flattened.

Attention uses the released weight layout (per head: query, key, value channels interleaved in
``c_qkv`` / key, value in ``c_kv``) through ``torch.nn.functional.scaled_dot_product_attention``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["ShapEEncoderInputs", "EncoderNetwork", "nerf_encode", "NERF_FREQUENCIES"]

#: Octaves of the NeRF position encoding of the released encoder (``posenc_nerf`` 0..15).
NERF_FREQUENCIES = 15


def nerf_encode(x: torch.Tensor) -> torch.Tensor:
    """(..., D) -> (..., D * (1 + 2 * 15)): ``x``, then ``sin(x * 2^k)`` for k = 0..14 (k-major),
    then the same plus pi/2 (cosines)."""
    scales = 2.0 ** torch.arange(NERF_FREQUENCIES, device=x.device, dtype=x.dtype)
    xb = (x.unsqueeze(-2) * scales[:, None]).flatten(-2)
    return torch.cat([x, torch.cat([xb, xb + math.pi / 2.0], dim=-1).sin()], dim=-1)


@dataclass
class ShapEEncoderInputs:
    """What the encoder consumes, for ``B`` objects (Shap-E frame, scaled by 2: the object's
    bounding box is centred with its longest side 2, so it spans [-1, 1] on that axis).

    Attributes:
        points: (B, N, 6) float: xyz, then sRGB colour in [0, 1]; farthest-point order.
        views: (B, V, 3, S, S) float sRGB colours in [-1, 1], lit and composited on black.
        depths: (B, V, 1, S, S) float planar depth (along each camera's viewing axis).
        alphas: (B, V, 1, S, S) float coverage in [0, 1]; pixels below 0.999 are not used.
        origins, x, y, z: (B, V, 3) float camera frames in Shap-E's convention: origin, x right,
            y down (image rows), z forward (unit).
        fov: (B, V) float horizontal = vertical field of view in radians (square views).
    """

    points: torch.Tensor
    views: torch.Tensor
    depths: torch.Tensor
    alphas: torch.Tensor
    origins: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    z: torch.Tensor
    fov: torch.Tensor

    def __len__(self) -> int:
        return int(self.points.shape[0])

    def __getitem__(self, index) -> "ShapEEncoderInputs":
        index = slice(index, index + 1) if isinstance(index, int) else index
        return ShapEEncoderInputs(**{k: getattr(self, k)[index] for k in self.__dataclass_fields__})

    def to(self, device=None, dtype: Optional[torch.dtype] = None) -> "ShapEEncoderInputs":
        return ShapEEncoderInputs(**{k: getattr(self, k).to(device=device, dtype=dtype)
                                     for k in self.__dataclass_fields__})

    @staticmethod
    def cat(items: Sequence["ShapEEncoderInputs"]) -> "ShapEEncoderInputs":
        return ShapEEncoderInputs(**{k: torch.cat([getattr(i, k) for i in items])
                                     for k in ShapEEncoderInputs.__dataclass_fields__})


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(B, T, H, C) queries, (B, S, H, C) keys/values -> (B, T, H * C)."""
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2).flatten(2)


class _MLP(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.c_fc = nn.Linear(width, 4 * width)
        self.c_proj = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))


class _SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.c_qkv = nn.Linear(width, 3 * width)
        self.c_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = self.c_qkv(x).view(b, t, self.heads, -1).chunk(3, dim=-1)
        return self.c_proj(_attend(q, k, v))


class _CrossAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.c_q = nn.Linear(width, width)
        self.c_kv = nn.Linear(width, 2 * width)
        self.c_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, data: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.c_q(x).view(b, t, self.heads, -1)
        k, v = self.c_kv(data).view(b, data.shape[1], self.heads, -1).chunk(2, dim=-1)
        return self.c_proj(_attend(q, k, v))


class _SelfBlock(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = _SelfAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = _MLP(width)
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class _CrossBlock(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = _CrossAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = _MLP(width)
        self.ln_3 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor, data: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), self.ln_2(data))
        return x + self.mlp(self.ln_3(x))


class _Transformer(nn.Module):
    def __init__(self, width: int, heads: int, layers: int):
        super().__init__()
        self.resblocks = nn.ModuleList([_SelfBlock(width, heads) for _ in range(layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x)
        return x


class _Perceiver(nn.Module):
    def __init__(self, width: int, heads: int, layers: int):
        super().__init__()
        self.resblocks = nn.ModuleList([_CrossBlock(width, heads) for _ in range(layers)])

    def forward(self, x: torch.Tensor, data: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, data)
        return x


class _PointConv(nn.Module):
    """Released ``PointSetEmbedding``: ball grouping around the first ``n_point`` points, then
    per-channel shuffled circular convolutions over the samples, swish, mean."""

    def __init__(self, d_input: int, hidden: Sequence[int], n_point: int, radius: float, n_sample: int,
                 patch_size: int, stride: int, padding_mode: str):
        super().__init__()
        self.n_point, self.radius, self.n_sample = n_point, radius, n_sample
        self.patch_size = patch_size
        convs, last = [], d_input + 3
        for out in hidden:
            convs.append(nn.Conv2d(last, out, kernel_size=(patch_size, 1), stride=(stride, 1),
                                   padding=(patch_size // 2, 0), padding_mode=padding_mode))
            last = out
        self.mlp_convs = nn.ModuleList(convs)

    def group(self, xyz: torch.Tensor) -> torch.Tensor:
        """(N, 3) points -> (n_point, n_sample) indices: for each centre (the first ``n_point``
        points) the first ``n_sample`` points within ``radius`` in input order, padded with the
        first of them."""
        centres = xyz[: self.n_point]
        n = xyz.shape[0]
        # Same formula as the official square_distance, so borderline points fall on the same side.
        d2 = -2.0 * centres @ xyz.T + (centres ** 2).sum(-1)[:, None] + (xyz ** 2).sum(-1)[None]
        index = torch.arange(n, device=xyz.device).expand(self.n_point, n)
        index = torch.where(d2 > self.radius ** 2, torch.full_like(index, n), index)
        index = index.sort(dim=-1).values[:, : self.n_sample]
        return torch.where(index == n, index[:, :1], index)

    def forward(self, xyz: torch.Tensor, features: torch.Tensor, generator: Optional[torch.Generator],
                chunk: int = 256) -> torch.Tensor:
        """(N, 3) positions and (N, D) features of ONE object -> (n_point, hidden[-1]) tokens.

        The shuffles are drawn as the official code draws them for a batch of one:
        ``rand(1, channels, samples, 1)`` per convolution, sorted along the samples.
        """
        idx = self.group(xyz)
        shuffles = []
        samples = self.n_sample
        for conv in self.mlp_convs:
            noise = torch.rand(conv.in_channels, samples, generator=generator, device=generator.device
                               if generator is not None else None)
            shuffles.append(noise.to(xyz.device).argsort(dim=1, stable=True) if self.patch_size > 1 else None)
            samples = (samples + 2 * (self.patch_size // 2) - self.patch_size) // conv.stride[0] + 1
        out = []
        for lo in range(0, self.n_point, chunk):
            part = idx[lo: lo + chunk]                                   # (P, S)
            grouped = torch.cat([xyz[part] - xyz[lo: lo + part.shape[0], None], features[part]], dim=-1)
            h = grouped.permute(2, 1, 0)[None]                           # (1, C, S, P)
            for conv, perm in zip(self.mlp_convs, shuffles):
                if perm is not None:
                    h = torch.gather(h, 2, perm[None, :, :, None].expand_as(h))
                h = F.silu(conv(h))
            out.append(h.mean(dim=2)[0].T)
        return torch.cat(out)


class _ViewPointEmbedding(nn.Conv2d):
    """Released ``MultiviewPointCloudEmbedding``: 3x3 convolution of the NeRF-encoded pixel
    colour, camera origin and surface position, ``unk_token`` where a pixel is not covered."""

    def __init__(self, out_features: int):
        in_features = 3 * 3 * (1 + 2 * NERF_FREQUENCIES)
        super().__init__(in_features, out_features, kernel_size=3, padding=1)
        self.unk_token = nn.Parameter(torch.zeros(in_features))

    def forward(self, colours: torch.Tensor, origin: torch.Tensor, position: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        """(V, 3, H, W) each and (V, 1, H, W) bool mask -> (V, out_features, H, W)."""
        x = torch.cat([nerf_encode(t.permute(0, 2, 3, 1)) for t in (colours, origin, position)], dim=-1)
        x = torch.where(mask.permute(0, 2, 3, 1), x, self.unk_token.to(x.dtype))
        return super().forward(x.permute(0, 3, 1, 2))


class EncoderNetwork(nn.Module):
    """The released encoder's layers (parameter names as in ``transmitter.pt`` after its
    ``encoder.`` prefix, without ``params_proj``, the decoder's half).

    Args:
        width, heads, layers, xattn_layers: transformer width, heads, total layers (cross + self).
        d_latent, latent_ctx: latent row width and number of rows (output tokens).
        data_ctx: point-convolution tokens (= centres).
        pointconv_*: the point convolution's radius, samples per centre, hidden widths, kernel
            along the samples, stride and padding mode.
        patch_size: side of a multi-view patch in pixels.
        max_depth: depths are clamped to this (scaled units) before unprojection.
    """

    def __init__(self, width: int, heads: int, layers: int, xattn_layers: int, d_latent: int, latent_ctx: int,
                 data_ctx: int, pointconv_radius: float, pointconv_samples: int, pointconv_hidden: Sequence[int],
                 pointconv_patch_size: int, pointconv_stride: int, pointconv_padding_mode: str, patch_size: int,
                 max_depth: float):
        super().__init__()
        self.latent_ctx, self.max_depth = latent_ctx, max_depth
        self.input_proj = nn.Linear(6 * (1 + 2 * NERF_FREQUENCIES), width)
        self.point_conv = _PointConv(width, pointconv_hidden, data_ctx, pointconv_radius, pointconv_samples,
                                     pointconv_patch_size, pointconv_stride, pointconv_padding_mode)
        self.encoder = nn.ModuleList([_Perceiver(width, heads, xattn_layers) for _ in range(2)])
        self.processor = _Transformer(width, heads, layers - xattn_layers)
        self.ln_pre = nn.LayerNorm(width)
        self.ln_post = nn.LayerNorm(width)
        self.output_tokens = nn.Parameter(torch.zeros(latent_ctx, width))
        self.output_proj = nn.Linear(width, d_latent)
        self.mv_pcl_embed = _ViewPointEmbedding(width // 2)
        self.patch_emb = nn.Conv2d(width // 2, width, kernel_size=patch_size, stride=patch_size)

    def view_tokens(self, inputs: ShapEEncoderInputs, view_chunk: int = 4) -> torch.Tensor:
        """(B, V * patches, width) multi-view tokens (views processed ``view_chunk`` at a time)."""
        b, v, _, h, w = inputs.views.shape
        dt = self.patch_emb.weight.dtype
        # Official pixel rays, in the official order of operations (the NeRF encoding multiplies
        # positions by up to 2^14, so rounding differences would show): pixel i of n maps to
        # (i / (n - 1) * 2 - 1) * tan(fov / 2).
        dev = inputs.views.device
        tan = torch.tan(inputs.fov.to(dt) / 2.0)[..., None]                          # (B, V, 1)
        fx = (torch.arange(w, device=dev, dtype=dt) / (w - 1) * 2 - 1) * tan          # (B, V, W)
        fy = (torch.arange(h, device=dev, dtype=dt) / (h - 1) * 2 - 1) * tan          # (B, V, H)
        direction = (inputs.z.to(dt)[:, :, None, None] + inputs.x.to(dt)[:, :, None, None] * fx[:, :, None, :, None]
                     + inputs.y.to(dt)[:, :, None, None] * fy[:, :, :, None, None])  # (B, V, H, W, 3)
        direction = direction / direction.norm(dim=-1, keepdim=True)
        origin = inputs.origins.to(dt)[:, :, None, None].expand_as(direction)
        factor = (direction * inputs.z.to(dt)[:, :, None, None]).sum(-1)            # ray length per unit depth
        depth = inputs.depths.to(dt).clamp(max=self.max_depth)[:, :, 0] / factor
        position = origin + depth[..., None] * direction
        mask = inputs.alphas >= 0.999
        tokens = []
        for i in range(b):
            per_view = []
            for lo in range(0, v, view_chunk):
                sl = slice(lo, lo + view_chunk)
                x = self.mv_pcl_embed(inputs.views[i, sl].to(dt), origin[i, sl].permute(0, 3, 1, 2),
                                      position[i, sl].permute(0, 3, 1, 2), mask[i, sl])
                per_view.append(self.patch_emb(x).flatten(2).transpose(1, 2))       # (v, patches, width)
            tokens.append(torch.cat(per_view).flatten(0, 1))
        return torch.stack(tokens)

    def forward(self, inputs: ShapEEncoderInputs,
                generators: Optional[List[Optional[torch.Generator]]] = None) -> torch.Tensor:
        """Encode a batch: ``generators[i]`` draws object ``i``'s point-convolution shuffles.

        Returns:
            (B, latent_ctx * d_latent) latents before the bottleneck (the released one is ``tanh``).
        """
        b = len(inputs)
        generators = generators if generators is not None else [None] * b
        dt = self.input_proj.weight.dtype
        points = inputs.points.to(dt)
        features = self.input_proj(nerf_encode(points))                              # (B, N, width)
        data = torch.stack([self.point_conv(points[i, :, :3], features[i], generators[i]) for i in range(b)])
        h = self.ln_pre(torch.cat([data, self.output_tokens[None].expand(b, -1, -1)], dim=1))
        h = self.encoder[0](h, features)
        h = self.encoder[1](h, self.view_tokens(inputs))
        h = self.processor(h)
        h = self.output_proj(self.ln_post(h[:, -self.latent_ctx:]))
        return h.flatten(1)
