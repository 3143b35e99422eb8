"""A tiny random Shap-E encoder in the released on-disk layout (``transmitter.pt``, a plain state
dict, + ``transmitter_config.yaml``), loadable with :meth:`sharpit.coarse.ShapEEncoder.from_pretrained`
through the same path as the released files.

Its latents are ``32 x 16`` (W = 512), the width of :mod:`sharpit.testing.shap_e`'s tiny renderer,
and its ``encoder.params_proj.*`` are that renderer's ``params_proj`` for the same seed, so
``ShapEGenerator.to_mesh`` of the tiny Shap-E decodes what this encoder makes. The inputs are
small too (128 points, 2 views of 32 px, point cloud from 4 renders of 48 px); those input
settings are written under ``sharpit_inputs`` in the YAML (a sharpit-only section: the released
pipeline fixes them in code, and the released file has no such section).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import torch

from ..atomic import atomic_dir

__all__ = ["TINY_ENCODER_YAML", "tiny_shap_e_encoder", "tiny_transmitter_state_dict", "save_tiny_shap_e_encoder"]

#: ``transmitter_config.yaml`` of the tiny encoder: the released structure at tiny sizes.
TINY_ENCODER_YAML = {
    "name": "Transmitter",
    "encoder": {
        "name": "PointCloudPerceiverChannelsEncoder", "cross_attention_dataset": "pcl_and_multiview_pcl",
        "d_latent": 16, "data_ctx": 16, "fps_method": "first", "heads": 2, "init_scale": 0.25,
        "inner_batch_size": [128, 2], "input_channels": 6,
        "latent_bottleneck": {"name": "clamp_diffusion_noise", "diffusion_prob": 0.1,
                              "diffusion": {"schedule": "inv_parabola", "schedule_args": {"power": 5.0},
                                            "timesteps": 1024}},
        "layers": 2, "max_depth": 9.0, "max_unrolls": 1, "min_unrolls": 1,
        "params_proj": {"init_scale": 1.0, "learned_scale": 0.0625, "name": "channels", "use_ln": True},
        "patch_size": 8, "image_size": 32, "pointconv_hidden": [32, 32], "pointconv_padding_mode": "circular",
        "pointconv_patch_size": 4, "pointconv_samples": 16, "pointconv_stride": 2, "pos_emb": "nerf",
        "use_depth": True, "use_pointconv": True, "width": 32, "xattn_layers": 1,
    },
    "renderer": {"name": "NeRSTFRenderer", "grid_size": 32, "n_coarse_samples": 8, "n_fine_samples": 8,
                 "nerstf": {"name": "MLPNeRSTFModel", "d_hidden": 8, "n_hidden_layers": 6, "n_meta_layers": 4,
                            "insert_direction_at": 4, "activation": "swish", "meta_parameters": True,
                            "posenc_version": "nerf"},
                 "void": {"name": "VoidNeRFModel", "background": [0, 0, 0]},
                 "volume": {"name": "BoundingBoxVolume", "bbox_min": [-1.0, -1.0, -1.0], "bbox_max": [1.0, 1.0, 1.0]}},
    "sharpit_inputs": {"point_cloud_views": 4, "point_cloud_render_size": 48, "random_sample_count": 1024},
}


def tiny_shap_e_encoder(seed: int = 0):
    """A randomly initialised tiny :class:`~sharpit.coarse.ShapEEncoder` (float32, CPU),
    deterministic for ``seed`` (every weight drawn: no zero-initialised layer)."""
    from ..coarse.encoder import ShapEEncoder, encoder_config_from_yaml

    model = ShapEEncoder(**encoder_config_from_yaml(TINY_ENCODER_YAML, "tiny"))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 1.0 if name.endswith("output_tokens") else 0.2
            p.copy_(torch.randn(p.shape, generator=gen) * scale + (1.0 if "ln_" in name and name.endswith("weight") else 0.0))
    return model.eval()


def tiny_transmitter_state_dict(seed: int = 0) -> dict:
    """The tiny encoder's weights under the released ``transmitter.pt`` names: ``encoder.*`` (with
    ``encoder.params_proj.*`` = the tiny Shap-E renderer's ``params_proj`` for ``seed``) and a
    few ``renderer.*`` tensors (the tiny renderer's non-meta MLP layers and background)."""
    from .shap_e import tiny_shap_e_components

    model = tiny_shap_e_encoder(seed)
    renderer = tiny_shap_e_components(seed)["shap_e_renderer"].state_dict()
    state = {f"encoder.{k[len('network.'):]}": v.clone() for k, v in model.state_dict().items()}
    state.update({f"encoder.{k}": v.clone() for k, v in renderer.items() if k.startswith("params_proj.")})
    for i in (4, 5, 6):
        for part in ("weight", "bias"):
            state[f"renderer.nerstf.mlp.{i}.{part}"] = renderer[f"mlp.mlp.{i}.{part}"].clone()
    state["renderer.void.background"] = renderer["void.background"].clone()
    return state


def save_tiny_shap_e_encoder(directory: Union[str, "os.PathLike[str]"], seed: int = 0, overwrite: bool = False) -> Path:
    """Write ``transmitter.pt`` (``torch.save`` of a plain state dict) and
    ``transmitter_config.yaml`` to ``directory`` (atomically) and return the folder."""
    import yaml

    from ..sources import TRANSMITTER_CONFIG_FILENAME, TRANSMITTER_FILENAME

    directory = Path(directory)
    with atomic_dir(directory, overwrite=overwrite) as tmp:
        torch.save(tiny_transmitter_state_dict(seed), tmp / TRANSMITTER_FILENAME)
        (tmp / TRANSMITTER_CONFIG_FILENAME).write_text(yaml.safe_dump(TINY_ENCODER_YAML, sort_keys=True))
    return directory
