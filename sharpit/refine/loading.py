"""Loading the refiner: ``from_pretrained`` with readable errors and settings migration, and
``from_zero123plus``.

``from_zero123plus`` assembles a pipeline from ``sudo-ai/zero123plus-v1.2``'s subfolders, one at a
time, so the base repository's custom pipeline class is never imported:

* with the released Sharp-It UNet (``YiftachEde/Sharp-It``: ``config.json`` +
  ``diffusion_pytorch_model.safetensors`` at the repository root), or any other UNet: the base's
  VAE, text encoder, tokenizer and scheduler;
* with ``unet=None``: stock Zero123++, i.e. also the base's own 4-channel UNet and its image
  conditioning (``vision_encoder/``, ``feature_extractor_clip/``, ``feature_extractor_vae/`` and the
  ``ramping_coefficients`` of its ``model_index.json``).
"""

from __future__ import annotations

import os
from typing import Optional

from ..errors import CheckpointError
from ..sources import SHARP_IT_UNET_ID, ZERO123PLUS_ID, diffusers_dtype, load_errors
from ..warn import warn

__all__ = ["ZERO123PLUS_ID", "SHARP_IT_UNET_ID", "SharpItLoadingMixin"]


_HUB_KWARGS = ("cache_dir", "revision", "local_files_only", "token", "force_download", "proxies")
#: Pipeline settings added after pipelines were first saved: a ``model_index.json`` without them
#: loads with their defaults and a warning.
MIGRATED_SETTINGS = ("null_condition", "condition_latent_space")


class SharpItLoadingMixin:
    """``from_pretrained`` with sharpit errors, and ``from_zero123plus``; mixed into SharpItRefinePipeline."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """Load a pipeline saved with ``save_pretrained`` (local folder or hub id); see diffusers.

        Settings (``null_condition``, ``condition_latent_space``, ...) may be overridden as keyword
        arguments. A folder saved before a setting existed loads with the setting's default (for
        ``null_condition``, the conditioning mode's) and a warning; ``save_pretrained`` records it.
        """
        name = os.fspath(pretrained_model_name_or_path)
        with load_errors(name, "Sharp-It pipeline"):
            pipe = super().from_pretrained(name, **kwargs)
            saved = cls.load_config(name, **{k: kwargs[k] for k in _HUB_KWARGS if k in kwargs})
        missing = [k for k in MIGRATED_SETTINGS if k not in saved and k not in kwargs]
        if missing:
            settings = ", ".join(f"{k}={pipe.config[k]!r}" for k in missing)
            warn(f"{name} was saved without the setting(s) {', '.join(missing)}; using the defaults for its "
                 f"{pipe.conditioning_mode} UNet: {settings}. Pass them to from_pretrained to choose, and "
                 "save the pipeline again to record them.", UserWarning)
        return pipe

    @classmethod
    def from_zero123plus(cls, base=ZERO123PLUS_ID, unet=SHARP_IT_UNET_ID, torch_dtype=None,
                         unet_subfolder: Optional[str] = None, conditioning_mode: Optional[str] = None,
                         null_condition: Optional[str] = None, condition_latent_space: str = "raw",
                         global_embedding: Optional[bool] = None, **hub_kwargs):
        """Assemble a pipeline from Zero123++ v1.2 components and a UNet.

        ``from_zero123plus()`` is Sharp-It (the released UNet); ``from_zero123plus(unet=None)`` is
        stock Zero123++ (its own UNet, reference attention, grey null condition and the CLIP global
        embedding: pass it one condition image, or a grid with ``strength < 1`` for SDEdit).

        Args:
            base: hub id or local folder laid out like ``sudo-ai/zero123plus-v1.2`` (``vae/``,
                ``text_encoder/``, ``tokenizer/``, ``scheduler/`` are read, and with
                ``global_embedding`` also ``vision_encoder/``, ``feature_extractor_clip/``,
                ``feature_extractor_vae/`` and ``model_index.json``'s ``ramping_coefficients``).
            unet: hub id or local folder of the UNet (``config.json`` + weights at its root, or in
                ``unet_subfolder``), an already built ``UNet2DConditionModel``, or None for the
                base's own ``unet/``.
            torch_dtype: dtype of the loaded models (e.g. ``torch.float16``).
            conditioning_mode: ``"concat"``, ``"reference"`` or None (infer from the UNet).
            null_condition: ``"black"``, ``"grey"`` or None (the mode's default, see
                :data:`~sharpit.refine.pipeline.DEFAULT_NULL_CONDITION`).
            condition_latent_space: ``"raw"`` or ``"scaled"`` (concat mode only), see
                :mod:`sharpit.refine.conditioning`.
            global_embedding: load Zero123++'s image conditioning (CLIP global embedding and the
                VAE feature extractor for single condition images); None means ``unet is None``.
                Set it for a Zero123++ fine-tune trained with it (e.g. InstantMesh's UNet).
            hub_kwargs: ``cache_dir``, ``revision``, ``local_files_only``, ``token``, ... passed to every loader.
        Returns:
            A :class:`SharpItRefinePipeline` with an EulerAncestral scheduler (trailing spacing, v-prediction)
            built from the base scheduler's config.
        """
        from diffusers import AutoencoderKL, EulerAncestralDiscreteScheduler, UNet2DConditionModel
        from transformers import CLIPImageProcessor, CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

        bad = set(hub_kwargs) - set(_HUB_KWARGS)
        if bad:
            raise TypeError(f"unexpected keyword arguments {sorted(bad)}; allowed: {_HUB_KWARGS}")
        base = os.fspath(base)
        dtype_kw = diffusers_dtype(torch_dtype)
        hf_dtype_kw = {} if torch_dtype is None else {"dtype": torch_dtype}
        with load_errors(base, "Zero123++ VAE"):
            vae = AutoencoderKL.from_pretrained(base, subfolder="vae", **dtype_kw, **hub_kwargs)
        with load_errors(base, "Zero123++ text encoder"):
            text_encoder = CLIPTextModel.from_pretrained(base, subfolder="text_encoder", **hf_dtype_kw, **hub_kwargs)
        with load_errors(base, "Zero123++ tokenizer"):
            tokenizer = CLIPTokenizer.from_pretrained(base, subfolder="tokenizer", **hub_kwargs)
        with load_errors(base, "Zero123++ scheduler"):
            sched_config = EulerAncestralDiscreteScheduler.load_config(base, subfolder="scheduler", **hub_kwargs)
        scheduler = EulerAncestralDiscreteScheduler.from_config(
            sched_config, timestep_spacing="trailing", prediction_type="v_prediction")
        if global_embedding is None:
            global_embedding = unet is None
        if unet is None:
            with load_errors(base, "Zero123++ UNet"):
                unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet", **dtype_kw, **hub_kwargs)
        elif not isinstance(unet, UNet2DConditionModel):
            unet = os.fspath(unet)
            with load_errors(unet, "Sharp-It UNet"):
                unet = UNet2DConditionModel.from_pretrained(
                    unet, **({"subfolder": unet_subfolder} if unet_subfolder else {}), **dtype_kw, **hub_kwargs)
        image_parts = {}
        if global_embedding:
            with load_errors(base, "Zero123++ vision encoder"):
                image_parts["vision_encoder"] = CLIPVisionModelWithProjection.from_pretrained(
                    base, subfolder="vision_encoder", **hf_dtype_kw, **hub_kwargs)
            for part in ("feature_extractor_clip", "feature_extractor_vae"):
                with load_errors(base, f"Zero123++ {part}"):
                    image_parts[part] = CLIPImageProcessor.from_pretrained(base, subfolder=part, **hub_kwargs)
            with load_errors(base, "Zero123++ model_index.json"):
                ramping = cls.load_config(base, **hub_kwargs).get("ramping_coefficients")
            if ramping is None:
                raise CheckpointError(base, "its model_index.json has no ramping_coefficients (needed by the "
                                            "CLIP global embedding); pass global_embedding=False")
            image_parts["ramping_coefficients"] = ramping
        return cls(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                   conditioning_mode=conditioning_mode, null_condition=null_condition,
                   condition_latent_space=condition_latent_space, **image_parts)
