"""Zero123++ v1.2 image and latent scalings: the one place for these constants.

Zero123++ (and every model fine-tuned from it, Sharp-It included) works in a shifted and
rescaled latent space:

* images in [-1, 1] are multiplied by ``0.5 / 0.8`` before the VAE encoder
  (:func:`scale_image`) and divided by it after the decoder (:func:`unscale_image`);
* VAE latents, already multiplied by ``vae.config.scaling_factor`` (0.18215), are shifted by
  ``-0.22`` and multiplied by ``0.75`` (:func:`scale_latents`); :func:`unscale_latents` inverts it.

The helpers :func:`pixels_to_vae_input` and :func:`vae_output_to_pixels` chain the image scaling
with the [0, 1] <-> [-1, 1] conversion. All functions are elementwise and shape-preserving.
"""

from __future__ import annotations

import torch

__all__ = [
    "IMAGE_SCALE",
    "LATENT_SHIFT",
    "LATENT_SCALE",
    "scale_image",
    "unscale_image",
    "scale_latents",
    "unscale_latents",
    "pixels_to_vae_input",
    "vae_output_to_pixels",
]

#: Images in [-1, 1] are multiplied by this before VAE encoding (Zero123++'s ``feature_extractor_vae``
#: normalises [0, 1] pixels with mean 0.5 and std 0.8, which is the same map).
IMAGE_SCALE = 0.5 / 0.8
#: Shift subtracted from ``scaling_factor``-multiplied latents.
LATENT_SHIFT = 0.22
#: Factor applied to the shifted latents.
LATENT_SCALE = 0.75


def scale_image(image: torch.Tensor) -> torch.Tensor:
    """Image in [-1, 1] -> VAE input in [-0.625, 0.625] (``x * 0.5 / 0.8``)."""
    return image * IMAGE_SCALE


def unscale_image(image: torch.Tensor) -> torch.Tensor:
    """VAE output -> image in (about) [-1, 1] (``x / 0.5 * 0.8``); inverse of :func:`scale_image`."""
    return image / IMAGE_SCALE


def scale_latents(latents: torch.Tensor) -> torch.Tensor:
    """``scaling_factor``-multiplied VAE latents -> Zero123++ latents: ``(z - 0.22) * 0.75``."""
    return (latents - LATENT_SHIFT) * LATENT_SCALE


def unscale_latents(latents: torch.Tensor) -> torch.Tensor:
    """Zero123++ latents -> ``scaling_factor``-multiplied VAE latents: ``z / 0.75 + 0.22``."""
    return latents / LATENT_SCALE + LATENT_SHIFT


def pixels_to_vae_input(pixels: torch.Tensor) -> torch.Tensor:
    """Pixels in [0, 1] -> the VAE encoder's input, ``scale_image(2 x - 1)`` in [-0.625, 0.625]."""
    return scale_image(pixels * 2.0 - 1.0)


def vae_output_to_pixels(decoded: torch.Tensor) -> torch.Tensor:
    """The VAE decoder's output -> pixels in [0, 1] (``(unscale_image(y) + 1) / 2``, clamped)."""
    return ((unscale_image(decoded) + 1.0) * 0.5).clamp(0.0, 1.0)
