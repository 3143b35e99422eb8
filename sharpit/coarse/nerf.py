"""Volume rendering of a Shap-E latent from arbitrary sharpit cameras, through diffusers'
``ShapERenderer.render_rays`` (coarse stratified samples, then importance samples).

diffusers' stratified sampler calls ``torch.manual_seed(0)`` on every call; the global CPU and
CUDA RNG states are saved and restored around it, so callers' random streams are untouched.
"""

from __future__ import annotations

from typing import Tuple

import torch

from ..cameras import CameraBatch, sharpit_to_shap_e
from ..errors import InputError
from ..mesh import Similarity

__all__ = ["render_latent_nerf"]


def _fork_all_rng():
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    return torch.random.fork_rng(devices=devices)


@torch.no_grad()
def render_latent_nerf(renderer, cameras: CameraBatch, framing: Similarity, size: int,
                       n_coarse_samples: int = 64, n_fine_samples: int = 128,
                       ray_batch_size: int = 4096) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Render the latent loaded in ``renderer.mlp`` (see ``load_latent_into_mlp``).

    Args:
        renderer: a diffusers ``ShapERenderer``.
        cameras: N sharpit-world cameras.
        framing: the map from the Shap-E frame to the sharpit world (rotation, scale,
            translation); rays are mapped back through its inverse.
        size: side of the square views in pixels.
        n_coarse_samples, n_fine_samples: samples per ray of the two passes (Shap-E: 64, 128).
        ray_batch_size: rays per ``render_rays`` call (bounds memory).
    Returns:
        ``(images, alpha, depth)``: (N, 3, H, W) sRGB in [0, 1] over the renderer's background,
        (N, 1, H, W) opacity in [0, 1], and (N, 1, H, W) expected depth along each camera's viewing
        axis in sharpit units (0 where empty).
    """
    from diffusers.pipelines.shap_e.renderer import StratifiedRaySampler

    for name, value in (("n_coarse_samples", n_coarse_samples), ("n_fine_samples", n_fine_samples),
                        ("ray_batch_size", ray_batch_size), ("size", size)):
        if int(value) < 1:
            raise InputError(f"{name} must be >= 1, got {value}")
    dev = renderer.device
    cams = cameras.to(dev)
    origins, dirs = cams.rays(size)                                     # (N, H, W, 3) sharpit
    n = len(cams)
    scale = float(framing.scale)
    shift = framing.translation.to(device=dev, dtype=origins.dtype)
    o_se = sharpit_to_shap_e((origins - shift) / scale).reshape(-1, 3)
    d_se = sharpit_to_shap_e(dirs).reshape(-1, 3)
    forward = -cams.c2w[:, :3, 2]                                       # (N, 3) viewing axis
    cos = (dirs * forward[:, None, None, :]).sum(-1).reshape(-1)

    rgb, alpha, t_mean = [], [], []
    with _fork_all_rng():
        for start in range(0, o_se.shape[0], ray_batch_size):
            rays = torch.stack([o_se[start:start + ray_batch_size], d_se[start:start + ray_batch_size]],
                               dim=-2)[None].to(renderer.dtype)       # (1, R, 2, 3)
            _, fine_sampler, coarse_out = renderer.render_rays(rays, StratifiedRaySampler(),
                                                               n_coarse_samples)
            channels, final, _ = renderer.render_rays(rays, fine_sampler, n_fine_samples,
                                                      prev_model_out=coarse_out)
            weights = final.weights[0, :, :, 0].float()                # (R, S)
            hit = final.volume_range.intersected[0, :, 0]
            a = torch.where(hit, weights.sum(-1), torch.zeros_like(weights[:, 0]))
            t = (weights * final.ts[0, :, :, 0].float()).sum(-1) / a.clamp_min(1e-6)
            rgb.append(channels[0].float())
            alpha.append(a)
            t_mean.append(torch.where(a > 1e-6, t, torch.zeros_like(t)))
    h = w = size
    images = torch.cat(rgb).clamp(0, 1).reshape(n, h, w, 3).permute(0, 3, 1, 2).contiguous()
    alpha_t = torch.cat(alpha).clamp(0, 1).reshape(n, 1, h, w)
    depth = (torch.cat(t_mean) * scale * cos).reshape(n, 1, h, w)
    return images, alpha_t, depth
