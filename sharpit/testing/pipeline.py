"""Tiny random models for the whole chain, saved in the released models' on-disk layouts, so
:meth:`~sharpit.pipeline.SharpIt3DPipeline.from_tiny` (and ``--tiny`` on the command lines) load
them through the same ``from_pretrained`` code paths as the real weights."""

from __future__ import annotations

import fcntl
import math
import os
from pathlib import Path
from typing import Dict, Sequence, Union

import torch

from ..atomic import atomic_dir

__all__ = ["save_tiny_models", "smoke_reconstructor", "tiny_cache_dir", "TINY_LAYOUT_VERSION"]

#: Bump when a tiny builder changes, so cached tiny models are rebuilt.
TINY_LAYOUT_VERSION = 2


def tiny_cache_dir() -> Path:
    """Where tiny models are kept by default (``$SHARPIT_CACHE/tiny-models``, else
    ``~/.cache/sharpit/tiny-models``)."""
    base = os.environ.get("SHARPIT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "sharpit")
    return Path(base) / "tiny-models"


def smoke_reconstructor(seed: int = 0, radius: float = 0.6, steepness: float = 4.0,
                        color: Sequence[float] = (0.75, 0.55, 0.35)):
    """A tiny reconstructor whose density crosses InstantMesh's level (10) on a blob through
    ``radius`` on each axis of the triplane frame, whatever the input views, so smoke runs give a
    real mesh (a random tiny model's density rarely reaches 10).

    Every module still runs: the encoder and attention are random, but the transformer blocks'
    output projections are zeroed, so the planes come from the position embeddings alone, which
    hold a radial profile; the decoder sums the three planes' first channel.
    """
    from ..reconstruct.triplane import DENSITY_SHIFT, sample_planes
    from .reconstruct import tiny_reconstructor

    model = tiny_reconstructor(seed=seed)
    tr, net = model.transformer, model.synthesizer.decoder.net
    res, dim = tr.low_res, tr.pos_embed.shape[-1]
    c = tr.deconv.out_channels
    with torch.no_grad():
        for block in tr.layers:
            block.cross_attn.out_proj.weight.zero_()
            block.self_attn.out_proj.weight.zero_()
            block.mlp[3].weight.zero_()
            block.mlp[3].bias.zero_()
        centres = (torch.arange(res) + 0.5) / res * 2 - 1
        profile = 1 - (centres[:, None] ** 2 + centres[None, :] ** 2)  # 1 at the centre, < 0 at corners
        pos = torch.zeros(3, res, res, dim)
        # [a, 1, -(1 + a), 0, ...] has zero mean, so the final LayerNorm keeps channel 0 monotone in a.
        pos[..., 0], pos[..., 1], pos[..., 2] = profile, 1.0, -(1.0 + profile)
        tr.pos_embed.copy_(pos.reshape(1, -1, dim))
        tr.norm.weight.fill_(1.0)
        tr.norm.bias.zero_()
        tr.deconv.weight.zero_()
        tr.deconv.bias.zero_()
        tr.deconv.weight[0, 0] = 1.0
        for layer in net:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.zero_()
                layer.bias.zero_()
        offset = 40.0  # keeps the hidden unit positive through the ReLUs
        net[0].weight[0, [0, c, 2 * c]] = steepness
        net[0].bias[0] = offset
        for k in range(2, len(net) - 1, 2):
            net[k].weight[0, 0] = 1.0
        planes = tr(torch.zeros(1, 1, tr.layers[0].cross_attn.kdim))
        on_surface = sample_planes(planes, torch.tensor([[[radius, 0.0, 0.0]]]))[0, 0, [0, c, 2 * c]].sum()
        softplus_inv_10 = 10.0 + math.log(-math.expm1(-10.0))
        net[-1].weight[0, 0] = 1.0
        net[-1].bias[0] = softplus_inv_10 + DENSITY_SHIFT - (steepness * float(on_surface) + offset)
        net[-1].bias[1:] = torch.logit(torch.tensor(color, dtype=torch.float32))
    return model.eval()


def save_tiny_models(directory: Union[str, os.PathLike], seed: int = 0) -> Dict[str, str]:
    """Build (once) tiny Shap-E, Zero123++/Sharp-It and InstantMesh models under ``directory``.

    Safe to call from several processes at once (a file lock serialises the first build); later
    calls reuse the saved models. In a ``torch.distributed`` run, call it on the main process
    first (``PartialState().main_process_first()``): transformers' ``save_pretrained`` writes
    nothing on the other ranks.

    Returns:
        Keyword arguments for :meth:`SharpIt3DPipeline.from_released`: local paths for
        ``shap_e``, ``shap_e_encoder`` (the released transmitter layout), ``zero123plus``,
        ``sharpit_unet`` and ``instantmesh``.
    """
    from .refine import save_tiny_sharp_it_unet_repo, save_tiny_zero123plus_repo
    from .shap_e import save_tiny_shap_e
    from .shap_e_encoder import save_tiny_shap_e_encoder

    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"v{TINY_LAYOUT_VERSION}-seed{seed}"
    paths = {"shap_e": target / "shap-e", "shap_e_encoder": target / "shap-e-transmitter",
             "zero123plus": target / "zero123plus-v1.2", "sharpit_unet": target / "Sharp-It", "instantmesh": target / "InstantMesh-tiny"}
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.is_dir():
            with atomic_dir(target) as tmp:
                save_tiny_shap_e(tmp / paths["shap_e"].name, seed=seed)
                save_tiny_shap_e_encoder(tmp / paths["shap_e_encoder"].name, seed=seed)
                save_tiny_zero123plus_repo(tmp / paths["zero123plus"].name, seed=seed)
                save_tiny_sharp_it_unet_repo(tmp / paths["sharpit_unet"].name, seed=seed)
                smoke_reconstructor(seed=seed).save_pretrained(tmp / paths["instantmesh"].name)
    return {k: str(v) for k, v in paths.items()}
