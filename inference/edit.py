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

from inference.common import (add_common_args, collect_prompts, generation_overrides, main_guard, plan_items,
                              run_items)
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
    from sharpit.coarse import DEFAULT_COARSE_RENDER
    from sharpit.coarse.latents import LATENT_SUFFIXES
    from sharpit.mesh_io import READ_FORMATS

    args = build_parser().parse_args(argv)
    asset = Path(args.asset)
    if not asset.is_file():
        raise AssetNotFoundError(asset)
    is_latent = asset.suffix.lower() in LATENT_SUFFIXES
    if not is_latent and asset.suffix.lower() not in READ_FORMATS:
        raise UnsupportedFormatError(asset, f"not a mesh or latent file; mesh formats: {', '.join(READ_FORMATS)}, "
                                            f"latents: {', '.join(LATENT_SUFFIXES)}")
    overrides = generation_overrides(args)
    overrides.get("coarse_render", DEFAULT_COARSE_RENDER).check_source(has_latent=is_latent)  # before model loading
    prompts, batch = collect_prompts(args, "a golden chair")
    items = plan_items(prompts, Path(args.out), args.seed, batch)

    def run_one(pipe, item):
        return pipe.edit(str(asset), item.prompt, seed=item.seed, **overrides)

    return run_items(items, args, run_one, need_coarse=is_latent, batch=batch)


def main(argv: Optional[List[str]] = None) -> int:
    return main_guard(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
