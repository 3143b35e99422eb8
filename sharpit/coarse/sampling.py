"""Shap-E's official sampler: Karras sigmas, Heun steps, and the Gaussian-diffusion clock; and the
prior's own DDPM, respaced (:class:`RespacedDDPM`, used by :mod:`sharpit.coarse.inversion`).

The released text-to-3D prior (``openai/shap-e``, ``text_cond.pt``) was trained as a discrete
Gaussian diffusion (1024 steps, "exp" schedule, clean-latent prediction) and is sampled by the
official code (``shap_e/diffusion/sample.py`` -> ``k_diffusion.karras_sample``) through a Karras
ODE wrapper (``GaussianToKarrasDenoiser``). This module states what that wrapper does, once, so
sharpit's sampling matches it number for number (``tests/test_parity_shap_e.py`` compares with the
official code's outputs on shared tiny weights):

* noise levels: Karras et al. (2022) sigmas, ``rho = 7``, from ``sigma_max = 160`` down to
  ``sigma_min = 1e-3``, then 0 (``get_sigmas_karras``), computed in float32 as the official code;
* the model's timestep for a sigma: ``alpha_cumprod = 1 / (sigma^2 + 1)`` interpolated linearly over
  the diffusion's ``alphas_cumprod`` (float64) and then **truncated to an integer**
  (``GaussianToKarrasDenoiser.sigma_to_t`` followed by ``dtype=th.long``): the prior only ever saw
  integer timesteps in training. diffusers' ``HeunDiscreteScheduler`` instead feeds a fractional
  timestep interpolated in log-sigma: a different input;
* the model input is ``x / sqrt(sigma^2 + 1)`` and its output is the clean latent;
* with ``clip_denoised`` the clean-latent prediction of *each* guidance branch is clamped to
  [-1, 1] (``p_mean_variance``) *before* classifier-free guidance, and the guided prediction
  ``uncond + s (cond - uncond)`` is never clamped again (it reaches about +-29 at s = 15).
  diffusers' Heun step clamps the guided result instead;
* Heun's method (Karras algorithm 2) with ``s_churn = 0``; the last step, to sigma 0, is an Euler
  step. ``steps`` Karras steps cost ``2 * steps - 1`` model calls.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import torch

from ..errors import ConfigError, InputError

__all__ = ["OFFICIAL_SIGMA_MIN", "OFFICIAL_SIGMA_MAX", "KARRAS_RHO", "karras_sigmas", "ShapEDiffusionClock",
           "heun_sample", "respaced_timesteps", "RespacedDDPM"]

#: The official Shap-E Karras sampler's noise range (``shap_e/diffusion/sample.py``'s defaults,
#: used by every official example).
OFFICIAL_SIGMA_MIN = 1e-3
OFFICIAL_SIGMA_MAX = 160.0
#: Karras et al.'s schedule exponent (``get_sigmas_karras(rho=7.0)``).
KARRAS_RHO = 7.0

#: alpha_bar(t) = exp(EXP_SCHEDULE_COEFFICIENT * t), t in [0, 1]: Shap-E's "exp" schedule
#: (``get_named_beta_schedule("exp")``, default coefficient -12; diffusers' "exp" transform is the same).
EXP_SCHEDULE_COEFFICIENT = -12.0
_MAX_BETA = 0.999


def karras_sigmas(steps: int, sigma_min: float = OFFICIAL_SIGMA_MIN, sigma_max: float = OFFICIAL_SIGMA_MAX,
                  rho: float = KARRAS_RHO, device=None) -> torch.Tensor:
    """The (steps + 1,) float32 noise levels of a Karras schedule, ``sigma_max`` first, then a final 0.

    Computed in float32 exactly as the official ``get_sigmas_karras`` does.
    """
    if int(steps) < 1:
        raise InputError(f"the number of sampling steps must be >= 1, got {steps}")
    if not 0 < sigma_min < sigma_max:
        raise InputError(f"need 0 < sigma_min < sigma_max, got {sigma_min} and {sigma_max}")
    ramp = torch.linspace(0, 1, int(steps))
    min_inv_rho = sigma_min ** (1 / rho)
    max_inv_rho = sigma_max ** (1 / rho)
    sigmas = (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)]).to(device)


class ShapEDiffusionClock:
    """Maps Karras noise levels to the integer timesteps Shap-E's prior was trained on.

    Args:
        num_train_timesteps: length of the training diffusion (1024 for ``openai/shap-e``).

    ``alphas_cumprod`` is the float64 cumulative product of ``1 - beta_i`` with
    ``beta_i = min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), 0.999)`` and
    ``alpha_bar(t) = exp(-12 t)`` (official ``betas_for_alpha_bar`` + ``GaussianDiffusion``).
    """

    def __init__(self, num_train_timesteps: int = 1024):
        steps = int(num_train_timesteps)
        if steps < 2:
            raise ConfigError(f"num_train_timesteps must be >= 2, got {num_train_timesteps}")
        t = np.arange(steps + 1, dtype=np.float64) / steps
        alpha_bar = np.exp(EXP_SCHEDULE_COEFFICIENT * t)
        betas = np.minimum(1.0 - alpha_bar[1:] / alpha_bar[:-1], _MAX_BETA)
        self.num_train_timesteps = steps
        self.alphas_cumprod = np.cumprod(1.0 - betas)

    @classmethod
    def from_scheduler_config(cls, config) -> "ShapEDiffusionClock":
        """The clock of a diffusers scheduler config (``openai/shap-e``'s ``scheduler/``), which must
        describe Shap-E's "exp" schedule."""
        schedule = config.get("beta_schedule") if hasattr(config, "get") else getattr(config, "beta_schedule", None)
        if schedule != "exp":
            raise ConfigError(f"the Shap-E prior was trained on the 'exp' beta schedule, but this scheduler "
                              f"config says {schedule!r}; use the scheduler/ folder of openai/shap-e")
        steps = config.get("num_train_timesteps") if hasattr(config, "get") else config.num_train_timesteps
        return cls(steps)

    def timesteps(self, sigmas: torch.Tensor) -> torch.Tensor:
        """(N,) long timesteps for (N,) noise levels (``GaussianToKarrasDenoiser.sigma_to_t``, truncated)."""
        alpha = (1.0 / (sigmas.detach().float().cpu() ** 2 + 1)).numpy().astype(np.float64)
        ac = self.alphas_cumprod
        t = np.interp(alpha, ac[::-1], np.arange(self.num_train_timesteps, dtype=np.float64)[::-1])
        t = np.where(alpha > ac[0], 0.0, np.where(alpha <= ac[-1], self.num_train_timesteps - 1, t))
        return torch.from_numpy(t).to(torch.long).to(sigmas.device)


def heun_sample(denoise: Callable[[torch.Tensor, int], torch.Tensor], x: torch.Tensor, sigmas: torch.Tensor,
                progress: Callable[[Iterable[int]], Iterable[int]] = iter) -> torch.Tensor:
    """Karras et al.'s Heun sampler (algorithm 2, no churn) from noise ``x`` at ``sigmas[0]``.

    Args:
        denoise: ``denoise(x, i) -> x0``, the clean-sample prediction of ``x`` at noise level
            ``sigmas[i]`` (an index, so the caller can precompute per-level inputs on the device).
        x: the initial noisy sample (already multiplied by ``sigmas[0]``).
        sigmas: (steps + 1,) decreasing noise levels on ``x``'s device, ending with 0
            (:func:`karras_sigmas`).
        progress: wraps the step indices, e.g. a tqdm factory.
    Returns:
        the sample at sigma 0, shaped like ``x``.
    """
    last = len(sigmas) - 2
    for i in progress(range(len(sigmas) - 1)):
        d = (x - denoise(x, i)) / sigmas[i]
        dt = sigmas[i + 1] - sigmas[i]
        if i == last:                           # to sigma 0: Euler
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = (x_2 - denoise(x_2, i + 1)) / sigmas[i + 1]
            x = x + (d + d_2) / 2 * dt
    return x


def respaced_timesteps(num_train_timesteps: int, steps: int) -> np.ndarray:
    """The (steps,) increasing training timesteps a ``steps``-step DDPM keeps of a ``num_train_timesteps``
    diffusion: Shap-E's own respacing rule (``gaussian_diffusion.space_timesteps(T, str(steps))``,
    one section): ``round(k * (T - 1) / (steps - 1))`` accumulated as a float stride, so the first
    step is t = 0 and the last t = T - 1 (128 of 1024: 0, 8, 16, 24, 32, 40, 48, 56, 64, 72, 81, ...).

    Raises:
        InputError: ``steps`` < 1 or more than ``num_train_timesteps``.
    """
    total, steps = int(num_train_timesteps), int(steps)
    if not 1 <= steps <= total:
        raise InputError(f"a DDPM over {total} training steps can take 1 to {total} steps, got {steps}")
    stride = 1.0 if steps == 1 else (total - 1) / (steps - 1)
    kept, position = [], 0.0
    for _ in range(steps):
        kept.append(round(position))
        position += stride
    return np.asarray(kept, dtype=np.int64)


class RespacedDDPM:
    """Shap-E's training diffusion respaced to ``steps`` DDPM steps (official ``SpacedDiffusion``).

    Step k (0 .. steps-1) sits at training timestep ``timesteps[k]`` (the integer the prior is
    called with; :func:`respaced_timesteps`). The respaced betas are
    ``beta_k = 1 - abar[t_k] / abar[t_{k-1}]`` (``abar[t_{-1}] = 1``), from which, as in
    ``GaussianDiffusion``, in float64 and then cast to float32 where they meet a tensor:

    * posterior mean of q(x_{k-1} | x_k, x0) = ``mean_coef_x0[k] * x0 + mean_coef_xt[k] * x_k``;
    * posterior ("fixed small") variance ``beta_k (1 - abar_prev) / (1 - abar_k)``, 0 at k = 0, and its
      log clipped at k = 0 to the value of k = 1 (``posterior_log_variance_clipped``);
    * ``log_betas`` (the upper end of the prior's learned "learned_range" variance).

    Step 0 (t = 0) goes to the clean sample: its ``abar_prev`` is 1, so its mean is the clean-sample
    prediction itself and its variance is 0 (official ``p_sample`` adds no noise there).

    Args:
        clock: the training diffusion (:class:`ShapEDiffusionClock`).
        steps: number of DDPM steps (SPEC section 7: 128 for editing).
    """

    def __init__(self, clock: ShapEDiffusionClock, steps: int):
        if isinstance(steps, bool) or int(steps) != steps or int(steps) < 2:
            raise InputError(f"a DDPM needs at least 2 steps, got {steps!r}")
        self.num_train_timesteps = clock.num_train_timesteps
        kept = respaced_timesteps(clock.num_train_timesteps, steps)
        abar = clock.alphas_cumprod[kept]
        abar_prev = np.append(1.0, abar[:-1])
        betas = 1.0 - abar / abar_prev
        variance = betas * (1.0 - abar_prev) / (1.0 - abar)
        as32 = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float64)).float()  # noqa: E731
        self.timesteps = torch.from_numpy(kept)
        self.alphas_cumprod = as32(abar)
        self.sqrt_alphas_cumprod = as32(np.sqrt(abar))
        self.sqrt_one_minus_alphas_cumprod = as32(np.sqrt(1.0 - abar))
        self.mean_coef_x0 = as32(betas * np.sqrt(abar_prev) / (1.0 - abar))
        self.mean_coef_xt = as32((1.0 - abar_prev) * np.sqrt(1.0 - betas) / (1.0 - abar))
        self.posterior_variance = as32(variance)
        self.posterior_log_variance_clipped = as32(np.log(np.append(variance[1], variance[1:])))
        self.log_betas = as32(np.log(betas))

    @property
    def steps(self) -> int:
        """The number of DDPM steps."""
        return len(self.timesteps)

    def std(self, k: int, variance_values: "torch.Tensor | None" = None) -> torch.Tensor:
        """Standard deviation of step ``k``'s noise (what multiplies the noise map z_k).

        Args:
            k: step index (>= 1; step 0 adds no noise).
            variance_values: None for the posterior ("fixed small") variance; else the prior's
                variance output in [-1, 1] (official "learned_range": the log variance interpolates
                between the clipped posterior log variance at -1 and ``log beta_k`` at +1).
        Returns:
            a 0-d tensor, or a tensor shaped like ``variance_values``; float32, computed as the
            official ``exp(0.5 * log_variance)``.
        """
        lo = self.posterior_log_variance_clipped[k]
        if variance_values is None:
            return torch.exp(0.5 * lo)
        frac = (variance_values.float() + 1) / 2
        log_var = frac * self.log_betas[k].to(variance_values.device) + (1 - frac) * lo.to(variance_values.device)
        return torch.exp(0.5 * log_var)
