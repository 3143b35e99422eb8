"""The coarse stage: Shap-E text-to-3D latents, their meshes and their six-view renders."""

from ..lazy import lazy_exports
from .render_options import COARSE_RENDER_MODES, DEFAULT_COARSE_RENDER, CoarseRenderOptions

__all__ = ["ShapEGenerator", "SHAP_E_HUB_ID", "SHAP_E_LATENT_WIDTH", "save_latents", "load_latents",
           "check_latents", "find_latents", "karras_sigmas", "ShapEDiffusionClock", "OFFICIAL_SIGMA_MIN",
           "OFFICIAL_SIGMA_MAX",
           "CoarseRenderOptions", "DEFAULT_COARSE_RENDER", "COARSE_RENDER_MODES", "ShapEEncoder",
           "ShapEEncoderInputs", "EncoderInputSettings", "prepare_encoder_inputs", "ShapEInversion"]


#: Public names imported on first use (PEP 562), so importing a light part of this package (or
#: ``sharpit.options`` through it) does not pull in diffusers and transformers.
_LAZY = {
    "SHAP_E_LATENT_WIDTH": ".latents",
    "check_latents": ".latents",
    "find_latents": ".latents",
    "load_latents": ".latents",
    "save_latents": ".latents",
    "OFFICIAL_SIGMA_MAX": ".sampling",
    "OFFICIAL_SIGMA_MIN": ".sampling",
    "ShapEDiffusionClock": ".sampling",
    "karras_sigmas": ".sampling",
    "SHAP_E_HUB_ID": ".shap_e",
    "ShapEGenerator": ".shap_e",
    "ShapEInversion": ".inversion",
    "ShapEEncoder": ".encoder",
    "ShapEEncoderInputs": ".encoder_model",
    "EncoderInputSettings": ".encoder_inputs",
    "prepare_encoder_inputs": ".encoder_inputs",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
