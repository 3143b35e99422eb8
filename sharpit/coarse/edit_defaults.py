"""Defaults of latent editing (edit-friendly DDPM inversion of the Shap-E prior) and the rule
that picks an edit's route, in a module without torch so that
:class:`~sharpit.options.GenerationOptions` and the command lines can use them before any heavy
import. The algorithm is :mod:`sharpit.coarse.inversion`."""

from typing import Optional, Tuple

__all__ = ["DEFAULT_INVERSION_STEPS", "DEFAULT_EDIT_GUIDANCE", "DEFAULT_EDIT_STRENGTH", "EDIT_ROUTES", "edit_route"]

#: SPEC section 7: Sharp-It's latent edits use 128 DDPM steps and CFG 12.
DEFAULT_INVERSION_STEPS = 128
DEFAULT_EDIT_GUIDANCE = 12.0
#: Sharp-It publishes no edit strength. The paper's code defaults to skipping 36 of 100 steps
#: (``main_run.py --skip 36``, README ``--skip=36 --cfg_tar=15``): strength 0.64.
DEFAULT_EDIT_STRENGTH = 0.64

#: Ways :meth:`~sharpit.pipeline.SharpIt3DPipeline.edit` makes the coarse views of a mesh asset.
EDIT_ROUTES = ("latent", "render")


def edit_route(via: Optional[str], is_latent: bool, has_encoder: bool,
               has_shap_e: bool) -> Tuple[str, Optional[str]]:
    """The rule of :meth:`~sharpit.pipeline.SharpIt3DPipeline.edit`'s ``via``, in one place: the
    pipeline applies it to its models, the edit CLI to its flags before loading anything.

    A latent asset always takes the latent route; a mesh takes it by default when Shap-E's encoder
    and Shap-E (to decode) are both there, else it is rendered as it is.

    Returns:
        ``(route, problem)``: ``problem`` is None, or why ``via`` cannot be honoured:
        ``"unknown"`` (not in :data:`EDIT_ROUTES`), ``"latent_asset"`` (``via="render"`` of a
        latent), ``"no_encoder"`` or ``"no_shap_e"`` (``via="latent"`` without that model).
    """
    if via is not None and via not in EDIT_ROUTES:
        return "", "unknown"
    if is_latent:
        return ("latent", "latent_asset") if via == "render" else ("latent", None)
    if via is None:
        return ("latent" if has_encoder and has_shap_e else "render"), None
    if via == "latent" and not has_encoder:
        return via, "no_encoder"
    if via == "latent" and not has_shap_e:
        return via, "no_shap_e"
    return via, None
