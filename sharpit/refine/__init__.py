"""The refine stage: Sharp-It's multi-view diffusion refiner (a diffusers pipeline).

Public API: :class:`SharpItRefinePipeline` (the Sharp-It refiner, ``SharpItPipeline`` in 0.1, and
stock Zero123++ through ``SharpItRefinePipeline.from_zero123plus(base, unet=None)``),
:class:`SharpItRefinePipelineOutput`, the Zero123++ scalings (:mod:`sharpit.refine.scaling`), the shared encoders and the unconditional branch of
:mod:`sharpit.refine.conditioning`, reference attention, and :func:`init_unet_from_zero123plus`.
"""

import importlib

from ..lazy import lazy_exports

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


#: Public names imported on first use (PEP 562), so importing a light part of this package does
#: not pull in diffusers and transformers.
_LAZY = {
    "CONDITION_LATENT_SPACES": ".conditioning",
    "NULL_CONDITIONS": ".conditioning",
    "NULL_CONDITION_PIXELS": ".conditioning",
    "NULL_PROMPT": ".conditioning",
    "decode_latents": ".conditioning",
    "drop_conditions": ".conditioning",
    "encode_condition_latents": ".conditioning",
    "encode_posterior": ".conditioning",
    "encode_prompt": ".conditioning",
    "encode_target_latents": ".conditioning",
    "null_condition_latents": ".conditioning",
    "null_condition_posterior": ".conditioning",
    "sample_condition_latents": ".conditioning",
    "vae_posterior": ".conditioning",
    "vae_precision": ".conditioning",
    "CONDITIONING_MODES": ".denoise",
    "conditioned_unet_forward": ".denoise",
    "resolve_conditioning_mode": ".denoise",
    "SHARP_IT_UNET_ID": ".loading",
    "ZERO123PLUS_ID": ".loading",
    "DEFAULT_NULL_CONDITION": ".pipeline",
    "SharpItRefinePipeline": ".pipeline",
    "SharpItRefinePipelineOutput": ".pipeline",
    "ZERO123PLUS_BACKGROUND": ".pipeline",
    "coerce_condition": ".pipeline",
    "coerce_condition_images": ".pipeline",
    "ReferenceAttnProcessor": ".reference_attention",
    "ReferenceBank": ".reference_attention",
    "disable_reference_attention": ".reference_attention",
    "enable_reference_attention": ".reference_attention",
    "noise_reference_latents": ".reference_attention",
    "reference_unet_forward": ".reference_attention",
    "IMAGE_SCALE": ".scaling",
    "LATENT_SCALE": ".scaling",
    "LATENT_SHIFT": ".scaling",
    "pixels_to_vae_input": ".scaling",
    "scale_image": ".scaling",
    "scale_latents": ".scaling",
    "unscale_image": ".scaling",
    "unscale_latents": ".scaling",
    "vae_output_to_pixels": ".scaling",
    "init_unet_from_zero123plus": ".unet_init",
}


def _deprecated(name: str):
    """Old names of the first release (``SharpItPipeline``, ...): warn, then the new class."""
    pipeline = importlib.import_module(".pipeline", __name__)
    if name in pipeline.DEPRECATED_NAMES:
        return pipeline.__getattr__(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals(), fallback=_deprecated)
