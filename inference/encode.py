"""Encode a mesh into a Shap-E latent with Shap-E's encoder:
``python -m inference.encode --asset chair.glb --encoder DIR --out chair_latent.safetensors``.

``--encoder`` is a folder with the released ``transmitter.pt`` + ``transmitter_config.yaml``
(from ``openai/shap-e``'s download URLs, see :mod:`sharpit.sources`), a folder saved by
``ShapEEncoder.save_pretrained``, or a hub id holding either. The output is a latent file
(:func:`sharpit.coarse.save_latents`, written atomically) that ``python -m inference.edit --asset``,
``SharpIt3DPipeline.edit`` and training's latent loading read. ``--tiny`` uses a random tiny
encoder (offline; its latents fit the tiny Shap-E of ``--tiny`` runs).

Exit codes: 2 bad input, 3 encoder weights missing, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

from inference.common import main_guard, prog
from sharpit.errors import (AssetNotFoundError, InputError, OutputNotWritableError, UnsupportedFormatError,
                            WeightsNotFoundError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog("encode"), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--asset", required=True, help="mesh file (GLB/glTF/OBJ/PLY/STL/OFF)")
    parser.add_argument("--out", required=True, help="latent file to write (.safetensors)")
    parser.add_argument("--encoder", default=None,
                        help="Shap-E encoder: folder with transmitter.pt + transmitter_config.yaml, a saved "
                             "ShapEEncoder folder, or a hub id")
    parser.add_argument("--shap-e", default=None,
                        help="the Shap-E (diffusers layout) the latent is for: a local folder's decoder width is "
                             "checked against the encoder's, and the id is recorded in the file")
    parser.add_argument("--up-axis", choices=["auto", "y", "z"], default="auto",
                        help="the mesh file's up axis: auto = glTF y-up, OBJ/PLY/STL/OFF z-up")
    parser.add_argument("--seed", type=int, default=0, help="seed of the renders' cameras and point sampling")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--tiny", action="store_true", help="random tiny encoder, offline (a smoke test)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    return parser


def _decoder_width(shap_e: str) -> Optional[int]:
    """Latent width of a local diffusers Shap-E folder's renderer, or None for a hub id."""
    folder = Path(shap_e) / "shap_e_renderer"
    if not (folder / "config.json").is_file():
        return None
    cfg = json.loads((folder / "config.json").read_text())
    return int(sum(shape[0] for shape in cfg["param_shapes"]) * cfg["d_latent"])


def _main(argv: Optional[List[str]] = None) -> int:
    from sharpit.checks import (at_least, check_device_available, check_encoder_source, check_model_source,
                                check_output_dir, flag_errors, parse_device)
    from sharpit.formats import MESH_READ_FORMATS
    from sharpit.sources import TRANSMITTER_CONFIG_FILENAME, TRANSMITTER_FILENAME, TRANSMITTER_URL

    args = build_parser().parse_args(argv)
    asset, out = Path(args.asset), Path(args.out)
    if asset.is_dir():
        raise InputError(f"--asset {asset} is a folder; pass one mesh file (run once per mesh, or use "
                         "training/prepare_pairs.py --coarse encode for a folder of assets)")
    if not asset.is_file():
        raise AssetNotFoundError(asset, "--asset: file not found; check the path")
    if asset.suffix.lower() not in MESH_READ_FORMATS:
        raise UnsupportedFormatError(asset, f"--asset: not a mesh file; formats: {', '.join(MESH_READ_FORMATS)}")
    if asset.suffix.lower() in (".glb", ".gltf") and args.up_axis == "z":
        raise InputError(f"{asset}: --up-axis z does not apply to glTF (y-up by its specification); leave auto")
    if out.suffix != ".safetensors":
        raise UnsupportedFormatError(out, "--out: latents are written as .safetensors; use that extension")
    if out.exists() and not args.overwrite:
        raise InputError(f"--out {out} exists; pass --overwrite to replace it")
    if out.parent.exists() and not out.parent.is_dir():
        raise OutputNotWritableError(out, f"--out cannot be written: {out.parent} is a file, not a folder")
    if not out.parent.exists():
        raise AssetNotFoundError(out.parent, "--out: the folder does not exist; create it first")
    check_output_dir(out.parent, "--out")
    at_least(args.seed, 0, "--seed")
    device = parse_device(args.device)
    layout = f"{TRANSMITTER_FILENAME} + {TRANSMITTER_CONFIG_FILENAME}, or config.json + safetensors"
    if args.tiny and args.encoder is not None:
        raise InputError("--tiny uses a random tiny encoder and cannot be combined with --encoder; drop one of them")
    if args.shap_e is not None:
        check_model_source(args.shap_e, "--shap-e", "a Shap-E folder (diffusers layout)", ["model_index.json"],
                           "model_index.json + a folder per component, e.g. openai/shap-e")
    if not args.tiny:
        if args.encoder is None:
            raise WeightsNotFoundError("Shap-E encoder", f"--encoder is required (a folder with {layout}); the "
                                       f"released files are {TRANSMITTER_URL} and its _config.yaml")
        check_encoder_source(args.encoder)
    check_device_available(device)

    import torch

    from sharpit.coarse import ShapEEncoder, save_latents
    from sharpit.mesh_io import load_mesh

    with flag_errors("--asset"):
        mesh = load_mesh(asset, up_axis=args.up_axis)
    if args.tiny:
        from sharpit.testing.shap_e_encoder import tiny_shap_e_encoder

        encoder = tiny_shap_e_encoder()
    else:
        encoder = ShapEEncoder.from_pretrained(args.encoder)
    if args.shap_e is not None:
        width = _decoder_width(args.shap_e)
        if width is not None and width != encoder.latent_width:
            raise InputError(f"--shap-e {args.shap_e} decodes latents of width {width}, the encoder makes "
                             f"{encoder.latent_width}; pass the Shap-E the encoder belongs to")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    encoder = encoder.to(device)
    latents = encoder.encode(mesh, generator=torch.Generator().manual_seed(args.seed))
    metadata = {"source": str(asset), "seed": args.seed, "encoder": "tiny" if args.tiny else str(args.encoder),
                "up_axis": args.up_axis, "mode": "encode"}
    if args.shap_e is not None:
        metadata["model_id"] = args.shap_e
    save_latents(out, latents, metadata, overwrite=args.overwrite)
    print(f"wrote {out} ({tuple(latents.shape)})")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    return main_guard(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
