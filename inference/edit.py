"""Re-dress an existing rough asset with a new prompt:
``python -m inference.edit --asset chair.glb --prompt "a golden chair" --out outputs/gold``.

The asset is a mesh (GLB/glTF/OBJ/PLY/...) or a saved Shap-E latent (``.safetensors`` from
sharpit, or a Cap3D-style ``.pt``). Meshes come back in the asset's own frame and size.
``--prompts FILE`` makes one variant per line under ``--out``, split across processes when
launched with ``accelerate launch`` or ``torchrun``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from inference.common import (add_common_args, coarse_render_options, collect_prompts, fill_defaults, main_guard,
                              plan_items, run_items)
from sharpit.errors import AssetNotFoundError, UnsupportedFormatError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m inference.edit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--asset", required=True, help="mesh file or saved Shap-E latent")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="the new description")
    src.add_argument("--prompts", help="a text file with one prompt per line (one variant each)")
    add_common_args(parser)
    return parser


def _main(argv: Optional[List[str]] = None) -> int:
    from sharpit.mesh_io import READ_FORMATS

    args = fill_defaults(build_parser().parse_args(argv))
    asset = Path(args.asset)
    if not asset.is_file():
        raise AssetNotFoundError(asset)
    is_latent = asset.suffix.lower() in (".safetensors", ".pt", ".pth")
    if not is_latent and asset.suffix.lower() not in READ_FORMATS:
        raise UnsupportedFormatError(asset, f"not a mesh or latent file; mesh formats: {', '.join(READ_FORMATS)}, "
                                            "latents: .safetensors, .pt")
    coarse_render = coarse_render_options(args)
    coarse_render.check_source(has_latent=is_latent)  # before minutes of model loading
    prompts, batch = collect_prompts(args, "a golden chair")
    items = plan_items(prompts, Path(args.out), args.seed, batch)

    def run_one(pipe, item):
        return pipe.edit(
            str(asset), item.prompt, seed=item.seed, negative_prompt=args.negative_prompt,
            refine_steps=args.refine_steps, guidance_scale=args.guidance_scale, strength=args.strength,
            coarse_grid_size=args.coarse_grid_size, coarse_render=coarse_render,
            mesh_resolution=args.mesh_resolution,
            textured=args.textured, texture_size=args.texture_size,
            face_budget=args.face_budget)

    return run_items(items, args, run_one, need_coarse=is_latent, batch=batch)


def main(argv: Optional[List[str]] = None) -> int:
    return main_guard(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
