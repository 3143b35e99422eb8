"""How every image metric sees an image: quantised to 8 bits like a saved PNG.

All image metrics of :mod:`sharpit.evaluation` read the same (N, 3, H, W) uint8 views, made by
:func:`quantize` with the rounding :func:`sharpit.grid.tensor_to_pil` uses when sharpit saves a
grid, so a metric computed during a run equals the one computed later from the saved PNGs.
"""

from __future__ import annotations

import torch

from ..errors import InputError
from ..grid import grid_to_views

__all__ = ["quantize", "as_views_uint8"]


def quantize(images: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) float in [0, 1] -> uint8 in [0, 255] (clamped, rounded to nearest); uint8 passes."""
    if images.dtype == torch.uint8:
        return images
    if not images.is_floating_point():
        raise InputError(f"images must be float in [0, 1] or uint8, got {images.dtype}")
    return (images.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8)


def as_views_uint8(images: torch.Tensor, name: str = "images") -> torch.Tensor:
    """Views to measure, as (N, 3, h, w) uint8.

    Accepts one 3x2 grid (3, 3t, 2t) (split into its six t x t views, row-major,
    :func:`sharpit.grid.grid_to_views`) or views (N, 3, h, w). Float input is in [0, 1].

    Raises:
        InputError: another shape, or a grid whose sides do not divide into 3 rows and 2 columns
            (names ``name``).
    """
    if not isinstance(images, torch.Tensor):
        raise InputError(f"{name} must be a tensor, got {type(images).__name__}")
    if images.ndim == 3:
        if images.shape[0] != 3:
            raise InputError(f"{name}: a grid must be (3, H, W) RGB, got {tuple(images.shape)}")
        try:
            images = grid_to_views(images)
        except InputError as exc:
            raise InputError(f"{name}: {exc}") from None
    if images.ndim != 4 or images.shape[1] != 3:
        raise InputError(f"{name} must be a (3, H, W) grid or (N, 3, H, W) RGB views, got {tuple(images.shape)}")
    return quantize(images)
