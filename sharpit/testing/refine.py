"""Tiny random refiner components saved in the on-disk layouts of the real checkpoints.

* :func:`save_tiny_sharpit_pipeline`: a ``SharpItRefinePipeline.save_pretrained`` folder
  (``model_index.json``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``unet/``, ``scheduler/``).
* :func:`save_tiny_zero123plus_repo`: a folder laid out like ``sudo-ai/zero123plus-v1.2``: a
  ``model_index.json`` naming the custom ``Zero123PlusPipeline`` class, and ``vae/``,
  ``text_encoder/``, ``tokenizer/``, ``scheduler/``, ``unet/`` (4 channels), ``vision_encoder/``,
  ``feature_extractor_clip/``, ``feature_extractor_vae/``.
* :func:`save_tiny_sharp_it_unet_repo`: a folder laid out like ``YiftachEde/Sharp-It``
  (``config.json`` + ``diffusion_pytorch_model.safetensors`` at the root, 8 input channels).

The VAE keeps the real 8x downsampling and 4 latent channels, so a 960x640 grid still maps to a
4x120x80 latent; channel widths are tiny so everything runs on a CPU in well under a second per step.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Union

import torch

from .tokenizers import TINY_CLIP_VOCAB_SIZE, save_tiny_clip_tokenizer

__all__ = [
    "TINY_TEXT_DIM",
    "TINY_CLIP_IMAGE_SIZE",
    "TINY_RAMPING_COEFFICIENTS",
    "tiny_unet",
    "tiny_vae",
    "tiny_text_encoder",
    "tiny_vision_encoder",
    "tiny_scheduler",
    "tiny_sharpit_pipeline",
    "save_tiny_sharpit_pipeline",
    "save_tiny_zero123plus_repo",
    "save_tiny_sharp_it_unet_repo",
]

PathLike = Union[str, os.PathLike]
#: Hidden size of the tiny text encoder (the UNet's cross_attention_dim).
TINY_TEXT_DIM = 32
#: Input size of the tiny vision encoder, the real CLIP processor's crop.
TINY_CLIP_IMAGE_SIZE = 224
#: The tiny repo's per-token weights of the global embedding (77 values; token 0 gets (almost) none,
#: as in the real ones, and the others vary so that a mis-applied ramp shows).
TINY_RAMPING_COEFFICIENTS = [0.0] + [round(0.1 + 0.05 * (i % 5), 2) for i in range(1, 77)]

_ZERO123PLUS_SCHEDULER = {  # values of sudo-ai/zero123plus-v1.2 scheduler/scheduler_config.json (manifest)
    "_class_name": "EulerAncestralDiscreteScheduler", "num_train_timesteps": 1000, "beta_start": 0.00085,
    "beta_end": 0.012, "beta_schedule": "linear", "trained_betas": None, "prediction_type": "v_prediction",
    "timestep_spacing": "linspace", "steps_offset": 1, "clip_sample": False, "set_alpha_to_one": False,
    "skip_prk_steps": True,
}


def tiny_unet(in_channels: int = 8, seed: int = 0):
    """A tiny ``UNet2DConditionModel`` (two levels, attention only at the lower one)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=16, in_channels=in_channels, out_channels=4, layers_per_block=1,
        block_out_channels=(16, 32), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), mid_block_type="UNetMidBlock2DCrossAttn",
        cross_attention_dim=TINY_TEXT_DIM, attention_head_dim=2, norm_num_groups=8, use_linear_projection=True)


def tiny_vae(seed: int = 0):
    """A tiny ``AutoencoderKL`` with the real 8x downsampling and 4 latent channels."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, block_out_channels=(4, 4, 4, 4),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        norm_num_groups=2, sample_size=64, scaling_factor=0.18215, force_upcast=True)


def tiny_text_encoder(seed: int = 0):
    """A tiny ``CLIPTextModel`` matching the tiny tokenizer (77 positions)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    config = CLIPTextConfig(vocab_size=TINY_CLIP_VOCAB_SIZE, hidden_size=TINY_TEXT_DIM, intermediate_size=37,
                            num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
                            bos_token_id=TINY_CLIP_VOCAB_SIZE - 2, eos_token_id=TINY_CLIP_VOCAB_SIZE - 1,
                            pad_token_id=TINY_CLIP_VOCAB_SIZE - 1)
    return CLIPTextModel(config).eval()


def tiny_scheduler():
    """The inference scheduler: EulerAncestral, trailing spacing, v-prediction, Zero123++ betas."""
    from diffusers import EulerAncestralDiscreteScheduler

    cfg = {k: v for k, v in _ZERO123PLUS_SCHEDULER.items() if not k.startswith("_")}
    cfg.update(timestep_spacing="trailing")
    return EulerAncestralDiscreteScheduler.from_config(cfg)


def tiny_sharpit_pipeline(mode: str = "concat", seed: int = 0):
    """A :class:`~sharpit.refine.SharpItRefinePipeline` of tiny random components (``mode``: concat|reference)."""
    from transformers import CLIPTokenizer

    from ..refine import SharpItRefinePipeline

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = CLIPTokenizer.from_pretrained(str(save_tiny_clip_tokenizer(tmp)))
    unet = tiny_unet(8 if mode == "concat" else 4, seed)
    return SharpItRefinePipeline(vae=tiny_vae(seed), text_encoder=tiny_text_encoder(seed), tokenizer=tokenizer,
                           unet=unet, scheduler=tiny_scheduler())


def save_tiny_sharpit_pipeline(directory: PathLike, mode: str = "concat", seed: int = 0) -> Path:
    """Save a tiny pipeline with ``save_pretrained`` (safetensors) and return the folder."""
    directory = Path(directory)
    tiny_sharpit_pipeline(mode, seed).save_pretrained(directory)
    return directory


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))


def tiny_vision_encoder(seed: int = 0):
    """A tiny ``CLIPVisionModelWithProjection`` that takes the real CLIP processor's 224x224 crops
    (patch 14, as OpenCLIP ViT-H/14) and projects to the tiny text width (its global embedding)."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    return CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        image_size=TINY_CLIP_IMAGE_SIZE, patch_size=14, projection_dim=TINY_TEXT_DIM)).eval()


def save_tiny_zero123plus_repo(directory: PathLike, seed: int = 0) -> Path:
    """Write a tiny repository laid out like ``sudo-ai/zero123plus-v1.2`` and return its folder.

    The feature extractors carry the real preprocessor configs (CLIP: resize and centre-crop to
    224, CLIP statistics; VAE: 512, mean 0.5, std 0.8), and the vision encoder takes the CLIP
    processor's 224x224 crops, so the official ``Zero123PlusPipeline`` and
    ``SharpItRefinePipeline.from_zero123plus(repo, unet=None)`` both run on it.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tiny_vae(seed).save_pretrained(directory / "vae")
    tiny_text_encoder(seed).save_pretrained(directory / "text_encoder")
    save_tiny_clip_tokenizer(directory / "tokenizer")
    tiny_unet(4, seed).save_pretrained(directory / "unet")
    _write_json(directory / "scheduler" / "scheduler_config.json", _ZERO123PLUS_SCHEDULER)
    tiny_vision_encoder(seed).save_pretrained(directory / "vision_encoder")
    _write_json(directory / "feature_extractor_clip" / "preprocessor_config.json", {
        "crop_size": {"height": TINY_CLIP_IMAGE_SIZE, "width": TINY_CLIP_IMAGE_SIZE}, "do_center_crop": True,
        "do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
        "image_processor_type": "CLIPImageProcessor", "resample": 3, "rescale_factor": 1 / 255,
        "size": {"shortest_edge": TINY_CLIP_IMAGE_SIZE}})
    _write_json(directory / "feature_extractor_vae" / "preprocessor_config.json", {
        "crop_size": {"height": 512, "width": 512}, "do_center_crop": True, "do_convert_rgb": True,
        "do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": 0.5, "image_std": 0.8,
        "image_processor_type": "CLIPImageProcessor", "resample": 2, "rescale_factor": 1 / 255,
        "size": {"shortest_edge": 512}})
    _write_json(directory / "model_index.json", {
        "_class_name": "Zero123PlusPipeline", "_diffusers_version": "0.24.0",
        "_name_or_path": "sudo-ai/zero123plus-v1.1",
        "feature_extractor_clip": ["transformers", "CLIPImageProcessor"],
        "feature_extractor_vae": ["transformers", "CLIPImageProcessor"],
        "ramping_coefficients": TINY_RAMPING_COEFFICIENTS,
        "safety_checker": [None, None], "scheduler": ["diffusers", "EulerAncestralDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "vision_encoder": ["transformers", "CLIPVisionModelWithProjection"]})
    return directory


def save_tiny_sharp_it_unet_repo(directory: PathLike, seed: int = 0) -> Path:
    """Write a tiny 8-channel UNet laid out like ``YiftachEde/Sharp-It`` (files at the root)."""
    directory = Path(directory)
    tiny_unet(8, seed).save_pretrained(directory)
    return directory
