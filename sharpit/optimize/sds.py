"""The refiner as a frozen prior: multi-view score distillation on the 3x2 grid latent.

Spaces and conventions are the refiner's own (reused, not restated): grids are (B, 3, 960, 640)
pixels in [0, 1] (:mod:`sharpit.grid`), latents the Zero123++-scaled ones the UNet denoises
(:func:`~sharpit.refine.conditioning.encode_target_latents`), the condition a posterior sample in
the pipeline's ``condition_latent_space``, the unconditional branch the empty/negative prompt with
the ``null_condition`` latent, and CFG one batched UNet call ``[unconditional, conditional]``
(:meth:`SharpItRefinePipeline.denoise_step`).

Noising. The UNet sees ``scheduler.scale_model_input(x0 + sigma * eps)`` at inference, which for
the Euler schedulers equals the variance-preserving ``x_t = sqrt(a) x0 + sqrt(1 - a) eps`` with
``a = alphas_cumprod[t]``; :meth:`RefinerPrior.noise` builds ``x_t`` directly so any integer
training timestep can be drawn. The output is converted to a noise estimate by the scheduler's
``prediction_type`` (Zero123++ v1.2 and Sharp-It: ``"v_prediction"``,
``eps = sqrt(a) v + sqrt(1 - a) x_t``; ``"epsilon"`` as is).

SDS (DreamFusion, eq. 3; MVDream applies it to all views of a multi-view model at once): the
gradient on the latent is ``w(t) (eps_hat - eps)`` with ``w(t) = 1 - a`` (DreamFusion's
``sigma_t^2``), injected without backpropagating through the UNet as the gradient of
``0.5 * ||z - stopgrad(z - grad)||^2`` (summed, so ``d/dz`` is exactly ``grad``); it flows on
through the VAE encoder and the renderer to the texture.

SDEdit targets (``target="sdedit"``, MVEdit-style): from the same ``x_t``, a few deterministic
DDIM steps to ``t = 0`` with the same CFG give a denoised grid, decoded to pixels and used as an
image target: loss ``0.5 * sum((render - target)^2)`` in grid pixels, whose gradient needs no VAE
encoder backward.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from ..refine.conditioning import (NULL_PROMPT, decode_latents, encode_posterior, encode_target_latents,
                                   sample_condition_latents)
from ..refine.denoise import conditioned_unet_forward

__all__ = ["RefinerPrior", "PREDICTION_TYPES"]

#: UNet outputs the prior can turn into noise estimates.
PREDICTION_TYPES = ("v_prediction", "epsilon")


class RefinerPrior:
    """A frozen :class:`~sharpit.refine.SharpItRefinePipeline` (concat mode) as a diffusion prior.

    Args:
        refiner: a Sharp-It refiner whose UNet takes the condition by concatenation.
        prompt, negative_prompt: the text of the conditional and unconditional branches (the
            latter :data:`sharpit.refine.NULL_PROMPT` by default, as the refiner's own pipeline).
        guidance_scale: CFG scale; ``<= 1`` runs the conditional branch alone.
    Raises:
        ConfigError: not a refiner pipeline, a reference-attention (stock Zero123++) UNet, or a
            scheduler without ``alphas_cumprod`` or with another prediction type.
    """

    def __init__(self, refiner, prompt: str, negative_prompt: str = NULL_PROMPT, guidance_scale: float = 7.5):
        from ..refine import SharpItRefinePipeline

        if not isinstance(refiner, SharpItRefinePipeline):
            raise ConfigError(f"the prior must be a sharpit.refine.SharpItRefinePipeline, got {type(refiner).__name__}")
        if refiner.conditioning_mode != "concat":
            raise ConfigError("texture refinement conditions the prior on the coarse grid, which needs a Sharp-It "
                              "refiner (concat UNet, 8 input channels); this one uses Zero123++ reference "
                              "attention on a single image")
        scheduler = refiner.scheduler
        if getattr(scheduler, "alphas_cumprod", None) is None:
            raise ConfigError(f"the refiner's scheduler ({type(scheduler).__name__}) has no alphas_cumprod to "
                              "noise latents with")
        self.prediction_type = scheduler.config.prediction_type
        if self.prediction_type not in PREDICTION_TYPES:
            raise ConfigError(f"the refiner's scheduler predicts {self.prediction_type!r}; the prior handles "
                              f"{PREDICTION_TYPES}")
        self.refiner = refiner
        self.device = refiner._execution_device
        self.dtype = refiner.unet.dtype
        self.guidance_scale = float(guidance_scale)
        self.cfg = self.guidance_scale > 1.0
        refiner._apply_attention_backend(self.device)
        with torch.no_grad():
            texts = [negative_prompt, prompt] if self.cfg else [prompt]
            self.prompt_embeds = refiner.encode_prompt(texts, self.device).to(self.dtype)
        self.alphas_cumprod = scheduler.alphas_cumprod.to(device=self.device, dtype=torch.float32)
        self.num_train_timesteps = int(scheduler.config.num_train_timesteps)

    # -- condition ------------------------------------------------------------------------
    @torch.no_grad()
    def condition_posterior(self, grid: torch.Tensor) -> torch.Tensor:
        """(1, 2C, h, w) posterior parameters of a (1, 3, 960, 640) coarse grid (encode once, sample each step)."""
        return encode_posterior(self.refiner.vae, grid, self.device)

    @torch.no_grad()
    def condition_latents(self, posterior: torch.Tensor, generator=None) -> torch.Tensor:
        """Fresh condition latents, ``[null, condition]`` with CFG (the refiner's order), in the UNet's dtype."""
        refiner = self.refiner
        cond = sample_condition_latents(posterior, generator, refiner.config.condition_latent_space,
                                        refiner.vae.config.scaling_factor)
        if self.cfg:
            null = refiner.null_condition_latents(cond.shape[0], cond.shape[-2:], generator, self.device)
            cond = torch.cat([null.to(cond), cond])
        return cond.to(self.dtype)

    # -- latents --------------------------------------------------------------------------
    def encode(self, grid: torch.Tensor, generator=None) -> torch.Tensor:
        """Differentiable (1, 4, 120, 80) Zero123++ latents of a (1, 3, 960, 640) rendered grid
        (a reparameterised posterior sample, as the refiner encodes its targets)."""
        return encode_target_latents(self.refiner.vae, grid, generator, self.device).float()

    def noise(self, latents: torch.Tensor, t: int, noise: torch.Tensor) -> torch.Tensor:
        """``sqrt(a_t) latents + sqrt(1 - a_t) noise``, what the UNet sees at training timestep ``t``."""
        a = self.alphas_cumprod[t]
        return a.sqrt() * latents + (1 - a).sqrt() * noise

    @torch.no_grad()
    def predict_noise(self, noisy: torch.Tensor, t: int, condition: torch.Tensor) -> torch.Tensor:
        """Guided noise estimate at ``noisy`` (B, 4, h, w), timestep ``t``; one batched UNet call with CFG."""
        model_input = torch.cat([noisy, noisy]) if self.cfg else noisy
        timestep = torch.full((model_input.shape[0],), t, device=self.device, dtype=torch.long)
        out = conditioned_unet_forward(self.refiner.unet, model_input.to(self.dtype), timestep, self.prompt_embeds,
                                       condition, "concat").float()
        if self.prediction_type == "v_prediction":
            a = self.alphas_cumprod[t]
            out = a.sqrt() * out + (1 - a).sqrt() * model_input.float()
        if self.cfg:
            uncond, cond = out.chunk(2)
            out = uncond + self.guidance_scale * (cond - uncond)
        return out

    # -- losses ---------------------------------------------------------------------------
    def sds_loss(self, latents: torch.Tensor, t: int, noise: torch.Tensor, condition: torch.Tensor):
        """``(loss, residual)``: the SDS surrogate whose gradient on ``latents`` is ``(1 - a_t)(eps_hat - eps)``,
        and ``mean((x0_hat - latents)^2) = (1 - a_t) / a_t * mean((eps_hat - eps)^2)``, how far the
        prior's clean estimate lies from the current latent (comparable across timesteps; a number).

        ``latents`` (B, 4, h, w) float32 with grad, ``noise`` like it, ``condition`` from
        :meth:`condition_latents`.
        """
        eps_hat = self.predict_noise(self.noise(latents.detach(), t, noise), t, condition)
        a = self.alphas_cumprod[t]
        diff = eps_hat - noise
        grad = (1 - a) * diff
        target = (latents - grad).detach()
        return 0.5 * ((latents - target) ** 2).sum(), float(diff.pow(2).mean() * (1 - a) / a)

    @torch.no_grad()
    def sdedit_target(self, latents: torch.Tensor, t: int, noise: torch.Tensor, condition: torch.Tensor,
                      steps: int) -> torch.Tensor:
        """(1, 3, 960, 640) pixels: ``latents`` noised to ``t`` and denoised by ``steps`` DDIM (eta 0)
        steps, evenly spaced integer timesteps from ``t`` to 0; when ``steps > t`` the rounded
        timesteps repeat and the repeats are dropped (``t`` UNet calls: one per distinct timestep)."""
        times = torch.linspace(t, 0, steps + 1).round().long().unique_consecutive().tolist()
        x = self.noise(latents, t, noise)
        for cur, nxt in zip(times[:-1], times[1:]):
            a = self.alphas_cumprod[cur]
            a_next = self.alphas_cumprod[nxt] if nxt > 0 else a.new_tensor(1.0)
            eps = self.predict_noise(x, cur, condition)
            x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
            x = a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps
        return decode_latents(self.refiner.vae, x, self.device)

    @staticmethod
    def sdedit_loss(grid: torch.Tensor, target: torch.Tensor):
        """``(loss, residual)``: ``0.5 * sum((grid - target)^2)`` and the mean squared pixel difference."""
        diff = grid - target.to(grid)
        return 0.5 * diff.pow(2).sum(), float(diff.detach().pow(2).mean())
