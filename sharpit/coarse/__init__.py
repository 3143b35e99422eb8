"""The coarse stage: Shap-E text-to-3D latents, their meshes and their six-view renders."""

from .latents import SHAP_E_LATENT_WIDTH, check_latents, load_latents, save_latents
from .render_options import COARSE_RENDER_MODES, DEFAULT_COARSE_RENDER, CoarseRenderOptions
from .sampling import OFFICIAL_SIGMA_MAX, OFFICIAL_SIGMA_MIN, ShapEDiffusionClock, karras_sigmas
from .shap_e import SHAP_E_HUB_ID, ShapEGenerator

__all__ = ["ShapEGenerator", "SHAP_E_HUB_ID", "SHAP_E_LATENT_WIDTH", "save_latents", "load_latents",
           "check_latents", "karras_sigmas", "ShapEDiffusionClock", "OFFICIAL_SIGMA_MIN", "OFFICIAL_SIGMA_MAX",
           "CoarseRenderOptions", "DEFAULT_COARSE_RENDER", "COARSE_RENDER_MODES"]
