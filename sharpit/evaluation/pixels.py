"""Pixel-aligned image metrics, per view: PSNR and SSIM (scikit-image's implementations).

Both compare a view with the ground-truth render of the same camera, so they only make sense
where the two are pixel-aligned (the six fixed Zero123++ v1.2 views of the same normalised
object). Images are the 8-bit views of :mod:`sharpit.evaluation.images`.

* PSNR: ``10 log10(255^2 / MSE)`` over all pixels and channels, in dB; identical views give
  ``inf`` (kept as such; JSON files store it as ``Infinity``, which Python's json reads back).
* SSIM: Wang et al. 2004 as in their reference code: Gaussian window sigma 1.5 (11 x 11),
  K1 = 0.01, K2 = 0.03, population (not sample) covariances, data range 255, computed per
  channel and averaged (``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, channel_axis=...)``).

LPIPS, the third per-view metric, is in :mod:`.lpips` (it needs a network and its weights).
"""

from __future__ import annotations

from typing import List

import numpy as np
import torch

from ..errors import InputError
from .images import quantize

__all__ = ["psnr", "ssim"]


def _pairs(images: torch.Tensor, reference: torch.Tensor):
    a, b = quantize(images), quantize(reference)
    if a.shape != b.shape or a.ndim != 4:
        raise InputError(f"pixel metrics need views and references of the same (N, 3, H, W) shape, got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    return a.permute(0, 2, 3, 1).cpu().numpy(), b.permute(0, 2, 3, 1).cpu().numpy()


def psnr(images: torch.Tensor, reference: torch.Tensor) -> List[float]:
    """PSNR in dB of each view against its reference ((N, 3, H, W) uint8 or float in [0, 1]): N floats."""
    a, b = _pairs(images, reference)
    out = []
    for x, y in zip(a, b):
        mse = float(np.mean((x.astype(np.float64) - y.astype(np.float64)) ** 2))
        out.append(float("inf") if mse == 0 else 10.0 * np.log10(255.0 ** 2 / mse))
    return out


def ssim(images: torch.Tensor, reference: torch.Tensor) -> List[float]:
    """SSIM of each view against its reference ((N, 3, H, W) uint8 or float in [0, 1]): N floats in [-1, 1]."""
    from skimage.metrics import structural_similarity

    a, b = _pairs(images, reference)
    if min(a.shape[1:3]) < 11:
        raise InputError(f"SSIM's 11x11 window needs views of at least 11x11 pixels, got {a.shape[1]}x{a.shape[2]}")
    return [float(structural_similarity(x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                        data_range=255, channel_axis=-1)) for x, y in zip(a, b)]
