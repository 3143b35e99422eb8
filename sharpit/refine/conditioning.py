"""Encoders shared by the refiner pipeline and training: prompt, condition and target latents.

Spaces (see :mod:`sharpit.refine.scaling`):

* *pixels*: (B, 3, 960, 640) float grids in [0, 1], white background;
* *condition latents*: ``vae.encode(scale_image(2 x - 1)).latent_dist.sample()`` with no
  ``scaling_factor`` and no latent scaling, (B, 4, 120, 80) for a full grid (SPEC section 3);
* *target latents*: the Zero123++ space the UNet denoises, ``scale_latents(sample * scaling_factor)``.

The unconditional branch of classifier-free guidance, at inference and for the 10 % dropped
training samples alike, is the empty prompt ``""`` together with an all-zero condition latent;
:func:`null_condition_latents` and :func:`drop_conditions` are the one definition of it.
"""

from __future__ import annotations

import contextlib
from typing import List, Optional, Sequence, Union

import torch

from ..errors import InputError
from .scaling import pixels_to_vae_input, scale_latents, unscale_latents, vae_output_to_pixels

__all__ = [
    "NULL_PROMPT",
    "vae_precision",
    "encode_prompt",
    "encode_condition_latents",
    "encode_target_latents",
    "decode_latents",
    "null_condition_latents",
    "drop_conditions",
]

#: The prompt of the unconditional branch.
NULL_PROMPT = ""


def encode_prompt(tokenizer, text_encoder, prompt: Union[str, Sequence[str]],
                  device: Optional[torch.device] = None) -> torch.Tensor:
    """Encode prompts with the CLIP text encoder (last hidden state, no attention mask, as SD2/Zero123++).

    Args:
        tokenizer: a ``CLIPTokenizer``; prompts are padded/truncated to ``model_max_length`` (77).
        text_encoder: a ``CLIPTextModel``.
        prompt: one string or a list of strings.
        device: where the token ids go; defaults to the text encoder's device.
    Returns:
        (B, 77, hidden_size) embeddings in the text encoder's dtype.
    """
    prompts: List[str] = [prompt] if isinstance(prompt, str) else list(prompt)
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise InputError("prompt must be a string or a non-empty list of strings")
    ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids
    device = device if device is not None else text_encoder.device
    return text_encoder(ids.to(device))[0]


@contextlib.contextmanager
def vae_precision(vae):
    """Run the VAE in float32 when it is float16 and its config asks for it (``force_upcast``)."""
    dtype = vae.dtype
    upcast = dtype == torch.float16 and getattr(vae.config, "force_upcast", False)
    if upcast:
        vae.to(dtype=torch.float32)
    try:
        yield vae.dtype
    finally:
        if upcast:
            vae.to(dtype=dtype)


def _check_pixels(pixels: torch.Tensor) -> None:
    if not isinstance(pixels, torch.Tensor) or pixels.ndim != 4 or pixels.shape[1] != 3:
        raise InputError(f"expected a (B, 3, H, W) image tensor in [0, 1], got "
                         f"{tuple(pixels.shape) if isinstance(pixels, torch.Tensor) else type(pixels).__name__}")


def _encode(vae, pixels: torch.Tensor, generator, device) -> torch.Tensor:
    _check_pixels(pixels)
    with vae_precision(vae) as dtype:
        x = pixels_to_vae_input(pixels.to(device=device or vae.device, dtype=dtype))
        latents = vae.encode(x).latent_dist.sample(generator)
    return latents


def encode_condition_latents(vae, pixels: torch.Tensor, generator: Optional[torch.Generator] = None,
                             device: Optional[torch.device] = None) -> torch.Tensor:
    """Condition latents of grids: ``vae.encode(scale_image(2 x - 1)).latent_dist.sample()``, unscaled.

    Args:
        vae: an ``AutoencoderKL`` (slicing/tiling settings are honoured).
        pixels: (B, 3, H, W) in [0, 1].
        generator: for the posterior sample.
        device: where the VAE runs (the pipeline's execution device under CPU offload); default
            the VAE's device.
    Returns:
        (B, latent_channels, H/8, W/8) on ``device`` (float32 when the VAE was upcast).
    """
    return _encode(vae, pixels, generator, device)


def encode_target_latents(vae, pixels: torch.Tensor, generator: Optional[torch.Generator] = None,
                          device: Optional[torch.device] = None) -> torch.Tensor:
    """Latents the UNet denoises: ``scale_latents(sample * scaling_factor)`` of (B, 3, H, W) pixels in [0, 1]."""
    return scale_latents(_encode(vae, pixels, generator, device) * vae.config.scaling_factor)


def decode_latents(vae, latents: torch.Tensor, device: Optional[torch.device] = None) -> torch.Tensor:
    """Inverse of :func:`encode_target_latents`: (B, 4, h, w) Zero123++ latents -> (B, 3, 8h, 8w) pixels in [0, 1]."""
    with vae_precision(vae) as dtype:
        z = unscale_latents(latents.to(device=device or vae.device, dtype=dtype)) / vae.config.scaling_factor
        decoded = vae.decode(z).sample
    return vae_output_to_pixels(decoded.float())


def null_condition_latents(condition_latents: torch.Tensor) -> torch.Tensor:
    """The unconditional condition latent: zeros shaped like ``condition_latents``."""
    return torch.zeros_like(condition_latents)


def drop_conditions(prompt_embeds: torch.Tensor, condition_latents: torch.Tensor,
                    null_prompt_embeds: torch.Tensor, drop: torch.Tensor):
    """Replace the dropped samples of a batch by the unconditional branch (training's CFG dropout).

    Args:
        prompt_embeds: (B, 77, D) prompt embeddings.
        condition_latents: (B, C, h, w) condition latents.
        null_prompt_embeds: (1, 77, D) or (B, 77, D) embeddings of :data:`NULL_PROMPT`.
        drop: (B,) bool, True where the sample is dropped.
    Returns:
        ``(prompt_embeds, condition_latents)`` with dropped rows set to the null prompt and zeros.
    """
    if drop.shape != (prompt_embeds.shape[0],) or condition_latents.shape[0] != prompt_embeds.shape[0]:
        raise InputError(f"drop must be a ({prompt_embeds.shape[0]},) bool mask matching the batch, "
                         f"got {tuple(drop.shape)} and condition batch {condition_latents.shape[0]}")
    drop = drop.to(device=prompt_embeds.device, dtype=torch.bool)
    embeds = torch.where(drop[:, None, None], null_prompt_embeds.to(prompt_embeds), prompt_embeds)
    cond = torch.where(drop.to(condition_latents.device)[:, None, None, None],
                       null_condition_latents(condition_latents), condition_latents)
    return embeds, cond
