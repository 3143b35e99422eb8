"""SharpItPipeline: refine a coarse 3x2 multi-view grid into a sharp, view-consistent one."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DConditionModel
from diffusers.models.attention_processor import XFormersAttnProcessor
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from ..errors import ConfigError, InputError
from ..grid import as_grid_tensor, grid_to_views, tensor_to_pil
from .conditioning import (NULL_PROMPT, decode_latents, encode_condition_latents, encode_prompt,
                           encode_target_latents, null_condition_latents)
from .denoise import conditioned_unet_forward, resolve_conditioning_mode
from .loading import SharpItLoadingMixin
from .reference_attention import disable_reference_attention

__all__ = ["SharpItPipeline", "SharpItPipelineOutput", "coerce_condition"]

_OUTPUT_TYPES = ("pil", "pt", "np", "latent")


@dataclass
class SharpItPipelineOutput(BaseOutput):
    """Output of :class:`SharpItPipeline`.

    Attributes:
        images: per ``output_type``: ``"pil"`` a list of B 640x960 RGB grids; ``"pt"`` a
            (B, 3, 960, 640) float tensor in [0, 1]; ``"np"`` a (B, 960, 640, 3) float32 array in
            [0, 1]; ``"latent"`` the (B, 4, 120, 80) Zero123++-scaled latents.
        views: the six views of each grid (row-major, view i at row i // 2, column i % 2): a list of
            B lists of six 320x320 PIL images, a (B, 6, 3, 320, 320) tensor, a (B, 6, 320, 320, 3)
            array, or (B, 6, 4, 40, 40) latent tiles.
    """

    images: Union[List[Image.Image], torch.Tensor, np.ndarray]
    views: Union[List[List[Image.Image]], torch.Tensor, np.ndarray]


def coerce_condition(condition) -> torch.Tensor:
    """Coarse grid(s) -> (B, 3, 960, 640) float32 in [0, 1], white background.

    Accepts a PIL image, an (H, W, C) array, a (C, H, W) / (B, C, H, W) tensor, a renderer result
    with ``.grid()`` (``sharpit.render.MultiViewRender``), or a list of those. 3:2 grids of other
    sizes are resized with a warning; other shapes, channel counts and NaNs raise ``InputError``.
    """
    if isinstance(condition, (list, tuple)):
        if not condition:
            raise InputError("condition is an empty list; pass at least one 3x2 grid")
        return torch.cat([coerce_condition(c) for c in condition])
    if callable(getattr(condition, "grid", None)):
        condition = condition.grid()
    return as_grid_tensor(condition, background=1.0)


class SharpItPipeline(SharpItLoadingMixin, DiffusionPipeline):
    r"""Multi-view refiner of Sharp-It: coarse 3x2 grid + prompt -> refined 3x2 grid.

    Components: ``vae`` (AutoencoderKL), ``text_encoder`` (CLIPTextModel), ``tokenizer``
    (CLIPTokenizer), ``unet`` (UNet2DConditionModel, v-prediction), ``scheduler``
    (EulerAncestralDiscreteScheduler, ``timestep_spacing="trailing"``).

    ``conditioning_mode`` is ``"concat"`` (UNet with 8 input channels: [noisy, condition]),
    ``"reference"`` (4-channel UNet, Zero123++ reference attention) or None to infer it from the UNet.
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"
    _callback_tensor_inputs = ["latents", "prompt_embeds", "condition_latents"]

    def __init__(self, vae: AutoencoderKL, text_encoder, tokenizer, unet: UNet2DConditionModel, scheduler,
                 conditioning_mode: Optional[str] = None):
        super().__init__()
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                              scheduler=scheduler)
        resolve_conditioning_mode(unet.config.in_channels, vae.config.latent_channels, conditioning_mode)
        self.register_to_config(conditioning_mode=conditioning_mode)
        self._attention_backend = "auto"
        self._attention_resolved = False

    # ---------------------------------------------------------------- configuration
    @property
    def conditioning_mode(self) -> str:
        """The resolved mode, ``"concat"`` or ``"reference"``."""
        return resolve_conditioning_mode(self.unet.config.in_channels, self.vae.config.latent_channels,
                                         self.config.conditioning_mode)

    def set_attention_backend(self, backend: str = "auto") -> None:
        """``"sdpa"`` (PyTorch scaled-dot-product attention, the default processors), ``"xformers"``
        (CUDA only), or ``"auto"``: xformers when importable and the UNet runs on CUDA, else SDPA."""
        if backend not in ("auto", "sdpa", "xformers"):
            raise ConfigError(f"attention backend must be 'auto', 'sdpa' or 'xformers', got {backend!r}")
        self._attention_backend = backend
        self._attention_resolved = False

    def _apply_attention_backend(self, device: torch.device) -> None:
        if self._attention_resolved:
            return
        backend = self._attention_backend
        if backend == "auto":
            try:
                import xformers.ops  # noqa: F401
                backend = "xformers" if device.type == "cuda" else "sdpa"
            except ImportError:
                backend = "sdpa"
        disable_reference_attention(self.unet)
        if backend == "xformers":
            if device.type != "cuda":
                raise ConfigError("xformers attention needs CUDA tensors; use the 'sdpa' backend on this device")
            self.enable_xformers_memory_efficient_attention()
        elif any(isinstance(p, XFormersAttnProcessor) for p in self.unet.attn_processors.values()):
            self.disable_xformers_memory_efficient_attention()
        self._attention_resolved = True

    def enable_vae_slicing(self) -> None:
        """Encode/decode the batch one image at a time (lower peak memory)."""
        self.vae.enable_slicing()

    def disable_vae_slicing(self) -> None:
        self.vae.disable_slicing()

    def enable_vae_tiling(self) -> None:
        """Encode/decode in overlapping tiles (lower peak memory for the 960x640 grid)."""
        self.vae.enable_tiling()

    def disable_vae_tiling(self) -> None:
        self.vae.disable_tiling()

    def optimize_unet(self, channels_last: bool = True, compile: bool = False,
                      compile_mode: Optional[str] = None) -> None:
        """Use channels_last memory format and/or ``torch.compile`` the UNet in place (``nn.Module.compile``)."""
        if channels_last:
            self.unet.to(memory_format=torch.channels_last)
        if compile:
            self.unet.compile(mode=compile_mode, fullgraph=False)

    # ---------------------------------------------------------------- building blocks
    def encode_prompt(self, prompt: Union[str, Sequence[str]], device: Optional[torch.device] = None,
                      ) -> torch.Tensor:
        """(B, 77, D) CLIP embeddings of ``prompt`` (see :func:`sharpit.refine.encode_prompt`)."""
        return encode_prompt(self.tokenizer, self.text_encoder, prompt,
                             device or self._execution_device)

    def prepare_condition_latents(self, pixels: torch.Tensor, generator=None, guidance: bool = False,
                                  ) -> torch.Tensor:
        """Condition latents of (B, 3, H, W) grids in [0, 1] -> (B, 4, H/8, W/8), unscaled.

        With ``guidance`` the unconditional zero latents are prepended: (2B, 4, H/8, W/8),
        ``[zeros, condition]``, the order of the batched CFG call.
        """
        cond = encode_condition_latents(self.vae, pixels, generator, self._execution_device)
        return torch.cat([null_condition_latents(cond), cond]) if guidance else cond

    def predict(self, model_input: torch.Tensor, timestep, prompt_embeds: torch.Tensor,
                condition_latents: torch.Tensor, generator=None) -> torch.Tensor:
        """One conditioned UNet call (two passes in reference mode, with fresh reference noise).

        Shapes: ``model_input`` and ``condition_latents`` (N, 4, h, w), ``prompt_embeds`` (N, 77, D).
        """
        noise = None
        if self.conditioning_mode == "reference":
            noise = randn_tensor(condition_latents.shape, generator=generator, device=condition_latents.device,
                                 dtype=condition_latents.dtype)
        return conditioned_unet_forward(self.unet, model_input, timestep, prompt_embeds, condition_latents,
                                        self.conditioning_mode, scheduler=self.scheduler, reference_noise=noise)

    def denoise_step(self, latents: torch.Tensor, timestep, prompt_embeds: torch.Tensor,
                     condition_latents: torch.Tensor, guidance_scale: float, generator=None) -> torch.Tensor:
        """One scheduler step: (B, 4, h, w) latents at ``timestep`` -> latents at the next timestep.

        With ``guidance_scale > 1``, ``prompt_embeds`` and ``condition_latents`` hold 2B rows,
        ``[unconditional, conditional]``, and the UNet runs once on the doubled batch.
        """
        do_cfg = guidance_scale > 1.0
        model_input = torch.cat([latents, latents]) if do_cfg else latents
        model_input = self.scheduler.scale_model_input(model_input, timestep)
        pred = self.predict(model_input, timestep, prompt_embeds, condition_latents, generator)
        if do_cfg:
            uncond, cond = pred.chunk(2)
            pred = uncond + guidance_scale * (cond - uncond)
        return self.scheduler.step(pred, timestep, latents, generator=generator, return_dict=False)[0]

    def _timesteps(self, num_inference_steps: int, strength: float, device) -> torch.Tensor:
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        steps = min(int(num_inference_steps * strength), num_inference_steps)
        if steps < 1:
            raise InputError(f"strength={strength} with num_inference_steps={num_inference_steps} leaves no "
                             "denoising step; raise strength or num_inference_steps")
        start = (num_inference_steps - steps) * self.scheduler.order
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(start)
        return self.scheduler.timesteps[start:]

    @staticmethod
    def _check_args(num_inference_steps, guidance_scale, strength, output_type, generator, seed):
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) \
                or num_inference_steps < 1:
            raise InputError(f"num_inference_steps must be an integer >= 1, got {num_inference_steps!r}")
        if not isinstance(strength, (int, float)) or not 0.0 < strength <= 1.0:
            raise InputError(f"strength must lie in (0, 1] (1 = start from pure noise), got {strength!r}")
        if not isinstance(guidance_scale, (int, float)) or not math.isfinite(guidance_scale):
            raise InputError(f"guidance_scale must be a finite number, got {guidance_scale!r}")
        if output_type not in _OUTPUT_TYPES:
            raise InputError(f"output_type must be one of {_OUTPUT_TYPES}, got {output_type!r}")
        if generator is not None and seed is not None:
            raise InputError("pass either generator or seed, not both")

    @staticmethod
    def _prompt_list(prompt, batch: int, what: str) -> List[str]:
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not all(isinstance(p, str) for p in prompts):
            raise InputError(f"{what} must be a string or a list of strings")
        if len(prompts) == 1:
            prompts = prompts * batch
        if len(prompts) != batch:
            raise InputError(f"got {len(prompts)} {what}s for {batch} condition grids; pass one or {batch}")
        return prompts

    # ---------------------------------------------------------------- call
    @torch.no_grad()
    def __call__(
        self,
        condition,
        prompt: Union[str, List[str]] = NULL_PROMPT,
        negative_prompt: Optional[Union[str, List[str]]] = None,
        num_inference_steps: int = 75,
        guidance_scale: float = 4.0,
        strength: float = 1.0,
        generator: Optional[torch.Generator] = None,
        seed: Optional[int] = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Optional[Callable[["SharpItPipeline", int, torch.Tensor, Dict], Dict]] = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
    ):
        r"""Refine coarse grid(s).

        Args:
            condition: the coarse 3x2 grid(s): PIL (640x960), array, (3|4, 960, 640) or (B, C, 960, 640)
                tensor in [0, 1], a ``MultiViewRender``, or a list of those. Alpha is composited on white.
            prompt: text prompt(s), one or one per grid.
            negative_prompt: prompt(s) of the unconditional branch ("" by default); that branch also
                gets an all-zero condition latent.
            num_inference_steps: scheduler steps (75 as in Sharp-It).
            guidance_scale: classifier-free guidance scale; ``<= 1`` disables CFG (one UNet batch per step).
            strength: in (0, 1]; 1 starts from pure noise, smaller values start from the coarse grid
                noised to that level (SDEdit) and run ``int(num_inference_steps * strength)`` steps.
            generator / seed: randomness (latent noise, VAE posterior samples, ancestral and reference noise).
            output_type: ``"pil"``, ``"pt"``, ``"np"`` or ``"latent"`` (see :class:`SharpItPipelineOutput`).
            callback_on_step_end: ``f(pipe, step, timestep, tensors) -> dict`` after each step; the
                returned dict may replace the tensors named in ``callback_on_step_end_tensor_inputs``.
        Returns:
            :class:`SharpItPipelineOutput`, or ``(images, views)`` when ``return_dict`` is False.
        """
        self._check_args(num_inference_steps, guidance_scale, strength, output_type, generator, seed)
        unknown = set(callback_on_step_end_tensor_inputs) - set(self._callback_tensor_inputs)
        if unknown:
            raise InputError(f"callback tensor inputs must be among {self._callback_tensor_inputs}, got {sorted(unknown)}")
        if seed is not None:
            generator = torch.Generator("cpu").manual_seed(int(seed))
        pixels = coerce_condition(condition)
        batch = pixels.shape[0]
        prompts = self._prompt_list(prompt, batch, "prompt")
        negatives = self._prompt_list(NULL_PROMPT if negative_prompt is None else negative_prompt, batch,
                                      "negative prompt")
        device = self._execution_device
        self._apply_attention_backend(device)
        do_cfg = guidance_scale > 1.0
        dtype = self.unet.dtype

        prompt_embeds = self.encode_prompt(prompts if not do_cfg else negatives + prompts, device)
        prompt_embeds = prompt_embeds.to(device=device, dtype=dtype)
        condition_latents = self.prepare_condition_latents(pixels, generator, guidance=do_cfg)
        condition_latents = condition_latents.to(device=device, dtype=dtype)

        timesteps = self._timesteps(num_inference_steps, strength, device)
        shape = (batch, self.vae.config.latent_channels) + tuple(condition_latents.shape[2:])
        noise = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        if strength < 1.0:
            init = encode_target_latents(self.vae, pixels, generator, device).to(device=device, dtype=dtype)
            latents = self.scheduler.add_noise(init, noise, timesteps[:1].repeat(batch))
        else:
            latents = noise * self.scheduler.init_noise_sigma

        with self.progress_bar(total=len(timesteps)) as progress:
            for i, t in enumerate(timesteps):
                latents = self.denoise_step(latents, t, prompt_embeds, condition_latents, guidance_scale, generator)
                if callback_on_step_end is not None:
                    local = {"latents": latents, "prompt_embeds": prompt_embeds,
                             "condition_latents": condition_latents}
                    out = callback_on_step_end(
                        self, i, t, {k: local[k] for k in callback_on_step_end_tensor_inputs}) or {}
                    latents = out.get("latents", latents)
                    prompt_embeds = out.get("prompt_embeds", prompt_embeds)
                    condition_latents = out.get("condition_latents", condition_latents)
                progress.update()

        images, views = self._postprocess(latents, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return images, views
        return SharpItPipelineOutput(images=images, views=views)

    def _postprocess(self, latents: torch.Tensor, output_type: str):
        if output_type == "latent":
            return latents, grid_to_views(latents)
        grids = decode_latents(self.vae, latents, self._execution_device)
        if not bool(torch.isfinite(grids).all()):
            warnings.warn("the decoded grid contains NaN/inf values (fp16 overflow?); try bfloat16 or float32",
                          stacklevel=3)
        views = grid_to_views(grids)
        if output_type == "pt":
            return grids, views
        if output_type == "np":
            return grids.permute(0, 2, 3, 1).cpu().numpy(), views.permute(0, 1, 3, 4, 2).cpu().numpy()
        grids = grids.cpu()
        return [tensor_to_pil(g) for g in grids], [[tensor_to_pil(v) for v in vs] for vs in views.cpu()]
