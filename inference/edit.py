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

from inference.common import (add_common_args, check_done_items, check_output, check_weights, collect_prompts,
                              expected_parameters, generation_overrides, main_guard, plan_items, run_items)
from sharpit.errors import AssetNotFoundError, InputError, UnsupportedFormatError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m inference.edit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--asset", required=True, help="mesh file or saved Shap-E latent")
    parser.add_argument("--up-axis", choices=["auto", "y", "z"], default="auto",
                        help="the mesh file's up axis: auto = glTF y-up (its spec), OBJ/PLY/STL/OFF z-up; "
                             "pass y for y-up exports (Blender's OBJ default, most DCC tools)")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="the new description")
    src.add_argument("--prompts", help="a text file with one prompt per line (one variant each)")
    add_common_args(parser)
    return parser


def check_asset(asset: Path, is_latent: bool, up_axis: str) -> None:
    """Read the asset once now, so a damaged file is reported before any model loads."""
    from sharpit.errors import SharpItError

    try:
        if is_latent and asset.suffix.lower() == ".safetensors":
            from safetensors import safe_open

            try:
                with safe_open(str(asset), "pt") as f:
                    f.keys()
            except Exception as exc:   # noqa: BLE001 - any parse failure means the file is unusable
                raise InputError(f"{asset}: not a readable safetensors file ({exc})") from None
        elif is_latent:
            from sharpit.safe_load import load_checkpoint

            load_checkpoint(asset)
        else:
            from sharpit.mesh_io import load_mesh

            load_mesh(asset, up_axis=up_axis)
    except SharpItError as exc:
        raise InputError(f"--asset {exc}") from None


def _main(argv: Optional[List[str]] = None) -> int:
    from sharpit.coarse import DEFAULT_COARSE_RENDER
    from sharpit.formats import LATENT_SUFFIXES, MESH_READ_FORMATS as READ_FORMATS

    args = build_parser().parse_args(argv)
    if not args.asset.strip():
        raise InputError("--asset is empty; pass a mesh file (GLB/glTF/OBJ/PLY/STL/OFF) or a saved latent")
    asset = Path(args.asset)
    if asset.is_dir():
        raise InputError(f"--asset {asset} is a folder; pass one mesh file or latent file (for many objects, "
                         "run one command per file)")
    if not asset.is_file():
        raise AssetNotFoundError(asset, "--asset: file not found; check the path")
    is_latent = asset.suffix.lower() in LATENT_SUFFIXES
    if not is_latent and asset.suffix.lower() not in READ_FORMATS:
        raise UnsupportedFormatError(asset, f"--asset: not a mesh or latent file; mesh formats: "
                                            f"{', '.join(READ_FORMATS)}, latents: {', '.join(LATENT_SUFFIXES)}")
    if asset.suffix.lower() in (".glb", ".gltf") and args.up_axis == "z":
        raise InputError(f"{asset}: --up-axis z does not apply to glTF, which is y-up by its specification; "
                         "leave --up-axis auto")
    overrides = generation_overrides(args)
    overrides.get("coarse_render", DEFAULT_COARSE_RENDER).check_source(has_latent=is_latent)  # before model loading
    check_asset(asset, is_latent, args.up_axis)
    prompts, batch = collect_prompts(args, "a golden chair")
    items = plan_items(prompts, Path(args.out), args.seed, batch, source=str(asset))
    check_output(args.out, args.overwrite, batch)
    check_weights(args, need_coarse=is_latent)
    expected = expected_parameters(args, overrides, mode="edit", up_axis=None if is_latent else args.up_axis)
    check_done_items(items, expected, args.overwrite)

    def run_one(pipe, item):
        return pipe.edit(str(asset), item.prompt, seed=item.seed, up_axis=args.up_axis, **overrides)

    return run_items(items, args, run_one, expected, need_coarse=is_latent, batch=batch)


def main(argv: Optional[List[str]] = None) -> int:
    return main_guard(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
