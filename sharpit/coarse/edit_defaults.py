"""Defaults of latent editing (edit-friendly DDPM inversion of the Shap-E prior), in a module
without torch so that :class:`~sharpit.options.GenerationOptions` and the command lines can use
them before any heavy import. The algorithm is :mod:`sharpit.coarse.inversion`."""

__all__ = ["DEFAULT_INVERSION_STEPS", "DEFAULT_EDIT_GUIDANCE", "DEFAULT_EDIT_STRENGTH"]

#: SPEC section 7: Sharp-It's latent edits use 128 DDPM steps and CFG 12.
DEFAULT_INVERSION_STEPS = 128
DEFAULT_EDIT_GUIDANCE = 12.0
#: Sharp-It publishes no edit strength. The paper's code defaults to skipping 36 of 100 steps
#: (``main_run.py --skip 36``, README ``--skip=36 --cfg_tar=15``): strength 0.64.
DEFAULT_EDIT_STRENGTH = 0.64
