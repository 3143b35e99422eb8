"""Volume rendering of a triplane NeRF: coarse stratified samples inside the box ``[-1, 1]^3``,
importance samples drawn from the coarse weights, mid-point compositing over a white background.

Everything here is in the triplane frame (see :mod:`sharpit.reconstruct.config`). Samples
outside the box get zero density, as in InstantMesh's renderer, so rays that miss the box are
white. Density between two samples is ``softplus(mean(raw_a, raw_b) - 1)``.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from ..errors import InputError
from .config import TRIPLANE_BOUND
from .triplane import TriplaneSynthesizer, activate_density

__all__ = ["ray_box_limits", "render_rays", "DEFAULT_POINT_BUDGET"]

#: Sample points evaluated per chunk of rays (bounds memory: ~3C * 4 bytes per point).
DEFAULT_POINT_BUDGET = 1 << 18


def ray_box_limits(origins: torch.Tensor, dirs: torch.Tensor, bound: float = TRIPLANE_BOUND
                   ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Entry and exit distances of rays through the box ``[-bound, bound]^3``.

    Args:
        origins, dirs: (..., 3) ray origins and directions.
    Returns:
        ``(near, far)`` each (...,); ``near >= far`` where the ray misses the box.
    """
    safe = torch.where(dirs.abs() < 1e-12, torch.full_like(dirs, 1e-12), dirs)
    t0 = (-bound - origins) / safe
    t1 = (bound - origins) / safe
    near = torch.minimum(t0, t1).amax(-1).clamp_min(0.0)
    far = torch.maximum(t0, t1).amin(-1)
    return near, far


def _composite(raw: torch.Tensor, rgb: torch.Tensor, depths: torch.Tensor
               ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mid-point quadrature. raw (R, S), rgb (R, S, 3), depths (R, S) sorted ->
    composite rgb (R, 3) on black, expected depth (R,), weights (R, S - 1)."""
    deltas = depths[:, 1:] - depths[:, :-1]
    sigma = activate_density((raw[:, 1:] + raw[:, :-1]) / 2)
    alpha = 1.0 - torch.exp(-sigma * deltas)
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha + 1e-10], dim=1), dim=1)
    weights = alpha * trans[:, :-1]
    rgb_mid = (rgb[:, 1:] + rgb[:, :-1]) / 2
    depth_mid = (depths[:, 1:] + depths[:, :-1]) / 2
    return (weights[..., None] * rgb_mid).sum(1), (weights * depth_mid).sum(1), weights


def _importance(depths: torch.Tensor, weights: torch.Tensor, n: int,
                generator: Optional[torch.Generator]) -> torch.Tensor:
    """Inverse-CDF samples (R, n) from the piecewise-constant pdf of the (blurred) coarse weights
    over the intervals between coarse depths (R, S)."""
    w = F.max_pool1d(weights[:, None], 2, 1, padding=1)
    w = F.avg_pool1d(w, 2, 1)[:, 0] + 0.01  # (R, S - 1)
    cdf = torch.cumsum(w / w.sum(-1, keepdim=True), dim=-1)
    cdf = torch.cat([torch.zeros_like(cdf[:, :1]), cdf], dim=-1).contiguous()  # (R, S)
    u = torch.rand(depths.shape[0], n, device=depths.device, dtype=depths.dtype, generator=generator)
    idx = torch.searchsorted(cdf, u, right=True).clamp(1, depths.shape[1] - 1)
    c0, c1 = cdf.gather(1, idx - 1), cdf.gather(1, idx)
    d0, d1 = depths.gather(1, idx - 1), depths.gather(1, idx)
    frac = (u - c0) / (c1 - c0).clamp_min(1e-8)
    return d0 + frac.clamp(0, 1) * (d1 - d0)


def _evaluate(synth: TriplaneSynthesizer, planes: torch.Tensor, origins: torch.Tensor,
              dirs: torch.Tensor, depths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Raw density (R, S) and colour (R, S, 3) at ``origins + depths * dirs``; out-of-box
    samples get a density of ``finfo.min / 3`` (zero after activation)."""
    pts = origins[:, None] + depths[..., None] * dirs[:, None]
    raw, rgb = synth.raw(planes, pts.reshape(1, -1, 3))
    raw = raw.view(depths.shape).float()
    rgb = rgb.view(*depths.shape, 3).float()
    inside = (pts.abs() <= TRIPLANE_BOUND).all(-1)
    raw = torch.where(inside, raw, torch.full_like(raw, torch.finfo(raw.dtype).min / 3))
    return raw, torch.where(inside[..., None], rgb, torch.zeros_like(rgb))


@torch.no_grad()
def render_rays(synth: TriplaneSynthesizer, planes: torch.Tensor, origins: torch.Tensor,
                dirs: torch.Tensor, n_coarse: int, n_importance: int,
                generator: Optional[torch.Generator] = None, white_background: bool = True,
                point_budget: int = DEFAULT_POINT_BUDGET) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Render rays through one object's triplanes, in chunks.

    Args:
        synth: the decoder. planes: (1, 3, C, H, W).
        origins, dirs: (R, 3) triplane-frame rays (directions need not be unit length; depths
            are in units of their length).
        n_coarse, n_importance: samples per ray of each pass (InstantMesh: half of
            ``rendering_samples_per_ray`` each).
        generator: for the stratified jitter and importance draws.
        white_background: composite over white (InstantMesh's training setting).
        point_budget: samples evaluated per chunk.
    Returns:
        ``(rgb, depth, alpha)``: (R, 3) float32 colours in [0, 1], (R,) expected depth (0 where
        empty; divide by ``alpha`` for the surface depth), (R,) accumulated opacity.
    """
    if n_coarse < 2:
        raise InputError(f"need at least 2 coarse samples per ray, got {n_coarse}")
    chunk = max(1, point_budget // (n_coarse + n_importance))
    out_rgb, out_depth, out_alpha = [], [], []
    steps = torch.linspace(0.0, 1.0, n_coarse, device=origins.device)
    for i in range(0, origins.shape[0], chunk):
        o, d = origins[i:i + chunk].float(), dirs[i:i + chunk].float()
        near, far = ray_box_limits(o, d)
        far = torch.maximum(far, near)
        span = far - near
        depths = near[:, None] + span[:, None] * steps
        # Drawn sample-major, as the official renderer's ``rand_like`` of its permuted depths, so a
        # seeded generator jitters the same samples as InstantMesh (tests/test_parity_instantmesh.py).
        jitter = torch.rand(depths.shape[::-1], device=depths.device, generator=generator).T
        depths = depths + jitter * (span / (n_coarse - 1))[:, None]
        raw, rgb = _evaluate(synth, planes, o, d, depths)
        if n_importance > 0:
            _, _, weights = _composite(raw, rgb, depths)
            fine = _importance(depths, weights, n_importance, generator)
            raw_f, rgb_f = _evaluate(synth, planes, o, d, fine)
            depths, order = torch.sort(torch.cat([depths, fine], dim=1), dim=1)
            raw = torch.cat([raw, raw_f], dim=1).gather(1, order)
            rgb = torch.cat([rgb, rgb_f], dim=1).gather(1, order[..., None].expand(-1, -1, 3))
        color, depth, weights = _composite(raw, rgb, depths)
        alpha = weights.sum(1)
        if white_background:
            color = color + (1.0 - alpha[:, None])
        out_rgb.append(color.clamp(0, 1))
        out_depth.append(depth)
        out_alpha.append(alpha)
    return torch.cat(out_rgb), torch.cat(out_depth), torch.cat(out_alpha)
