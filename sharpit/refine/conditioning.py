"""Encoders shared by the refiner pipeline and training: prompt, condition and target latents, and
the unconditional branch of classifier-free guidance.

Spaces (see :mod:`sharpit.refine.scaling`):

* *pixels*: (B, 3, 960, 640) float grids in [0, 1], white background;
* *VAE input*: ``scale_image(2 x - 1)``, i.e. ``(x - 0.5) / 0.8`` (what Zero123++'s
  ``feature_extractor_vae`` makes of an image);
* *posterior*: ``vae.encode(vae_input).latent_dist.parameters``, (B, 2 * 4, h, w): mean and
  log-variance along channels, before any random draw;
* *condition latents*: a posterior sample in one of :data:`CONDITION_LATENT_SPACES` (a named,
  saved setting of :class:`~sharpit.refine.SharpItRefinePipeline`):

  - ``"raw"``: the sample itself, no ``scaling_factor``, no latent scaling. Zero123++'s reference
    latent is this (``diffusers-support/pipeline.py``, ``Zero123PlusPipeline.encode_condition_image``:
    ``vae.encode(image).latent_dist.sample()``), and so is InstantMesh's fine-tune
    (``zero123plus/model.py``, ``MVDiffusion.encode_condition_image``);
  - ``"scaled"``: ``scale_latents(sample * scaling_factor)``, the space the UNet denoises.

  Which one the released Sharp-It UNet was trained with in concat mode is not published: ``"raw"``
  (the Zero123++ convention) is the default and the one unverifiable assumption of this module.
* *target latents*: ``scale_latents(sample * scaling_factor)``, the Zero123++ space the UNet denoises.

The unconditional branch, at inference and for the dropped training samples alike, is the prompt
:data:`NULL_PROMPT` (``""``) together with the condition latent of a constant image named by
:data:`NULL_CONDITIONS` (``"black"`` or ``"grey"``). Both official recipes encode that image with a
fresh posterior *sample* (never the mode) from torch's global RNG, every call. Here its posterior
(:func:`null_condition_posterior`, the expensive VAE pass) is computed once and cached by the
caller, and :func:`null_condition_latents` draws the fresh sample from the caller's generator:
the same distribution, bit-identical to the official encoding for the same noise. Training's
:func:`drop_conditions` takes those latents, so inference and training share one definition.
"""

from __future__ import annotations

import contextlib
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

from ..errors import ConfigError, InputError
from .scaling import pixels_to_vae_input, scale_latents, unscale_latents, vae_output_to_pixels

__all__ = [
    "NULL_PROMPT",
    "NULL_CONDITION_PIXELS",
    "NULL_CONDITIONS",
    "CONDITION_LATENT_SPACES",
    "check_null_condition",
    "check_condition_latent_space",
    "vae_precision",
    "encode_prompt",
    "vae_posterior",
    "encode_posterior",
    "sample_condition_latents",
    "encode_condition_latents",
    "encode_target_latents",
    "decode_latents",
    "null_condition_posterior",
    "null_condition_latents",
    "drop_conditions",
]

#: The prompt of the unconditional branch.
NULL_PROMPT = ""

#: Pixel value in [0, 1] of the constant image whose VAE latent is the unconditional condition:
#:
#: * ``"black"`` (0.0, VAE input -0.625): InstantMesh's Zero123++ fine-tune, ``zero123plus/model.py``,
#:   ``MVDiffusion.training_step``: ``self.encode_condition_image(torch.zeros_like(cond_imgs))`` on
#:   images in [0, 1], which ``feature_extractor_vae`` maps to (0 - 0.5) / 0.8;
#: * ``"grey"`` (0.5, VAE input 0.0): Zero123++ inference, ``diffusers-support/pipeline.py``,
#:   ``Zero123PlusPipeline.__call__``: ``self.encode_condition_image(torch.zeros_like(image))`` on the
#:   already normalised image, i.e. pixels (0 * 0.8 + 0.5) = 0.5.
NULL_CONDITION_PIXELS: Dict[str, float] = {"black": 0.0, "grey": 0.5}
#: Names accepted by the ``null_condition`` setting.
NULL_CONDITIONS: Tuple[str, ...] = tuple(NULL_CONDITION_PIXELS)
#: Names accepted by the ``condition_latent_space`` setting (see the module docstring).
CONDITION_LATENT_SPACES: Tuple[str, ...] = ("raw", "scaled")


def check_null_condition(name) -> str:
    """Return ``name`` if it is one of :data:`NULL_CONDITIONS`, else raise :class:`ConfigError`."""
    if name not in NULL_CONDITIONS:
        raise ConfigError(f"null_condition must be one of {list(NULL_CONDITIONS)}, got {name!r}")
    return name


def check_condition_latent_space(space) -> str:
    """Return ``space`` if it is one of :data:`CONDITION_LATENT_SPACES`, else raise :class:`ConfigError`."""
    if space not in CONDITION_LATENT_SPACES:
        raise ConfigError(f"condition_latent_space must be one of {list(CONDITION_LATENT_SPACES)}, got {space!r}")
    return space


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
    """Run the VAE in float32 when it is float16 and its config asks for it (``force_upcast``: the
    Stable Diffusion 2 VAE that Zero123++ uses overflows in float16).

    The VAE is cast once and stays float32 afterwards (a few hundred MB), instead of a float16 ->
    float32 -> float16 round trip of all its weights on every encode and decode; a later
    ``pipe.to(torch.float16)`` casts it back and the next call upcasts it again, once.
    """
    if vae.dtype == torch.float16 and getattr(vae.config, "force_upcast", False):
        vae.to(dtype=torch.float32)
    yield vae.dtype


def _check_pixels(pixels: torch.Tensor) -> None:
    if not isinstance(pixels, torch.Tensor) or pixels.ndim != 4 or pixels.shape[1] != 3:
        raise InputError(f"expected a (B, 3, H, W) image tensor in [0, 1], got "
                         f"{tuple(pixels.shape) if isinstance(pixels, torch.Tensor) else type(pixels).__name__}")


def vae_posterior(vae, vae_input: torch.Tensor, device: Optional[torch.device] = None) -> torch.Tensor:
    """Posterior parameters of (B, 3, H, W) VAE inputs (already ``(x - 0.5) / 0.8``-normalised).

    Returns:
        (B, 2 * latent_channels, H/8, W/8) ``latent_dist.parameters`` on ``device`` (default: the
        VAE's), in the dtype the VAE ran in (float32 when a float16 VAE was upcast).
    """
    _check_pixels(vae_input)
    with vae_precision(vae) as dtype:
        return vae.encode(vae_input.to(device=device or vae.device, dtype=dtype)).latent_dist.parameters


def encode_posterior(vae, pixels: torch.Tensor, device: Optional[torch.device] = None) -> torch.Tensor:
    """Posterior parameters of (B, 3, H, W) pixels in [0, 1] (:func:`vae_posterior` of ``scale_image(2 x - 1)``)."""
    _check_pixels(pixels)
    return vae_posterior(vae, pixels_to_vae_input(pixels.to(device=device or vae.device)), device)


def sample_condition_latents(posterior: torch.Tensor, generator: Optional[torch.Generator] = None,
                             space: str = "raw", scaling_factor: Optional[float] = None) -> torch.Tensor:
    """Draw condition latents from posterior parameters, in ``space``.

    The draw is ``DiagonalGaussianDistribution(posterior).sample(generator)``, exactly what
    ``vae.encode(x).latent_dist.sample(generator)`` does; ``"scaled"`` then applies
    ``scale_latents(sample * scaling_factor)``.

    Args:
        posterior: (B, 2C, h, w) posterior parameters.
        generator: for the standard normal draw of shape (B, C, h, w).
        space: one of :data:`CONDITION_LATENT_SPACES`.
        scaling_factor: the VAE's ``config.scaling_factor``; needed for ``"scaled"``.
    """
    sample = DiagonalGaussianDistribution(posterior).sample(generator)
    if check_condition_latent_space(space) == "raw":
        return sample
    if scaling_factor is None:
        raise ConfigError("condition_latent_space 'scaled' needs the VAE's scaling_factor")
    return scale_latents(sample * scaling_factor)


def encode_condition_latents(vae, pixels: torch.Tensor, generator: Optional[torch.Generator] = None,
                             device: Optional[torch.device] = None, space: str = "raw") -> torch.Tensor:
    """Condition latents of grids: a posterior sample of ``vae.encode(scale_image(2 x - 1))`` in ``space``.

    Args:
        vae: an ``AutoencoderKL`` (slicing/tiling settings are honoured).
        pixels: (B, 3, H, W) in [0, 1].
        generator: for the posterior sample.
        device: where the VAE runs (the pipeline's execution device under CPU offload); default
            the VAE's device.
        space: ``"raw"`` (default) or ``"scaled"``, see :data:`CONDITION_LATENT_SPACES`.
    Returns:
        (B, latent_channels, H/8, W/8) on ``device`` (float32 when the VAE was upcast).
    """
    return sample_condition_latents(encode_posterior(vae, pixels, device), generator, space,
                                    vae.config.scaling_factor)


def encode_target_latents(vae, pixels: torch.Tensor, generator: Optional[torch.Generator] = None,
                          device: Optional[torch.device] = None) -> torch.Tensor:
    """Latents the UNet denoises: ``scale_latents(sample * scaling_factor)`` of (B, 3, H, W) pixels in [0, 1]."""
    sample = DiagonalGaussianDistribution(encode_posterior(vae, pixels, device)).sample(generator)
    return scale_latents(sample * vae.config.scaling_factor)


def decode_latents(vae, latents: torch.Tensor, device: Optional[torch.device] = None) -> torch.Tensor:
    """Inverse of :func:`encode_target_latents`: (B, 4, h, w) Zero123++ latents -> (B, 3, 8h, 8w) pixels in [0, 1]."""
    with vae_precision(vae) as dtype:
        z = unscale_latents(latents.to(device=device or vae.device, dtype=dtype)) / vae.config.scaling_factor
        decoded = vae.decode(z).sample
    return vae_output_to_pixels(decoded.float())


@torch.no_grad()
def null_condition_posterior(vae, null_condition: str, latent_size: Sequence[int],
                             device: Optional[torch.device] = None) -> torch.Tensor:
    """Posterior parameters of the constant image named ``null_condition``, (1, 2C, h, w).

    The image is ``NULL_CONDITION_PIXELS[null_condition]`` everywhere, ``8h x 8w`` pixels (the VAE's
    downsampling factor times ``latent_size``), encoded like every condition
    (:func:`encode_posterior`): black is VAE input -0.625 and grey 0.0, exactly the tensors the
    official code encodes (see :data:`NULL_CONDITION_PIXELS`). Cache the result: it depends only on
    the VAE, the name, the size, the device and the dtype.
    """
    value = NULL_CONDITION_PIXELS[check_null_condition(null_condition)]
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    h, w = (int(s) for s in latent_size)
    pixels = torch.full((1, 3, h * factor, w * factor), value, device=device or vae.device)
    return encode_posterior(vae, pixels, device)


def null_condition_latents(posterior: torch.Tensor, batch: int, generator: Optional[torch.Generator] = None,
                           space: str = "raw", scaling_factor: Optional[float] = None) -> torch.Tensor:
    """The unconditional condition latents: ``batch`` fresh posterior samples of the null image.

    ``posterior`` is :func:`null_condition_posterior`'s (1, 2C, h, w); the draw has shape
    (batch, C, h, w), as the official ``vae.encode(zeros_like(images)).latent_dist.sample()`` of a
    batch of ``batch`` images, and lands in ``space`` like every condition latent.
    """
    if posterior.ndim != 4 or posterior.shape[0] != 1:
        raise InputError(f"expected (1, 2C, h, w) null-condition posterior parameters, got {tuple(posterior.shape)}")
    return sample_condition_latents(posterior.expand(batch, -1, -1, -1), generator, space, scaling_factor)


def drop_conditions(prompt_embeds: torch.Tensor, condition_latents: torch.Tensor,
                    null_prompt_embeds: torch.Tensor, null_latents: torch.Tensor, drop: torch.Tensor):
    """Replace the dropped samples of a batch by the unconditional branch (training's CFG dropout).

    Args:
        prompt_embeds: (B, 77, D) prompt embeddings.
        condition_latents: (B, C, h, w) condition latents.
        null_prompt_embeds: (1, 77, D) or (B, 77, D) embeddings of :data:`NULL_PROMPT`.
        null_latents: (B, C, h, w) from :func:`null_condition_latents`, in the space of
            ``condition_latents``.
        drop: (B,) bool, True where the sample is dropped.
    Returns:
        ``(prompt_embeds, condition_latents)`` with dropped rows set to the null prompt and null latents.
    """
    if drop.shape != (prompt_embeds.shape[0],) or condition_latents.shape[0] != prompt_embeds.shape[0]:
        raise InputError(f"drop must be a ({prompt_embeds.shape[0]},) bool mask matching the batch, "
                         f"got {tuple(drop.shape)} and condition batch {condition_latents.shape[0]}")
    if null_latents.shape != condition_latents.shape:
        raise InputError(f"null latents {tuple(null_latents.shape)} must match the condition latents "
                         f"{tuple(condition_latents.shape)}")
    drop = drop.to(device=prompt_embeds.device, dtype=torch.bool)
    embeds = torch.where(drop[:, None, None], null_prompt_embeds.to(prompt_embeds), prompt_embeds)
    cond = torch.where(drop.to(condition_latents.device)[:, None, None, None],
                       null_latents.to(condition_latents), condition_latents)
    return embeds, cond
