"""Triplane sampling and the NeRF MLP decoder (``synthesizer.*`` of the checkpoints).

Plane layout (all coordinates in the triplane frame, see :mod:`sharpit.reconstruct.config`)
    Planes are (B, 3, C, H, W). A point ``(x, y, z)`` in ``[-1, 1]^3`` is scaled by
    ``2 / BOX_WARP`` (= 1) and read with bilinear ``grid_sample`` (``align_corners=False``,
    zeros outside) at these (grid x -> plane column, grid y -> plane row) coordinates:

    ========  ===========  ========
    plane     column (W)   row (H)
    ========  ===========  ========
    0         x            y
    1         x            z
    2         z            y
    ========  ===========  ========

    This is what InstantMesh's ``project_onto_planes`` computes from its plane axes
    (``coords @ inv(axes)[:, :2]`` with axes identity, swap(y, z), swap(x, z)). It fixes how the
    network reads its own planes; it implies no permutation of the world: the triplane frame's
    x, y, z are sharpit's x, y, z (only the scale differs).

Decoder
    The three features are concatenated (3C, plane 0 first) into an MLP of width 64 with ReLU
    (``net.0, 2, 4, 6``) giving 4 outputs: raw density ``s`` and colour logits. Density is
    ``softplus(s - 1)``; colour is ``sigmoid(logits) * 1.002 - 0.001`` in [-0.001, 1.001].
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .config import BOX_WARP, DENSITY_SHIFT, RGB_PADDING

__all__ = ["PLANE_AXES", "sample_planes", "TriplaneMLP", "TriplaneSynthesizer", "activate_density"]

#: For each plane, the point coordinates read as (column, row): xy, xz, zy.
PLANE_AXES = ((0, 1), (0, 2), (2, 1))


def sample_planes(planes: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinear features of ``points`` on the three planes.

    Args:
        planes: (B, 3, C, H, W) triplanes.
        points: (B, M, 3) triplane-frame coordinates (outside ``[-1, 1]^3`` reads zeros).
    Returns:
        (B, M, 3C) features, plane 0's channels first, in the planes' dtype.
    """
    b, n_planes, c, h, w = planes.shape
    coords = points.to(planes.dtype) * (2.0 / BOX_WARP)
    grid = torch.stack([coords[..., list(axes)] for axes in PLANE_AXES], dim=1)  # (B, 3, M, 2)
    feats = F.grid_sample(planes.reshape(b * n_planes, c, h, w), grid.reshape(b * n_planes, 1, -1, 2),
                          mode="bilinear", padding_mode="zeros", align_corners=False)
    return feats.view(b, n_planes, c, -1).permute(0, 3, 1, 2).reshape(b, -1, n_planes * c)


def activate_density(raw: torch.Tensor) -> torch.Tensor:
    """Raw decoder density -> non-negative density ``softplus(raw - 1)``."""
    return F.softplus(raw - DENSITY_SHIFT)


class TriplaneMLP(nn.Module):
    """``net``: Linear(3C, W) -> ReLU -> (Linear(W, W) -> ReLU) x (layers - 2) -> Linear(W, 4)."""

    def __init__(self, triplane_dim: int, hidden_dim: int = 64, layers: int = 4):
        super().__init__()
        mods = [nn.Linear(3 * triplane_dim, hidden_dim), nn.ReLU()]
        for _ in range(layers - 2):
            mods += [nn.Linear(hidden_dim, hidden_dim), nn.ReLU()]
        mods.append(nn.Linear(hidden_dim, 4))
        self.net = nn.Sequential(*mods)
        for m in self.net:
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, features: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(..., 3C) features -> raw density (...,) and colour (..., 3) in [-0.001, 1.001]."""
        out = self.net(features)
        rgb = torch.sigmoid(out[..., 1:]) * (1 + 2 * RGB_PADDING) - RGB_PADDING
        return out[..., 0], rgb


class TriplaneSynthesizer(nn.Module):
    """Holds the decoder; turns planes + points into densities and colours."""

    def __init__(self, triplane_dim: int, hidden_dim: int = 64, layers: int = 4):
        super().__init__()
        self.decoder = TriplaneMLP(triplane_dim, hidden_dim, layers)

    def raw(self, planes: torch.Tensor, points: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, C, H, W) planes, (B, M, 3) triplane-frame points -> raw density (B, M) and
        colour (B, M, 3)."""
        return self.decoder(sample_planes(planes, points))

    def forward(self, planes: torch.Tensor, points: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Like :meth:`raw` but with the density activated (``softplus(raw - 1)``, >= 0)."""
        raw, rgb = self.raw(planes, points)
        return activate_density(raw), rgb
