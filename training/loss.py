"""The Sharp-It training objective: v-prediction MSE on Zero123++ latents with CFG dropout.

All randomness of a step (VAE posterior samples, timesteps, noise, dropped samples, reference
noise, null-condition samples) is drawn from one CPU generator made by :func:`step_generator` from
``(seed, step, process)``, so a step's result does not depend on what ran before it: the base of
bit-identical resumption.

Dropped samples get the pipeline's unconditional branch (:class:`UnconditionalBranch`, built once
per run by :func:`unconditional_branch` from the pipeline's ``null_condition`` and
``condition_latent_space`` settings): the ``""`` prompt and a fresh sample of the null image's
latent, through the same :func:`~sharpit.refine.conditioning.null_condition_latents` and
:func:`~sharpit.refine.conditioning.drop_conditions` that inference uses.

Encoding is split in two: :func:`encode_posteriors` runs the frozen VAE and text encoder (the
deterministic, expensive part, which ``training.precompute_latents`` stores once) and
:func:`sample_batch` draws the step's VAE posterior samples. :func:`encode_batch` is the two in a
row, and gives bit for bit what the pipeline's ``encode_target_latents`` and
``encode_condition_latents`` return for the same generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

from sharpit.errors import InputError
from sharpit.refine.conditioning import (NULL_PROMPT, drop_conditions, encode_posterior, encode_prompt,
                                         null_condition_latents, sample_condition_latents)
from sharpit.refine.denoise import conditioned_unet_forward
from sharpit.refine.scaling import scale_latents

__all__ = ["make_noise_scheduler", "EncodedPosteriors", "EncodedBatch", "encode_posteriors", "sample_batch",
           "encode_batch", "step_generator", "sharpit_loss", "null_prompt_embeds", "UnconditionalBranch",
           "unconditional_branch"]


def make_noise_scheduler() -> DDPMScheduler:
    """The training schedule (SPEC section 3): DDPM, linear betas 0.00085 to 0.012, 1000 steps,
    v-prediction."""
    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="linear",
                         prediction_type="v_prediction")


def step_generator(seed: int, step: int, process_index: int = 0) -> torch.Generator:
    """CPU generator for one micro-step of one process, a pure function of its arguments."""
    mixed = (int(seed) * 1_000_003 + int(step)) * 1_009 + int(process_index)
    return torch.Generator("cpu").manual_seed(mixed % (2 ** 63))


@dataclass
class EncodedPosteriors:
    """What the frozen models make of one batch, before any random draw.

    Attributes:
        target: (B, 2 * 4, h, w) VAE posterior parameters (``latent_dist.parameters``: mean then
            log-variance along channels) of the target grids, in VAE space (no scaling).
        condition: (B, 2 * 4, h, w) the same for the coarse grids.
        prompt_embeds: (B, 77, D) caption embeddings.
    """

    target: torch.Tensor
    condition: torch.Tensor
    prompt_embeds: torch.Tensor


@dataclass
class EncodedBatch:
    """Model-space inputs of one batch.

    Attributes:
        latents: (B, 4, h, w) Zero123++-scaled target latents (as ``encode_target_latents``).
        condition: (B, 4, h, w) condition latents of the coarse grids, in the pipeline's
            ``condition_latent_space`` (as ``encode_condition_latents``).
        prompt_embeds: (B, 77, D) caption embeddings.
    """

    latents: torch.Tensor
    condition: torch.Tensor
    prompt_embeds: torch.Tensor


@torch.no_grad()
def encode_posteriors(vae, tokenizer, text_encoder, target: torch.Tensor, coarse: torch.Tensor,
                      captions: Sequence[str]) -> EncodedPosteriors:
    """Run the frozen models on (B, 3, H, W) target and coarse grids in [0, 1] and B captions."""
    if target.ndim != 4 or target.shape[1] != 3 or target.shape != coarse.shape or target.shape[0] != len(captions):
        raise InputError(f"target {tuple(target.shape)}, coarse {tuple(coarse.shape)} and {len(captions)} "
                         "captions do not form one batch of (B, 3, H, W) grids")
    return EncodedPosteriors(encode_posterior(vae, target), encode_posterior(vae, coarse),
                             encode_prompt(tokenizer, text_encoder, list(captions)))


@torch.no_grad()
def sample_batch(posteriors: EncodedPosteriors, scaling_factor: float, generator: torch.Generator,
                 condition_latent_space: str = "raw") -> EncodedBatch:
    """Draw the step's posterior samples (target first, then condition) and scale the target latents.

    Args:
        posteriors: from :func:`encode_posteriors` or a latent cache.
        scaling_factor: the VAE's ``config.scaling_factor``.
        generator: the step generator; it is advanced exactly as ``vae.encode(...).latent_dist.sample``
            would advance it.
        condition_latent_space: the pipeline's setting (``"raw"`` or ``"scaled"``).
    Returns:
        float32 :class:`EncodedBatch` on the posteriors' device.
    """
    target = DiagonalGaussianDistribution(posteriors.target).sample(generator)
    condition = sample_condition_latents(posteriors.condition, generator, condition_latent_space, scaling_factor)
    return EncodedBatch(scale_latents(target * scaling_factor).float(), condition.float(),
                        posteriors.prompt_embeds.float())


def encode_batch(vae, tokenizer, text_encoder, target: torch.Tensor, coarse: torch.Tensor,
                 captions: Sequence[str], generator: torch.Generator, condition_latent_space: str = "raw",
                 ) -> EncodedBatch:
    """Encode (B, 3, H, W) target and coarse grids in [0, 1] and B captions with the frozen models."""
    posteriors = encode_posteriors(vae, tokenizer, text_encoder, target, coarse, captions)
    return sample_batch(posteriors, vae.config.scaling_factor, generator, condition_latent_space)


@torch.no_grad()
def null_prompt_embeds(tokenizer, text_encoder) -> torch.Tensor:
    """(1, 77, D) embeddings of the unconditional prompt ``""`` (what the pipeline's CFG branch uses)."""
    return encode_prompt(tokenizer, text_encoder, NULL_PROMPT).float()


@dataclass
class UnconditionalBranch:
    """What a dropped training sample gets: the pipeline's unconditional CFG branch.

    Attributes:
        prompt_embeds: (1, 77, D) float32 embeddings of ``""``.
        condition_posterior: (1, 2C, h, w) float32 posterior of the ``null_condition`` image at the
            training grids' size (:meth:`SharpItRefinePipeline.null_condition_posterior`).
        condition_latent_space: the pipeline's ``condition_latent_space``.
        scaling_factor: the VAE's ``config.scaling_factor``.
    """

    prompt_embeds: torch.Tensor
    condition_posterior: torch.Tensor
    condition_latent_space: str
    scaling_factor: float

    def condition_latents(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """(batch, C, h, w) fresh null-condition samples (as the official ``encode(zeros_like(...))``)."""
        return null_condition_latents(self.condition_posterior, batch, generator, self.condition_latent_space,
                                      self.scaling_factor).float()


def unconditional_branch(pipe, grid_size: Tuple[int, int], device: Optional[torch.device] = None,
                         ) -> UnconditionalBranch:
    """The unconditional branch of ``pipe`` for (height, width) training grids, built once per run.

    The null image is encoded where the VAE is (its posterior is cached by the pipeline) and moved
    to ``device`` (default: the VAE's).
    """
    factor = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    posterior = pipe.null_condition_posterior((grid_size[0] // factor, grid_size[1] // factor), pipe.vae.device)
    device = device if device is not None else pipe.vae.device
    return UnconditionalBranch(null_prompt_embeds(pipe.tokenizer, pipe.text_encoder).to(device),
                               posterior.float().to(device), pipe.config.condition_latent_space,
                               pipe.vae.config.scaling_factor)


def sharpit_loss(unet, noise_scheduler: DDPMScheduler, batch: EncodedBatch, unconditional: UnconditionalBranch,
                 mode: str, cfg_drop: float, generator: torch.Generator) -> Dict[str, torch.Tensor]:
    """One forward pass of the objective.

    A timestep ``t ~ U{0, T-1}`` and noise ``eps ~ N(0, I)`` per sample give the noisy latent
    ``add_noise(x0, eps, t)``; the UNet predicts ``v = get_velocity(x0, eps, t)``. A fraction
    ``cfg_drop`` of samples gets the unconditional branch: the null prompt and a null-condition
    sample (:func:`~sharpit.refine.conditioning.drop_conditions`). Draws, in order: timesteps,
    noise, the drop mask, the reference noise (reference mode), the null-condition samples (always,
    one per sample, so the generator advances the same way whatever is dropped).

    Returns:
        dict with ``"loss"`` (scalar float32 MSE, differentiable), ``"timesteps"`` (B,) and
        ``"dropped"`` (B,) bool.
    """
    x0 = batch.latents
    b = x0.shape[0]
    device = x0.device
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (b,), generator=generator)
    noise = torch.randn(x0.shape, generator=generator, dtype=torch.float32)
    dropped = torch.rand(b, generator=generator) < cfg_drop
    reference_noise = torch.randn(x0.shape, generator=generator, dtype=torch.float32) if mode == "reference" else None
    null_latents = unconditional.condition_latents(b, generator)
    timesteps, noise = timesteps.to(device), noise.to(device)
    embeds, condition = drop_conditions(batch.prompt_embeds, batch.condition, unconditional.prompt_embeds,
                                        null_latents, dropped)
    noisy = noise_scheduler.add_noise(x0, noise, timesteps)
    target = noise_scheduler.get_velocity(x0, noise, timesteps)
    dtype = unet.dtype if hasattr(unet, "dtype") else x0.dtype
    pred = conditioned_unet_forward(
        unet, noisy.to(dtype), timesteps, embeds.to(dtype), condition.to(dtype), mode, scheduler=noise_scheduler,
        reference_noise=None if reference_noise is None else reference_noise.to(device))
    loss = F.mse_loss(pred.float(), target.float(), reduction="mean")
    return {"loss": loss, "timesteps": timesteps, "dropped": dropped}
