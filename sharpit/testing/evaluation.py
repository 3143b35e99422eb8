"""Tiny inputs for the evaluation harness (``sharpit-evaluate --tiny`` and its tests), offline:

* :func:`save_random_inception`: torch-fidelity's full InceptionV3 with random weights, saved as
  a state dict in the layout of its released ``weights-inception-2015-12-05-6726825d.pth``
  (~95 MB; the architecture is fixed, so it cannot be made smaller);
* :func:`save_tiny_clip` and :func:`save_tiny_dino`: tiny random CLIP (``CLIPModel``) and DINO
  (``ViTModel``) models with their image processors, in the ``openai/clip-vit-*`` and
  ``facebook/dino-vitb16`` folder layouts, loaded back through ``from_pretrained(folder)``;
* :func:`random_lpips_trunk` and :func:`save_random_lpips`: LPIPS's full AlexNet (or VGG16) trunk
  with seed-regenerable random weights (the rule of ``scripts/parity/lpips_metric.py``, whose
  fixture stores checks of it) in torchvision's released layout, and random non-negative linear
  layers in the ``lpips`` package's ``weights/v0.1/<net>.pth`` layout;
* :func:`save_tiny_eval_set`: a handful of generated ground-truth meshes, one tiny Shap-E latent
  per mesh and a captions CSV (:func:`sharpit.testing.training.save_tiny_training_inputs`).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Dict, Union

import torch

from ..atomic import atomic_dir, atomic_path

__all__ = ["save_random_inception", "save_tiny_clip", "save_tiny_dino", "random_lpips_trunk", "save_random_lpips",
           "save_tiny_eval_set", "save_tiny_eval_inputs"]

PathLike = Union[str, os.PathLike]


def save_random_inception(path: PathLike, seed: int = 0) -> Path:
    """torch-fidelity's InceptionV3 with random weights (convolutions and the classifier He-normal,
    so activations keep their scale through the 94 layers; BatchNorm identity with running
    statistics 0/1), its ``state_dict`` saved with ``torch.save`` to ``path`` (the released file's
    keys and shapes). Returns ``path``."""
    from ..evaluation.fid import inception_class

    cls = inception_class()

    class _RandomInception(cls):
        def load_state_dict(self, state_dict, strict=True, assign=False):   # keep the random init
            return None

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path.with_suffix(".empty.pth")) as empty:
        torch.save({}, empty)
        torch.manual_seed(seed)
        model = _RandomInception("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    path.with_suffix(".empty.pth").unlink()
    with atomic_path(path) as tmp:
        torch.save(model.state_dict(), tmp)
    return path


def save_tiny_clip(directory: PathLike, seed: int = 0) -> Path:
    """A tiny random ``CLIPModel`` (text and vision towers, projection 16) and its
    ``CLIPImageProcessor`` (shortest edge 32, centre crop 32, CLIP's mean/std) in ``directory``.
    The tokenizer files of the released layout are not written (image-image similarity never reads them)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         vocab_size=64, max_position_embeddings=16),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8, projection_dim=16),
        projection_dim=16)
    directory = Path(directory)
    CLIPModel(config).save_pretrained(directory)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(directory)
    return directory


def save_tiny_dino(directory: PathLike, seed: int = 0) -> Path:
    """A tiny random DINO ``ViTModel`` (no pooler, as ``facebook/dino-vitb16``) and its
    ``ViTImageProcessor`` (resize to 32, ImageNet mean/std) in ``directory``."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(seed)
    config = ViTConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                       image_size=32, patch_size=8)
    directory = Path(directory)
    ViTModel(config, add_pooling_layer=False).save_pretrained(directory)
    ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.485, 0.456, 0.406],
                      image_std=[0.229, 0.224, 0.225]).save_pretrained(directory)
    return directory


def random_lpips_trunk(net: str = "alex", seed: int = 0) -> Dict[str, torch.Tensor]:
    """LPIPS's trunk with random weights, under torchvision's ``features`` names: a CPU generator
    seeded with ``seed``, then for each key of the trunk's state dict in order, weights
    ``randn * sqrt(2 / fan_in)`` (He-normal, so activations keep their scale through the ReLUs)
    and biases ``randn * 0.1``. ``scripts/parity/lpips_metric.py`` draws the official run's
    trunk by the same rule; its fixture stores per-tensor sums that the parity test compares."""
    import math

    from ..evaluation.lpips import LPIPSTrunk

    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in LPIPSTrunk(net).state_dict().items():
        if key.endswith("weight"):
            out[key] = torch.randn(value.shape, generator=gen) * math.sqrt(2.0 / math.prod(value.shape[1:]))
        else:
            out[key] = torch.randn(value.shape, generator=gen) * 0.1
    return out


def save_random_lpips(directory: PathLike, net: str = "alex", seed: int = 0) -> Path:
    """A folder for ``load_lpips(net, directory)`` (``--lpips-weights``): the trunk of
    :func:`random_lpips_trunk` as ``features.*`` in torchvision's released file name (AlexNet 10 MB,
    VGG16 59 MB; the classifier, which LPIPS never reads, is left out) and random linear layers
    (uniform in [0, 1): the released ones are non-negative) as ``<net>.pth``. Returns the folder."""
    from ..evaluation.lpips import NETS

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    trunk = {f"features.{k}": v for k, v in random_lpips_trunk(net, seed).items()}
    gen = torch.Generator().manual_seed(seed + 1)
    linear = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=gen) for k, c in enumerate(NETS[net].channels)}
    for name, state in ((NETS[net].file, trunk), (f"{net}.pth", linear)):
        with atomic_path(directory / name) as tmp:
            torch.save(state, tmp)
    return directory


def save_tiny_eval_set(root: PathLike, seed: int = 0) -> Dict[str, Path]:
    """Three generated ground-truth meshes (``assets/``: cube, box, ball), their tiny Shap-E
    latents (``latents/``) and ``captions.csv`` under ``root``; returns those three paths."""
    from .training import save_tiny_training_inputs

    paths = save_tiny_training_inputs(root, seed=seed)
    return {k: paths[k] for k in ("assets", "latents", "captions")}


def save_tiny_eval_inputs(directory: PathLike, seed: int = 0) -> Dict[str, str]:
    """Build (once, under a file lock; safe from several processes) everything ``--tiny`` reads:
    ``inception`` (file), ``clip``, ``dino``, ``lpips`` (folders; LPIPS with net alex),
    ``assets``, ``latents``, ``captions``. Returns their paths as strings."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"eval-v2-seed{seed}"
    with open(root / ".eval-lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.is_dir():
            with atomic_dir(target) as tmp:
                save_random_inception(tmp / "weights-inception-2015-12-05-6726825d.pth", seed=seed)
                save_tiny_clip(tmp / "clip-vit-tiny", seed=seed)
                save_tiny_dino(tmp / "dino-vit-tiny", seed=seed)
                save_random_lpips(tmp / "lpips-alex", "alex", seed=seed)
                save_tiny_eval_set(tmp / "set", seed=seed)
    return {"inception": str(target / "weights-inception-2015-12-05-6726825d.pth"),
            "clip": str(target / "clip-vit-tiny"), "dino": str(target / "dino-vit-tiny"),
            "lpips": str(target / "lpips-alex"),
            "assets": str(target / "set" / "assets"), "latents": str(target / "set" / "latents"),
            "captions": str(target / "set" / "captions.csv")}
