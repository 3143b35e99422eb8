"""Loading the refiner: ``from_pretrained`` with readable errors, and ``from_zero123plus``.

``from_zero123plus`` assembles the released Sharp-It UNet (``YiftachEde/Sharp-It``: ``config.json`` +
``diffusion_pytorch_model.safetensors`` at the repository root) with the VAE, text encoder,
tokenizer and scheduler of ``sudo-ai/zero123plus-v1.2``, loaded one subfolder at a time so the
base repository's custom pipeline class, vision encoder and feature extractors are never touched.
"""

from __future__ import annotations

import contextlib
import os
from typing import Optional

from huggingface_hub.errors import HFValidationError, HfHubHTTPError

from ..errors import AssetNotFoundError, CheckpointError, SharpItError, WeightsNotFoundError

__all__ = ["ZERO123PLUS_ID", "SHARP_IT_UNET_ID", "SharpItLoadingMixin", "load_errors"]

#: Hub id of the base model whose VAE, text encoder, tokenizer and scheduler Sharp-It uses.
ZERO123PLUS_ID = "sudo-ai/zero123plus-v1.2"
#: Hub id of the released Sharp-It UNet.
SHARP_IT_UNET_ID = "YiftachEde/Sharp-It"

_HUB_KWARGS = ("cache_dir", "revision", "local_files_only", "token", "force_download", "proxies")


def _looks_like_path(name: str) -> bool:
    return os.path.isabs(name) or name.startswith(".") or name.count("/") > 1 or os.sep in name.replace("/", "")


@contextlib.contextmanager
def load_errors(name, what: str):
    """Map loader failures for ``name`` to sharpit errors.

    A local directory that is incomplete or corrupt raises :class:`CheckpointError`; a path that
    does not exist raises :class:`AssetNotFoundError`; a hub id that cannot be fetched (offline,
    missing from the cache) raises :class:`WeightsNotFoundError` naming the id.
    """
    name = os.fspath(name)
    try:
        yield
    except SharpItError:
        raise
    except (OSError, ValueError, HfHubHTTPError) as exc:
        if os.path.isdir(name):
            raise CheckpointError(name, f"cannot load the {what}: {exc}") from exc
        if _looks_like_path(name) or (isinstance(exc, HFValidationError) and not os.path.exists(name)):
            raise AssetNotFoundError(name, f"no such directory for the {what}; pass a local "
                                           "folder or a Hugging Face hub id") from exc
        if isinstance(exc, ValueError) and not isinstance(exc, HFValidationError):
            raise
        raise WeightsNotFoundError(name, f"({what}; underlying error: {type(exc).__name__}: {exc})") from exc


class SharpItLoadingMixin:
    """``from_pretrained`` with sharpit errors, and ``from_zero123plus``; mixed into SharpItPipeline."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """Load a pipeline saved with ``save_pretrained`` (local folder or hub id); see diffusers."""
        name = os.fspath(pretrained_model_name_or_path)
        with load_errors(name, "Sharp-It pipeline"):
            return super().from_pretrained(name, **kwargs)

    @classmethod
    def from_zero123plus(cls, base=ZERO123PLUS_ID, unet=SHARP_IT_UNET_ID, torch_dtype=None,
                         unet_subfolder: Optional[str] = None, conditioning_mode: Optional[str] = None,
                         **hub_kwargs):
        """Assemble a pipeline from Zero123++ v1.2 components and a Sharp-It UNet.

        Args:
            base: hub id or local folder laid out like ``sudo-ai/zero123plus-v1.2`` (``vae/``,
                ``text_encoder/``, ``tokenizer/``, ``scheduler/`` are read; the rest is ignored).
            unet: hub id or local folder of the UNet (``config.json`` + weights at its root, or in
                ``unet_subfolder``), or an already built ``UNet2DConditionModel``.
            torch_dtype: dtype of the loaded models (e.g. ``torch.float16``).
            conditioning_mode: ``"concat"``, ``"reference"`` or None (infer from the UNet).
            hub_kwargs: ``cache_dir``, ``revision``, ``local_files_only``, ``token``, ... passed to every loader.
        Returns:
            A :class:`SharpItPipeline` with an EulerAncestral scheduler (trailing spacing, v-prediction)
            built from the base scheduler's config.
        """
        from diffusers import AutoencoderKL, EulerAncestralDiscreteScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        bad = set(hub_kwargs) - set(_HUB_KWARGS)
        if bad:
            raise TypeError(f"unexpected keyword arguments {sorted(bad)}; allowed: {_HUB_KWARGS}")
        base = os.fspath(base)
        dtype_kw = {} if torch_dtype is None else {"torch_dtype": torch_dtype}
        with load_errors(base, "Zero123++ VAE"):
            vae = AutoencoderKL.from_pretrained(base, subfolder="vae", **dtype_kw, **hub_kwargs)
        with load_errors(base, "Zero123++ text encoder"):
            text_encoder = CLIPTextModel.from_pretrained(
                base, subfolder="text_encoder", **({} if torch_dtype is None else {"dtype": torch_dtype}),
                **hub_kwargs)
        with load_errors(base, "Zero123++ tokenizer"):
            tokenizer = CLIPTokenizer.from_pretrained(base, subfolder="tokenizer", **hub_kwargs)
        with load_errors(base, "Zero123++ scheduler"):
            sched_config = EulerAncestralDiscreteScheduler.load_config(base, subfolder="scheduler", **hub_kwargs)
        scheduler = EulerAncestralDiscreteScheduler.from_config(
            sched_config, timestep_spacing="trailing", prediction_type="v_prediction")
        if not isinstance(unet, UNet2DConditionModel):
            unet = os.fspath(unet)
            with load_errors(unet, "Sharp-It UNet"):
                unet = UNet2DConditionModel.from_pretrained(
                    unet, **({"subfolder": unet_subfolder} if unet_subfolder else {}), **dtype_kw, **hub_kwargs)
        return cls(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                   conditioning_mode=conditioning_mode)
