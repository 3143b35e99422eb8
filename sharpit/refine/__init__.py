"""The refine stage: Sharp-It's multi-view diffusion refiner (a diffusers pipeline).

Public API: :class:`SharpItRefinePipeline` (Sharp-It refiner; ``SharpItPipeline`` is its deprecated old name, and stock Zero123++ through
``SharpItRefinePipeline.from_zero123plus(base, unet=None)``), :class:`SharpItRefinePipelineOutput`, the Zero123++
scalings (:mod:`sharpit.refine.scaling`), the shared encoders and the unconditional branch of
:mod:`sharpit.refine.conditioning`, reference attention, and :func:`init_unet_from_zero123plus`.
"""

from .conditioning import (CONDITION_LATENT_SPACES, NULL_CONDITION_PIXELS, NULL_CONDITIONS, NULL_PROMPT,
                           decode_latents, drop_conditions, encode_condition_latents, encode_posterior, encode_prompt,
                           encode_target_latents, null_condition_latents, null_condition_posterior,
                           sample_condition_latents, vae_posterior, vae_precision)
from .denoise import CONDITIONING_MODES, conditioned_unet_forward, resolve_conditioning_mode
from .loading import SHARP_IT_UNET_ID, ZERO123PLUS_ID
from .pipeline import (DEFAULT_NULL_CONDITION, ZERO123PLUS_BACKGROUND, SharpItRefinePipeline, SharpItRefinePipelineOutput,
                       coerce_condition, coerce_condition_images)
from .reference_attention import (ReferenceAttnProcessor, ReferenceBank, disable_reference_attention,
                                  enable_reference_attention, noise_reference_latents, reference_unet_forward)
from .scaling import (IMAGE_SCALE, LATENT_SCALE, LATENT_SHIFT, pixels_to_vae_input, scale_image, scale_latents,
                      unscale_image, unscale_latents, vae_output_to_pixels)
from .unet_init import init_unet_from_zero123plus

__all__ = [
    "SharpItRefinePipeline", "SharpItRefinePipelineOutput", "coerce_condition", "coerce_condition_images",
    "DEFAULT_NULL_CONDITION", "ZERO123PLUS_BACKGROUND",
    "init_unet_from_zero123plus",
    "IMAGE_SCALE", "LATENT_SHIFT", "LATENT_SCALE", "scale_image", "unscale_image", "scale_latents",
    "unscale_latents", "pixels_to_vae_input", "vae_output_to_pixels",
    "NULL_PROMPT", "NULL_CONDITION_PIXELS", "NULL_CONDITIONS", "CONDITION_LATENT_SPACES", "vae_precision",
    "encode_prompt", "vae_posterior", "encode_posterior", "sample_condition_latents", "encode_condition_latents",
    "encode_target_latents", "decode_latents", "null_condition_posterior", "null_condition_latents",
    "drop_conditions",
    "CONDITIONING_MODES", "resolve_conditioning_mode", "conditioned_unet_forward",
    "ReferenceBank", "ReferenceAttnProcessor", "enable_reference_attention", "disable_reference_attention",
    "noise_reference_latents", "reference_unet_forward",
    "ZERO123PLUS_ID", "SHARP_IT_UNET_ID",
]


def __getattr__(name: str):
    """Deprecated names of the first release (``SharpItPipeline``, ...): warn and return the new class."""
    from . import pipeline

    return pipeline.__getattr__(name)
