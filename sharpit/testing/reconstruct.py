"""Tiny reconstructors and fake InstantMesh checkpoints in the released container layout, for
tests and for users who want to exercise the loading code without the 1.5 GB files.

A fake checkpoint is what ``torch.save`` of a PyTorch Lightning checkpoint looks like: a dict with
``epoch``, ``global_step``, ``pytorch-lightning_version`` and ``state_dict``, the model under the
prefix ``lrm_generator.`` next to an ``lpips.`` entry that loaders must ignore.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Mapping, Optional, Union

import torch

from ..reconstruct.config import CHECKPOINT_PREFIX
from ..reconstruct.model import InstantMeshReconstructor

__all__ = [
    "TINY_RECONSTRUCTOR_CONFIG",
    "tiny_reconstructor",
    "save_instantmesh_checkpoint",
    "manifest_state_dict",
    "save_fake_checkpoint_from_manifest",
]

#: A reconstructor small enough for CPU tests: 320 px views at patch 32 (10x10 patches from a 7x7
#: stored position grid, so interpolation runs), 2+2 layers, 8-channel 16x16 planes.
TINY_RECONSTRUCTOR_CONFIG = dict(
    encoder_feat_dim=32, encoder_layers=2, encoder_heads=2, encoder_mlp_dim=64, encoder_patch_size=32,
    encoder_pos_grid=7, camera_dim=16, transformer_dim=32, transformer_layers=2, transformer_heads=2,
    triplane_low_res=8, triplane_high_res=16, triplane_dim=8, decoder_hidden_dim=16, decoder_layers=4,
    rendering_samples_per_ray=16,
)


def tiny_reconstructor(seed: int = 0, **overrides) -> InstantMeshReconstructor:
    """A randomly initialised tiny :class:`InstantMeshReconstructor` (eval mode); the adaLN layers
    get small random weights too, so the cameras matter."""
    gen = torch.Generator().manual_seed(seed)
    model = InstantMeshReconstructor(**{**TINY_RECONSTRUCTOR_CONFIG, **overrides})
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "adaLN_modulation" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    return model.eval()


def save_instantmesh_checkpoint(state_dict: Mapping[str, torch.Tensor], path: Union[str, os.PathLike],
                                with_lpips: bool = True, extras: Optional[Mapping] = None) -> Path:
    """Save ``state_dict`` (reconstructor names, no prefix) as a released-style Lightning checkpoint.

    Adds an ``lpips.`` tensor and a ``lrm_generator.source_camera`` tensor that loaders ignore;
    ``extras`` are more top-level entries (``hyper_parameters``, ``optimizer_states``, ``callbacks``...).
    """
    sd: Dict[str, torch.Tensor] = {CHECKPOINT_PREFIX + k: v for k, v in state_dict.items()}
    if with_lpips:
        sd["lpips.net.slice1.0.weight"] = torch.zeros(64, 3, 3, 3)
        sd[CHECKPOINT_PREFIX + "source_camera"] = torch.zeros(1, 16)
    container = {"epoch": 99, "global_step": 100000, "pytorch-lightning_version": "2.1.2", "state_dict": sd,
                 **dict(extras or {})}
    path = Path(path)
    torch.save(container, path)
    return path


def manifest_state_dict(manifest: Union[str, os.PathLike, Mapping], seed: int = 0,
                        compact: bool = True) -> Dict[str, torch.Tensor]:
    """Random tensors with every name and shape of a checkpoint manifest's ``params``.

    Args:
        manifest: a manifest JSON path or its parsed dict (``params``: name -> shape).
        compact: store each tensor as one random row of its last dimension broadcast over the
            others (stride 0), so a full-size fake checkpoint takes kilobytes on disk; False makes
            dense random tensors.
    """
    if not isinstance(manifest, Mapping):
        manifest = json.loads(Path(manifest).read_text())
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in manifest["params"].items():
        shape = tuple(int(s) for s in shape)
        if compact and len(shape) > 1:
            row = torch.randn(shape[-1], generator=gen)
            out[name] = row.as_strided(shape, (0,) * (len(shape) - 1) + (1,))
        else:
            out[name] = torch.randn(shape, generator=gen)
    return out


def save_fake_checkpoint_from_manifest(manifest: Union[str, os.PathLike, Mapping], path: Union[str, os.PathLike],
                                       seed: int = 0, compact: bool = True) -> Path:
    """A fake released checkpoint for the manifest's variant (see :func:`manifest_state_dict`)."""
    return save_instantmesh_checkpoint(manifest_state_dict(manifest, seed, compact), path)

