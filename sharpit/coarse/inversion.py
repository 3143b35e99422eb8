"""Edit-friendly DDPM inversion in Shap-E latent space (Huberman-Spiegelglas, Kulikov, Michaeli,
"An Edit Friendly DDPM Noise Space: Inversion and Manipulations", CVPR 2024).

The prior's own DDPM (:class:`~sharpit.coarse.sampling.RespacedDDPM`: the "exp" schedule over
1024 training steps respaced to N, the prior called on the training diffusion's scale with the
integer timestep, clean-latent prediction clamped per guidance branch) runs N steps n = N .. 1 from
state x_n (training timestep ``timesteps[n - 1]``) to x_{n-1}::

    x_{n-1} = mu_n(x_n) + sigma_n z_n,   mu_n = posterior mean of q(x_{n-1} | x_n, x0_pred(x_n))

**Inversion** (the paper's algorithm 1, its code ``ddm_inversion/inversion_utils.py``): draw every
x_n, n = 1 .. N, independently from q(x_n | x_0) (not a Markov chain: that is what makes the noise
maps "edit friendly"), then from n = N down to 2 compute ``z_n = (x_{n-1} - mu_n(x_n)) / sigma_n`` and
replace x_{n-1} by ``mu_n + sigma_n z_n`` (the paper's correction, so that each model call sees
exactly the state the regeneration will reach). **Regeneration** from a restart step n0 runs the
same steps from x_{n0} with the stored z_n and any prompt: with the source prompt and guidance it
reproduces the input to float rounding, with another prompt it edits it.

Choices that public code does not settle for Shap-E, each a named setting:

* ``variance`` (:data:`VARIANCES`): "posterior" (default) is the paper's eta = 1 (its DDIM step with
  eta = 1 is the DDPM posterior mean plus the posterior "fixed small" standard deviation; SPEC
  section 7: eta 1). "learned" uses the prior's own "learned_range" variance output, as the
  official Shap-E ``GaussianDiffusion.p_sample`` does. Both invert exactly.
* The final step n = 1 (t = 0, whose previous cumulative alpha is 1) has no noise in Shap-E's DDPM
  (official ``p_sample`` masks it; sigma_1 = 0), so no z_1 can be solved for. The residual
  ``r = x_0 - mu_1(x_1)`` is stored as ``noise_maps[0]`` and added unscaled when
  ``final_residual=True`` (default): that is what makes source-prompt regeneration exact. The
  paper's code instead zeroes its first noise map (``zs[0] = 0``), so its reconstruction is off by
  that step's residual; ``final_residual=False`` reproduces that.
* Guidance during inversion: the paper's code inverts with the source prompt under classifier-free
  guidance (``cfg_src``, 3.5 by default) and regenerates with another scale (``cfg_tar``); SPEC
  section 7 gives CFG 12 for Sharp-It's edits. Both scales are arguments (default 12); exact
  reconstruction needs the same prompt and scale at both ends.
* Guidance convention: the official DDPM-with-guidance path (``sample.uncond_guide_model``) slices
  the first 3 output channels (an image-model leftover), so on Shap-E latents it would guide 3 of
  1024 values; it cannot be the reference. Guidance here is the official Karras path's: clean
  predictions clamped per branch, then ``uncond + s (cond - uncond)``
  (:meth:`ShapEGenerator._denoiser <sharpit.coarse.ShapEGenerator>`, shared with the Heun sampler).
* Respacing: Shap-E's ``space_timesteps`` rule (first step t = 0, last t = 1023). The paper's code
  uses diffusers' DDIM "leading" spacing of Stable Diffusion's scheduler, a different model.

Restart step (SPEC section 7): ``int(N * strength)``: strength 0 returns the input, 1 regenerates
from x_N.

Size of an inversion of one ``openai/shap-e`` latent (W = 2^20 float32 = 4 MiB) at N = 128: the
noise maps z_1 .. z_128 (512 MiB) and the path x_0 .. x_128 (516 MiB), about 1.0 GiB. An edit at
one strength needs only x_{n0}, z_1 .. z_{n0} and x_0: :meth:`ShapEInversion.save` with
``strengths=(0.5,)`` writes 66 maps (264 MiB) and the loaded inversion re-runs that edit with any
target prompt. (Recomputing x_{n0} from x_N instead would cost N - n0 prior calls per edit; storing
float16 maps would make the source-prompt regeneration inexact: neither is done.)
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch

from ..atomic import atomic_path
from ..errors import AssetNotFoundError, CorruptFileError, InputError, UnsupportedFormatError
from .edit_defaults import DEFAULT_EDIT_GUIDANCE, DEFAULT_EDIT_STRENGTH, DEFAULT_INVERSION_STEPS
from .sampling import RespacedDDPM

__all__ = ["ShapEInversion", "VARIANCES", "DEFAULT_INVERSION_STEPS", "DEFAULT_EDIT_GUIDANCE",
           "DEFAULT_EDIT_STRENGTH", "restart_step", "invert_ddpm", "regenerate_ddpm"]

#: Noise of each DDPM step: "posterior" (the paper's eta = 1) or "learned" (the prior's variance output).
VARIANCES = ("posterior", "learned")

#: ``denoise(x_in, t) -> (x0, variance_values)`` (``ShapEGenerator._denoiser``).
Denoiser = Callable[[torch.Tensor, torch.Tensor], Tuple[torch.Tensor, torch.Tensor]]
Progress = Callable[[Iterable[int]], Iterable[int]]
PathLike = Union[str, "os.PathLike[str]"]
_HEADER_KEY = "sharpit_inversion"
_FORMAT = 1


def check_strength(strength) -> float:
    """``strength`` as a float in [0, 1], else :class:`InputError`."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0.0 <= float(strength) <= 1.0:
        raise InputError(f"strength must be a number in [0, 1] (0 keeps the input, 1 regenerates from the "
                         f"noisiest step), got {strength!r}")
    return float(strength)


def restart_step(num_steps: int, strength: float) -> int:
    """The step a regeneration at ``strength`` starts from: ``int(num_steps * strength)`` (SPEC section 7)."""
    return int(int(num_steps) * check_strength(strength))


def check_variance(variance) -> str:
    if variance not in VARIANCES:
        raise InputError(f"variance must be one of {VARIANCES}, got {variance!r}")
    return variance


def _step_std(schedule: RespacedDDPM, k: int, variance: str, variance_values: torch.Tensor) -> torch.Tensor:
    std = schedule.std(k, variance_values if variance == "learned" else None)
    return std.to(variance_values.device)


@torch.no_grad()
def invert_ddpm(denoise: Denoiser, schedule: RespacedDDPM, x0: torch.Tensor, generator: Optional[torch.Generator],
                variance: str = "posterior", progress: Progress = iter) -> Tuple[torch.Tensor, Dict[int, torch.Tensor]]:
    """Edit-friendly DDPM inversion of clean latents (module docstring).

    Args:
        denoise: the guided prior with the source prompt(s) (``ShapEGenerator._denoiser``).
        schedule: the N-step DDPM.
        x0: (B, R, C) float32 clean latents.
        generator: draws the N independent noises of q(x_n | x_0), n = 1 .. N in that order, on
            ``x0``'s device (None: the global RNG).
        variance: one of :data:`VARIANCES`.
        progress: wraps the step indices (e.g. a tqdm factory).
    Returns:
        ``(noise_maps, path)``: (N, B, R, C) noise maps, row n - 1 holding z_n (row 0: the final
        residual), and the corrected path {n: x_n (B, R, C)} for n = 0 .. N (x_0 is ``x0``).
    """
    from diffusers.utils.torch_utils import randn_tensor

    check_variance(variance)
    steps, dev = schedule.steps, x0.device
    path = {0: x0}
    for n in range(1, steps + 1):
        noise = randn_tensor(x0.shape, generator=generator, device=dev, dtype=torch.float32)
        path[n] = schedule.sqrt_alphas_cumprod[n - 1].to(dev) * x0 \
            + schedule.sqrt_one_minus_alphas_cumprod[n - 1].to(dev) * noise
    noise_maps = torch.empty((steps,) + tuple(x0.shape), dtype=torch.float32, device=dev)
    for n in progress(range(steps, 0, -1)):
        mean, variance_values = _posterior_mean(denoise, schedule, path[n], n - 1)
        if n == 1:
            noise_maps[0] = path[0] - mean
            continue
        std = _step_std(schedule, n - 1, variance, variance_values)
        noise_maps[n - 1] = (path[n - 1] - mean) / std
        path[n - 1] = mean + std * noise_maps[n - 1]
    return noise_maps, path


@torch.no_grad()
def regenerate_ddpm(denoise: Denoiser, schedule: RespacedDDPM, x_start: torch.Tensor, start: int,
                    noise_maps: torch.Tensor, variance: str = "posterior", final_residual: bool = True,
                    progress: Progress = iter) -> torch.Tensor:
    """Run the DDPM from state x_start at step ``start`` down to 0 with given noise maps.

    Args:
        denoise: the guided prior with the target prompt(s).
        schedule: the N-step DDPM (``start`` <= N).
        x_start: (B, R, C) float32 state at step ``start``.
        noise_maps: (>= start, B', R, C) with B' = B or 1; row n - 1 is z_n; row 0 is the final
            residual (added unscaled when ``final_residual``). Fresh standard normal maps make this
            ordinary DDPM ancestral sampling (with ``final_residual=False``).
        variance: one of :data:`VARIANCES` (the one the maps were made with).
    Returns:
        (B, R, C) float32 x_0. ``start == 0`` returns ``x_start`` itself.
    """
    check_variance(variance)
    x = x_start
    for n in progress(range(start, 0, -1)):
        mean, variance_values = _posterior_mean(denoise, schedule, x, n - 1)
        z = noise_maps[n - 1].to(x.device)
        if n == 1:
            x = mean + z if final_residual else mean
        else:
            x = mean + _step_std(schedule, n - 1, variance, variance_values) * z
    return x


def _posterior_mean(denoise: Denoiser, schedule: RespacedDDPM, x: torch.Tensor, k: int):
    """The posterior mean of step k (official ``q_posterior_mean_variance`` on the guided clean
    prediction) and the prior's variance values."""
    x0, variance_values = denoise(x, schedule.timesteps[k].to(x.device))
    mean = schedule.mean_coef_x0[k].to(x.device) * x0 + schedule.mean_coef_xt[k].to(x.device) * x
    return mean, variance_values


@dataclass
class ShapEInversion:
    """The result of :meth:`ShapEGenerator.invert <sharpit.coarse.ShapEGenerator.invert>`: what
    :meth:`~sharpit.coarse.ShapEGenerator.edit_latents` needs to regenerate B latents.

    Attributes:
        noise_maps: (K, B, W) float32, row n - 1 holding z_n; row 0 is the final step's residual
            (see the module docstring). K = N for a fresh inversion; a saved subset keeps
            K = the largest restart step kept.
        path: {n: (B, W) float32 x_n}: every n = 0 .. N for a fresh inversion; x_0 (the inverted
            latents) is always there. A restart step n is usable when ``n in path`` and n <= K.
        timesteps: (N,) long training timesteps of the N DDPM steps (Shap-E's respacing).
        prompts: the B source prompts.
        guidance_scale: the classifier-free guidance scale of the inversion.
        num_inference_steps: N.
        variance: one of :data:`VARIANCES`.
        model_id: the Shap-E model the inversion was made with (informational).
    """

    noise_maps: torch.Tensor
    path: Dict[int, torch.Tensor]
    timesteps: torch.Tensor
    prompts: List[str]
    guidance_scale: float
    num_inference_steps: int
    variance: str = "posterior"
    model_id: str = ""

    def __post_init__(self):
        problems = self._problems()
        if problems:
            raise InputError("not a consistent Shap-E inversion: " + "; ".join(problems))

    def _problems(self) -> List[str]:
        out = []
        maps = self.noise_maps
        if not isinstance(maps, torch.Tensor) or maps.ndim != 3 or not maps.is_floating_point():
            return [f"noise_maps must be a (K, B, W) float tensor, got "
                    f"{tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__}"]
        k, b, w = maps.shape
        n = self.num_inference_steps
        if isinstance(n, bool) or not isinstance(n, int) or n < 2:
            out.append(f"num_inference_steps must be an integer >= 2, got {n!r}")
        elif not isinstance(self.timesteps, torch.Tensor) or tuple(self.timesteps.shape) != (n,):
            out.append(f"{n} steps need {n} timesteps, got "
                       f"{tuple(getattr(self.timesteps, 'shape', ())) or type(self.timesteps).__name__}")
        elif k > n:
            out.append(f"{k} noise maps for {n} steps (at most one per step)")
        if 0 not in self.path:
            out.append("the path has no x_0 (the inverted latents)")
        for step, x in sorted(self.path.items()):
            if not isinstance(step, int) or not 0 <= step <= k:
                out.append(f"path step {step!r} has no noise maps (steps 0..{k} are usable)")
            elif not isinstance(x, torch.Tensor) or tuple(x.shape) != (b, w):
                out.append(f"path step {step} must be ({b}, {w}), got "
                           f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        if not isinstance(self.prompts, list) or len(self.prompts) != b \
                or not all(isinstance(p, str) for p in self.prompts):
            out.append(f"need {b} source prompts (one per latent), got {self.prompts!r}")
        if isinstance(self.guidance_scale, bool) or not isinstance(self.guidance_scale, (int, float)) \
                or not math.isfinite(self.guidance_scale) or self.guidance_scale < 0:
            out.append(f"guidance_scale must be a finite number >= 0, got {self.guidance_scale!r}")
        if self.variance not in VARIANCES:
            out.append(f"variance must be one of {VARIANCES}, got {self.variance!r}")
        return out

    @property
    def batch_size(self) -> int:
        """B, the number of inverted latents."""
        return self.noise_maps.shape[1]

    @property
    def latent_width(self) -> int:
        """W, the length of one latent."""
        return self.noise_maps.shape[2]

    @property
    def latents(self) -> torch.Tensor:
        """(B, W) the inverted latents x_0."""
        return self.path[0]

    @property
    def restart_steps(self) -> List[int]:
        """The steps a regeneration can start from (sorted; 0 = the input itself)."""
        return sorted(self.path)

    def start_for(self, strength: float) -> int:
        """The restart step of ``strength`` (``int(N * strength)``), checked to be in this inversion.

        Raises:
            InputError: a strength outside [0, 1], or one whose step a saved subset did not keep.
        """
        n = restart_step(self.num_inference_steps, strength)
        if n not in self.path:
            kept = [s / self.num_inference_steps for s in self.restart_steps]
            raise InputError(f"strength {strength} restarts at step {n} of {self.num_inference_steps}, which this "
                             f"inversion did not keep (it was saved with strengths {kept}); invert again or "
                             "use one of those")
        return n

    def subset(self, strengths: Sequence[float]) -> "ShapEInversion":
        """The part needed to regenerate at ``strengths`` only: x_0, x_n of each restart step n, and
        z_1 .. z_max(n) (shares memory with ``self``)."""
        if isinstance(strengths, (int, float)):
            strengths = [strengths]
        steps = {0} | {self.start_for(s) for s in strengths}
        top = max(steps)
        return ShapEInversion(self.noise_maps[:top], {n: self.path[n] for n in sorted(steps)}, self.timesteps,
                              list(self.prompts), self.guidance_scale, self.num_inference_steps, self.variance,
                              self.model_id)

    def to(self, device) -> "ShapEInversion":
        """A copy with every tensor on ``device``."""
        return ShapEInversion(self.noise_maps.to(device), {n: x.to(device) for n, x in self.path.items()},
                              self.timesteps, list(self.prompts), self.guidance_scale, self.num_inference_steps,
                              self.variance, self.model_id)

    def save(self, path: PathLike, strengths: Optional[Sequence[float]] = None, overwrite: bool = False) -> Path:
        """Write the inversion to a ``.safetensors`` file atomically.

        Tensors ``noise_maps`` (K, B, W), ``x_<n>`` (B, W) per kept step and ``timesteps`` (N,); the
        prompts and settings as JSON in the header.

        Args:
            path: the output file (``.safetensors``).
            strengths: keep only what regenerating at these strengths needs (see :meth:`subset`);
                None keeps everything (about 1 GiB per ``openai/shap-e`` latent at 128 steps).
            overwrite: replace an existing file.
        Raises:
            OutputExistsError: ``path`` exists and ``overwrite`` is False.
        """
        from safetensors.torch import save_file

        from .. import __version__

        path = Path(path)
        if path.suffix != ".safetensors":
            raise UnsupportedFormatError(path, "inversions are saved as .safetensors; use that extension")
        inv = self if strengths is None else self.subset(strengths)
        tensors = {"noise_maps": inv.noise_maps, "timesteps": inv.timesteps}
        tensors.update({f"x_{n}": x for n, x in inv.path.items()})
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        header = {"format": _FORMAT, "prompts": inv.prompts, "guidance_scale": float(inv.guidance_scale),
                  "num_inference_steps": inv.num_inference_steps, "variance": inv.variance,
                  "model_id": inv.model_id, "sharpit_version": __version__}
        with atomic_path(path, overwrite=overwrite) as tmp:
            save_file(tensors, str(tmp), metadata={_HEADER_KEY: json.dumps(header)})
        return path

    @classmethod
    def load(cls, path: PathLike, device=None) -> "ShapEInversion":
        """Read an inversion written by :meth:`save` (onto ``device``, default CPU).

        Raises:
            AssetNotFoundError: no such file.
            CorruptFileError: not a sharpit inversion file, or an inconsistent one.
        """
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise AssetNotFoundError(path)
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                raw = (f.metadata() or {}).get(_HEADER_KEY)
                if raw is None:
                    raise CorruptFileError(path, f"no {_HEADER_KEY!r} header; not a sharpit Shap-E inversion")
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except CorruptFileError:
            raise
        except Exception as exc:  # safetensors raises its own error type for a bad file
            raise CorruptFileError(path, f"cannot read safetensors file ({exc})") from exc
        try:
            header = json.loads(raw)
            path_steps = {int(k[2:]): v for k, v in tensors.items() if k.startswith("x_")}
            inv = cls(tensors["noise_maps"], path_steps, tensors["timesteps"], header["prompts"],
                      header["guidance_scale"], header["num_inference_steps"], header["variance"],
                      header.get("model_id", ""))
        except (json.JSONDecodeError, KeyError, ValueError, TypeError) as exc:
            raise CorruptFileError(path, f"not a consistent sharpit Shap-E inversion ({exc})") from exc
        return inv if device is None else inv.to(device)
