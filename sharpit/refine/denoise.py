"""The conditioned UNet call shared by inference and training (both conditioning modes).

Modes:

* ``"concat"``: the UNet takes ``2 * latent_channels`` (8) input channels,
  ``[model input (4), condition latent (4)]`` concatenated along channels;
* ``"reference"``: a ``latent_channels`` (4) UNet gets the condition through Zero123++ reference
  attention (:mod:`sharpit.refine.reference_attention`). The condition latent may have another
  spatial size than the sample: Zero123++ conditions a 120x80 grid latent on the 64x64 latent of
  one 512x512 image (``diffusers-support/pipeline.py``, ``RefOnlyNoisedUNet.forward``).
"""

from __future__ import annotations

from typing import Optional

import torch

from ..errors import ConfigError
from .reference_attention import enable_reference_attention, noise_reference_latents, reference_unet_forward

__all__ = ["CONDITIONING_MODES", "resolve_conditioning_mode", "conditioned_unet_forward"]

CONDITIONING_MODES = ("concat", "reference")


def resolve_conditioning_mode(unet_in_channels: int, latent_channels: int, requested: Optional[str] = None) -> str:
    """Pick the conditioning mode from the UNet's input channels, or check a requested one.

    ``in_channels == 2 * latent_channels`` means ``"concat"``, ``== latent_channels`` means ``"reference"``.
    """
    if requested is not None and requested not in CONDITIONING_MODES:
        raise ConfigError(f"conditioning_mode must be one of {CONDITIONING_MODES} or None, got {requested!r}")
    fits = {"concat": unet_in_channels == 2 * latent_channels, "reference": unet_in_channels == latent_channels}
    if requested is None:
        for mode, ok in fits.items():
            if ok:
                return mode
        raise ConfigError(
            f"cannot infer the conditioning mode: the UNet takes {unet_in_channels} input channels but the VAE "
            f"has {latent_channels} latent channels (expected {2 * latent_channels} for concat or "
            f"{latent_channels} for reference attention)")
    if not fits[requested]:
        need = 2 * latent_channels if requested == "concat" else latent_channels
        raise ConfigError(f"conditioning_mode={requested!r} needs a UNet with {need} input channels, "
                          f"this one has {unet_in_channels}")
    return requested


def conditioned_unet_forward(unet, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor,
                             condition_latents: torch.Tensor, mode: str, scheduler=None,
                             reference_noise: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Run the UNet on ``sample`` conditioned on ``condition_latents``.

    Args:
        unet: a ``UNet2DConditionModel``.
        sample: (B, 4, h, w) model input (already ``scheduler.scale_model_input``-ed at inference).
        timestep: scalar or (B,) timesteps.
        encoder_hidden_states: (B, 77, D) prompt embeddings.
        condition_latents: (B, 4, h, w) condition latents (:func:`encode_condition_latents`, or
            :func:`null_condition_latents` for the unconditional branch); in reference mode any
            (B, 4, h', w').
        mode: ``"concat"`` or ``"reference"``.
        scheduler: reference mode only: noises the condition to ``timestep`` (``add_noise``, then
            ``scale_model_input``).
        reference_noise: reference mode only: fresh standard normal noise shaped like ``condition_latents``.
    Returns:
        The UNet output, (B, 4, h, w) (a v-prediction for Zero123++/Sharp-It).
    """
    if condition_latents.shape[0] != sample.shape[0] or (
            mode == "concat" and condition_latents.shape[2:] != sample.shape[2:]):
        raise ConfigError(f"condition latents {tuple(condition_latents.shape)} do not match the sample "
                          f"{tuple(sample.shape)}")
    cond = condition_latents.to(sample.dtype)
    if mode == "concat":
        return unet(torch.cat([sample, cond], dim=1), timestep, encoder_hidden_states=encoder_hidden_states,
                    return_dict=False)[0]
    if mode == "reference":
        if scheduler is None or reference_noise is None:
            raise ConfigError("reference mode needs a scheduler and reference_noise to noise the condition")
        bank = enable_reference_attention(unet)
        reference = noise_reference_latents(scheduler, cond, reference_noise.to(cond), timestep)
        return reference_unet_forward(unet, bank, sample, timestep, encoder_hidden_states, reference)
    raise ConfigError(f"conditioning mode must be one of {CONDITIONING_MODES}, got {mode!r}")
