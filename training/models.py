"""Loading the models a training run starts from (through the refine stage's loaders)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from sharpit.errors import CheckpointError, ConfigError
from sharpit.sources import load_errors

if TYPE_CHECKING:  # imported when a model loads, so that the training commands check their flags first
    from sharpit.refine import SharpItRefinePipeline

_PIPELINE_CLASS = "SharpItRefinePipeline"

__all__ = ["load_training_pipeline", "check_sharpit_folder"]


def check_sharpit_folder(path: str) -> None:
    """A local ``init_from: sharpit`` folder must be a saved SharpItRefinePipeline (a Zero123++ repo
    is not): read from its ``model_index.json`` without loading anything."""
    index = Path(path) / "model_index.json"
    if not index.is_file():
        return  # a hub id: from_pretrained reports what is wrong
    try:
        class_name = json.loads(index.read_text(encoding="utf-8")).get("_class_name")
    except json.JSONDecodeError as exc:
        raise CheckpointError(index, f"not valid JSON ({exc})") from exc
    if class_name != _PIPELINE_CLASS:
        raise CheckpointError(path, f"is a {class_name} checkpoint, not a {_PIPELINE_CLASS}; "
                                    "use init_from: zero123plus for a Zero123++ base model")


def load_training_pipeline(pretrained_model: str, init_from: str, conditioning_mode: str,
                           null_condition: Optional[str] = None, condition_latent_space: Optional[str] = None,
                           ) -> SharpItRefinePipeline:
    """The pipeline whose UNet training starts from (all components float32, on the CPU).

    Args:
        pretrained_model: a Zero123++ v1.2 folder or hub id (``init_from="zero123plus"``; its UNet
            is widened to 8 input channels for ``"concat"``) or a saved ``SharpItRefinePipeline``
            (``init_from="sharpit"``).
        init_from: ``"zero123plus"`` or ``"sharpit"``.
        conditioning_mode: ``"concat"`` or ``"reference"``; must match a Sharp-It checkpoint's UNet.
        null_condition, condition_latent_space: the pipeline settings; None keeps a Sharp-It
            checkpoint's or takes the defaults; given values must match a Sharp-It checkpoint's.
    Raises:
        CheckpointError: the folder holds another model (e.g. a Zero123++ repo given as Sharp-It,
            or an already widened UNet given as Zero123++), or a checkpoint trained with other settings.
    """
    from diffusers import UNet2DConditionModel

    from sharpit.refine import SharpItRefinePipeline, init_unet_from_zero123plus

    pretrained_model = os.fspath(pretrained_model)
    if init_from == "sharpit":
        check_sharpit_folder(pretrained_model)
        pipe = SharpItRefinePipeline.from_pretrained(pretrained_model)
        if pipe.conditioning_mode != conditioning_mode:
            raise CheckpointError(pretrained_model, f"holds a {pipe.conditioning_mode}-conditioned UNet but "
                                                    f"conditioning_mode is {conditioning_mode!r}")
        asked = {"null_condition": null_condition, "condition_latent_space": condition_latent_space}
        differing = [k for k, v in asked.items() if v is not None and v != pipe.config[k]]
        if differing:
            raise CheckpointError(pretrained_model, "was trained with " + ", ".join(
                f"{k}={pipe.config[k]!r} (the config asks for {asked[k]!r})" for k in differing))
        return pipe
    with load_errors(pretrained_model, "Zero123++ UNet"):
        unet = UNet2DConditionModel.from_pretrained(pretrained_model, subfolder="unet")
    if unet.config.in_channels != unet.config.out_channels:
        raise CheckpointError(pretrained_model, f"its UNet takes {unet.config.in_channels} input channels, not "
                                                f"{unet.config.out_channels}: not a Zero123++ base model; use "
                                                "init_from: sharpit for a Sharp-It checkpoint")
    if conditioning_mode == "concat":
        unet = init_unet_from_zero123plus(unet)
    try:
        return SharpItRefinePipeline.from_zero123plus(base=pretrained_model, unet=unet, conditioning_mode=conditioning_mode,
                                                null_condition=null_condition,
                                                condition_latent_space=condition_latent_space or "raw")
    except ConfigError as exc:
        raise CheckpointError(pretrained_model, str(exc)) from exc
