"""Everything a training run needs, tiny and random, in the layouts the training commands read:
a few assets, their Shap-E latents and captions, a tiny Shap-E and a tiny Zero123++ v1.2. The
training README's CPU walk-through starts with

    python -m sharpit.testing.training tiny-train

and then runs ``sharpit-prepare-pairs`` and ``sharpit-train`` on the result, exactly as with real data.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import torch

__all__ = ["save_tiny_training_inputs"]


def save_tiny_training_inputs(root: Union[str, os.PathLike], seed: int = 0) -> Dict[str, Path]:
    """Write tiny training inputs under ``root``.

    Returns:
        The paths, by the flag that takes them: ``assets`` (three small meshes as GLB and OBJ),
        ``latents`` (a Cap3D-style ``.pt`` and sharpit ``.safetensors`` latents of the tiny
        Shap-E's width, one per asset), ``captions`` (``captions.csv``), ``shap_e`` and
        ``pretrained_model`` (tiny Shap-E and Zero123++ v1.2 in the released layouts).
    """
    from ..coarse import save_latents
    from ..mesh_io import save_mesh
    from .meshes import colored_cube, textured_cube, uv_sphere
    from .refine import save_tiny_zero123plus_repo
    from .shap_e import TINY_SHAP_E_LATENT_WIDTH, save_tiny_shap_e

    root = Path(root)
    paths = {"assets": root / "assets", "latents": root / "latents", "captions": root / "captions.csv",
             "shap_e": root / "shap-e", "pretrained_model": root / "zero123plus-v1.2"}
    paths["latents"].mkdir(parents=True, exist_ok=True)
    for object_id, mesh, ext in (("cube", colored_cube(), ".glb"), ("box", textured_cube(), ".obj"),
                                 ("ball", uv_sphere(8, 12), ".glb")):
        save_mesh(mesh, paths["assets"] / f"{object_id}{ext}")
    gen = torch.Generator().manual_seed(seed)
    torch.save(torch.randn(TINY_SHAP_E_LATENT_WIDTH, generator=gen), paths["latents"] / "cube.pt")
    for object_id in ("box", "ball"):
        save_latents(paths["latents"] / f"{object_id}.safetensors",
                     torch.randn(1, TINY_SHAP_E_LATENT_WIDTH, generator=gen))
    paths["captions"].write_text("uid,caption\ncube,a red cube\nbox,a checkered box\nball,a blue ball\n")
    save_tiny_shap_e(paths["shap_e"], seed=seed)
    save_tiny_zero123plus_repo(paths["pretrained_model"], seed=seed)
    return paths


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sharpit.testing.training", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="folder to write the tiny inputs into")
    args = parser.parse_args(argv)
    for flag, path in save_tiny_training_inputs(args.root).items():
        print(f"--{flag} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
