"""Tiny random Shap-E components saved in the on-disk layout of ``openai/shap-e``
(``model_index.json``, ``prior/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``,
``shap_e_renderer/``, safetensors weights), loadable with
:meth:`sharpit.coarse.ShapEGenerator.from_pretrained`.

The real scheduler config is kept as is. The models keep the real architecture with small widths:
the renderer's MLP is ``d_hidden=8`` wide, so a latent is 4 * 8 rows of ``d_latent=16``
(W = 512) instead of 1024 x 1024.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Union

import torch

from ..atomic import atomic_dir
from .tokenizers import TINY_CLIP_VOCAB_SIZE, save_tiny_clip_tokenizer

__all__ = ["TINY_SHAP_E_HIDDEN", "TINY_SHAP_E_LATENT_WIDTH", "tiny_shap_e_components", "save_tiny_shap_e"]

#: Width of the tiny renderer's MLP.
TINY_SHAP_E_HIDDEN = 8
_D_LATENT = 16
_ROWS = 4 * TINY_SHAP_E_HIDDEN
#: Length of one tiny latent (rows x d_latent).
TINY_SHAP_E_LATENT_WIDTH = _ROWS * _D_LATENT
_TEXT_DIM = 16

#: ``openai/shap-e``'s scheduler/scheduler_config.json.
SCHEDULER_CONFIG = {"beta_schedule": "exp", "num_train_timesteps": 1024, "clip_sample": True,
                    "clip_sample_range": 1.0, "prediction_type": "sample", "use_karras_sigmas": True}

#: ``openai/shap-e``'s model_index.json, minus the legacy ``renderer`` folder.
MODEL_INDEX = {
    "_class_name": "ShapEPipeline",
    "_diffusers_version": "0.17.0.dev0",
    "prior": ["diffusers", "PriorTransformer"],
    "scheduler": ["diffusers", "HeunDiscreteScheduler"],
    "shap_e_renderer": ["shap_e", "ShapERenderer"],
    "text_encoder": ["transformers", "CLIPTextModelWithProjection"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
}


def tiny_shap_e_components(seed: int = 0) -> Dict[str, object]:
    """Build randomly initialised tiny ``prior``, ``text_encoder``, ``scheduler`` and
    ``shap_e_renderer`` (float32, CPU), deterministic for a given ``seed``."""
    from diffusers import HeunDiscreteScheduler, PriorTransformer
    from diffusers.pipelines.shap_e import ShapERenderer
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        prior = PriorTransformer(
            num_attention_heads=2, attention_head_dim=8, num_layers=2, embedding_dim=_D_LATENT,
            num_embeddings=_ROWS, additional_embeddings=0, time_embed_act_fn="gelu", norm_in_type="layer",
            embedding_proj_dim=_TEXT_DIM, clip_embed_dim=2 * _D_LATENT, time_embed_dim=32,
            encoder_hid_proj_type=None, added_emb_type=None)
        text_config = CLIPTextConfig(
            vocab_size=TINY_CLIP_VOCAB_SIZE, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, max_position_embeddings=77, projection_dim=_TEXT_DIM,
            hidden_act="quick_gelu", bos_token_id=TINY_CLIP_VOCAB_SIZE - 2, eos_token_id=TINY_CLIP_VOCAB_SIZE - 1,
            pad_token_id=TINY_CLIP_VOCAB_SIZE - 1)
        text_encoder = CLIPTextModelWithProjection(text_config)
        h = TINY_SHAP_E_HIDDEN
        renderer = ShapERenderer(
            param_names=[f"nerstf.mlp.{i}.weight" for i in range(4)],
            param_shapes=[[h, 93], [h, h], [h, h], [h, h]], d_latent=_D_LATENT, d_hidden=h, n_output=12,
            n_hidden_layers=6, act_fn="swish", insert_direction_at=4, background=[255.0, 255.0, 255.0])
    finally:
        torch.random.set_rng_state(state)
    scheduler = HeunDiscreteScheduler(**SCHEDULER_CONFIG)
    return {"prior": prior.eval(), "text_encoder": text_encoder.eval(), "scheduler": scheduler,
            "shap_e_renderer": renderer.eval()}


def save_tiny_shap_e(directory: Union[str, "os.PathLike[str]"], seed: int = 0, overwrite: bool = False) -> Path:
    """Write tiny random Shap-E components to ``directory`` (atomically) in the
    ``openai/shap-e`` layout and return the folder."""
    directory = Path(directory)
    components = tiny_shap_e_components(seed)
    with atomic_dir(directory, overwrite=overwrite) as tmp:
        for name, component in components.items():
            component.save_pretrained(tmp / name)
        save_tiny_clip_tokenizer(tmp / "tokenizer")
        (tmp / "model_index.json").write_text(json.dumps(MODEL_INDEX, indent=2) + "\n")
    return directory
