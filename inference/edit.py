"""Re-dress an existing rough asset with a new prompt:
``python -m inference.edit --asset chair.glb --prompt "a golden chair" --out outputs/gold``.

The asset is a mesh (GLB/glTF/OBJ/PLY/...) or a saved Shap-E latent (``.safetensors`` from
sharpit or ``python -m inference.encode``, or a Cap3D-style ``.pt``). Meshes come back in the
asset's own frame and size.

With Shap-E's encoder (``--encoder DIR`` holding the released ``transmitter.pt`` +
``transmitter_config.yaml``; ``--tiny`` has a tiny one) a mesh goes through Shap-E's latent space
(``--via latent``, the paper's path and then the default): encoded, edited toward the prompt by
DDPM inversion when ``--source-prompt`` says what it shows now (``--latent-strength``), decoded,
and refined from coarse views like those the refiner was trained on. ``--via render`` renders the
mesh as it is.
``--prompts FILE`` makes one variant per line under ``--out``, split across processes when
launched with ``accelerate launch`` or ``torchrun``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from inference.common import (ENCODER_HELP, add_common_args, check_done_items, check_model_flags, check_output,
                              check_weights, collect_prompts, expected_parameters, generation_overrides, main_guard,
                              optimize_state_path, plan_items, prog, run_items, saved_components)
from sharpit.coarse.edit_defaults import EDIT_ROUTES, edit_route
from sharpit.errors import AssetNotFoundError, InputError, UnsupportedFormatError


#: Flags that act only with ``--source-prompt`` (refused without it rather than silently ignored).
LATENT_EDIT_FLAGS = ("--latent-strength", "--inversion-steps", "--latent-guidance-scale")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog("edit"), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--asset", required=True, help="mesh file or saved Shap-E latent")
    parser.add_argument("--up-axis", choices=["auto", "y", "z"], default="auto",
                        help="the mesh file's up axis: auto = glTF y-up (its spec), OBJ/PLY/STL/OFF z-up; "
                             "pass y for y-up exports (Blender's OBJ default, most DCC tools)")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="the new description")
    src.add_argument("--prompts", help="a text file with one prompt per line (one variant each)")
    latent = parser.add_argument_group("editing in Shap-E's latent space")
    latent.add_argument("--via", choices=list(EDIT_ROUTES), default=None,
                        help="how a mesh becomes the coarse views: latent = Shap-E encode (+ edit) + decode, the "
                             "paper's path (default with an encoder); render = the mesh as it is (default without)")
    latent.add_argument("--encoder", default=None, help=ENCODER_HELP)
    latent.add_argument("--source-prompt", default=None,
                        help="what the asset shows now: edits the Shap-E latent toward --prompt by DDPM inversion "
                             "(shape can change); without it only the refiner sees the new prompt")
    latent.add_argument("--latent-strength", type=float, default=None,
                        help="share of the inversion regenerated under the new prompt, in [0, 1] (0.64)")
    latent.add_argument("--inversion-steps", type=int, default=None, help="DDPM inversion steps (128)")
    latent.add_argument("--latent-guidance-scale", type=float, default=None,
                        help="Shap-E CFG while inverting and regenerating (12)")
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
    check_model_flags(args)   # before any import or file access
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
    overrides = generation_overrides(args, latent_strength=args.latent_strength, inversion_steps=args.inversion_steps,
                                     latent_guidance_scale=args.latent_guidance_scale)
    via = route(args, is_latent)
    source_prompt = None if args.source_prompt is None else args.source_prompt.strip()
    if source_prompt is not None and not source_prompt:
        raise InputError("--source-prompt is empty; say what the asset shows now, e.g. --source-prompt 'a chair'")
    if source_prompt is not None and via != "latent":
        raise InputError("--source-prompt edits in Shap-E's latent space, which --via render skips; use --via latent "
                         "(with --encoder) or drop --source-prompt")
    if source_prompt is None:   # the latent-edit flags would change nothing (and are recorded as None)
        for flag in LATENT_EDIT_FLAGS:
            if getattr(args, flag[2:].replace("-", "_")) is not None:
                raise InputError(f"{flag} acts only in an edit of the Shap-E latent, which needs --source-prompt "
                                 "(what the asset shows now); add --source-prompt or drop " + flag)
    overrides.get("coarse_render", DEFAULT_COARSE_RENDER).check_source(has_latent=via == "latent")  # before loading
    check_asset(asset, is_latent, args.up_axis)
    prompts, batch = collect_prompts(args, "a golden chair")
    items = plan_items(prompts, Path(args.out), args.seed, batch, source=str(asset))
    check_output(args.out, args.overwrite, batch)
    check_weights(args, need_coarse=via == "latent")
    expected = expected_parameters(args, overrides, latent_edit=source_prompt is not None, mode="edit",
                                   up_axis=None if is_latent else args.up_axis, via=via, source_prompt=source_prompt)
    check_done_items(items, expected, args.overwrite)

    def run_one(pipe, item):
        return pipe.edit(str(asset), item.prompt, seed=item.seed, up_axis=args.up_axis, via=via,
                         source_prompt=source_prompt, optimize_state=optimize_state_path(item), **overrides)

    return run_items(items, args, run_one, expected, need_coarse=via == "latent", batch=batch)


def route(args: argparse.Namespace, is_latent: bool) -> str:
    """``--via`` checked against the asset and the models, or its default (the rule of
    :func:`sharpit.coarse.edit_defaults.edit_route`), decided from the flags and a saved
    pipeline's ``model_index.json`` without loading a model."""
    shap_e, encoder = saved_components(args)
    if is_latent and args.encoder is not None:
        raise InputError(f"--encoder encodes meshes; {args.asset} is already a Shap-E latent (drop --encoder)")
    if not is_latent and args.via == "render" and args.encoder is not None:
        raise InputError("--encoder does nothing with --via render (the mesh is rendered as it is); drop one of them")
    via, problem = edit_route(args.via, is_latent, bool(encoder), bool(shap_e))
    messages = {
        "latent_asset": f"--via render applies to mesh assets; {args.asset} is a Shap-E latent (drop --via)",
        "no_encoder": "--via latent encodes the mesh with Shap-E's encoder: pass --encoder DIR (a folder with the "
                      "released transmitter.pt + transmitter_config.yaml), or use --via render",
        "no_shap_e": f"--via latent decodes the encoded mesh with Shap-E, which --pipeline {args.pipeline} was "
                     "saved without; use --via render or a pipeline with Shap-E",
    }
    if problem is not None:   # "unknown" cannot happen: argparse's choices
        raise InputError(messages[problem])
    return via


def main(argv: Optional[List[str]] = None) -> int:
    return main_guard(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
