"""Evaluate refinement methods against ground-truth objects (issue 12): the paper's table and more.

Usage (from the repository root, or ``sharpit-evaluate``)::

    python -m inference.evaluate --assets objaverse/test --latents cap3d_latents/ --captions captions.csv \
        --methods shap_e,zero123plus_sdedit,sharpit --out reports/NAME \
        --inception-weights weights-inception-2015-12-05-6726825d.pth
    accelerate launch --num_processes 4 -m inference.evaluate ...        # split across processes
    python -m inference.evaluate --tiny --out reports/smoke                # offline, tiny models, seconds

``--assets`` is a folder of meshes (``.glb``/``.gltf``/``.obj``, the file stem is the object id, as
``training/prepare_pairs.py``) or a text file listing mesh paths; ``--latents`` holds each object's
Shap-E latent (``<id>.pt`` Cap3D-style or ``<id>.safetensors``), the coarse input of every method;
``--captions`` is a CSV of ``id,caption`` rows. Methods: ``shap_e``, ``zero123plus_sdedit``,
``sharpit`` and ``folder:PATH`` (a saved SharpIt3DPipeline or SharpItRefinePipeline folder, e.g. your
training run); see :mod:`sharpit.evaluation.methods`.

Writes to ``--out``: ``config.json``, ``results.jsonl`` (one line per asset x method), ``failures.jsonl``,
``grids/``, ``features/``, ``table.md``, ``distributions.png``, ``time_vs_quality.png``, ``index.html``
(:mod:`sharpit.evaluation.records`, :mod:`sharpit.evaluation.report`). Re-running the same command
skips finished pairs; a folder made with other settings is refused.

Every flag is checked before torch loads a model. Exit codes: 0 done; 2 bad input (one line);
3 weights missing; 4 some assets failed (logged, the others done); 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from inference.common import add_model_args, check_weights, main_guard
from sharpit.errors import EXIT_ITEMS_FAILED, AssetNotFoundError, InputError

_ASSET_SUFFIXES = (".glb", ".gltf", ".obj")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sharpit-evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--assets", default=None, help="folder of ground-truth meshes, or a text file of mesh paths")
    parser.add_argument("--latents", default=None, help="folder of Shap-E latents, <id>.pt or <id>.safetensors")
    parser.add_argument("--captions", default=None, help="CSV of id,caption rows")
    parser.add_argument("--methods", default="shap_e,zero123plus_sdedit,sharpit",
                        help="comma-separated: shap_e, zero123plus_sdedit, sharpit, folder:PATH")
    parser.add_argument("--out", required=True, help="run folder (reports/NAME); re-running resumes")
    parser.add_argument("--seed", type=int, default=0, help="seed of every method and of the surface sampling")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N assets (sorted by id)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--tiny", action="store_true",
                        help="tiny random models and extractors, offline: a smoke run (on a few generated meshes "
                             "unless --assets/--latents/--captions are given)")
    parser.add_argument("--sdedit-strength", type=float, default=None,
                        help="SDEdit strength of zero123plus_sdedit, in (0, 1) (0.6)")
    ex = parser.add_argument_group("metrics")
    ex.add_argument("--inception-weights", default=None,
                    help="torch-fidelity's weights-inception-2015-12-05-6726825d.pth (default: torch's hub cache)")
    ex.add_argument("--clip", default=None, help="CLIP model, hub id or folder (openai/clip-vit-large-patch14)")
    ex.add_argument("--dino", default=None, help="DINO model, hub id or folder (facebook/dino-vitb16)")
    ex.add_argument("--points", type=int, default=None, help="points sampled per surface for Chamfer/F-score (10000)")
    add_model_args(parser)
    return parser


def _read_asset_list(path: Path) -> Dict[str, Path]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise InputError(f"--assets {path}: the file is not UTF-8 text; list one mesh path per line") from None
    found: Dict[str, Path] = {}
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        p = Path(line) if Path(line).is_absolute() else path.parent / line
        if p.suffix.lower() not in _ASSET_SUFFIXES:
            raise InputError(f"--assets {path}: {line!r} is not a .glb, .gltf or .obj mesh path")
        found.setdefault(p.stem, p)
    if not found:
        raise InputError(f"--assets {path}: the file lists no mesh (one path per line)")
    return dict(sorted(found.items()))


def _find_assets(value: str) -> Dict[str, Path]:
    from training.prepare_pairs import find_assets

    path = Path(value)
    if not str(value).strip():
        raise InputError("--assets is empty; pass a folder of meshes or a text file listing them")
    if not path.exists():
        raise AssetNotFoundError(path, "--assets: no such folder or file")
    if path.is_file():
        return _read_asset_list(path)
    found = find_assets(path)
    if not found:
        raise InputError(f"--assets {path}: no .glb, .gltf or .obj mesh in this folder")
    return found


def _check(args: argparse.Namespace) -> Dict[str, Any]:
    """Every flag, the inputs and the output folder, before any model loads; returns the run's
    assets, methods and config."""
    from sharpit.checks import check_device_available, check_output_dir, parse_device
    from sharpit.evaluation.methods import SDEDIT_STRENGTH, parse_methods
    from sharpit.evaluation.records import check_config
    from training.prepare_pairs import _find_latents, read_captions

    if args.seed < 0:
        raise InputError(f"--seed must be an integer >= 0, got {args.seed}")
    if args.limit is not None and args.limit < 1:
        raise InputError(f"--limit must be >= 1, got {args.limit}")
    if args.points is not None and args.points < 100:
        raise InputError(f"--points must be >= 100 (Chamfer/F-score need a dense sampling), got {args.points}")
    strength = SDEDIT_STRENGTH if args.sdedit_strength is None else args.sdedit_strength
    if not 0.0 < strength < 1.0:
        raise InputError(f"--sdedit-strength must lie in (0, 1) (SDEdit starts from the noised coarse grid), got {strength}")
    device = parse_device(args.device)
    specs = parse_methods(args.methods)
    if not str(args.out).strip():
        raise InputError("--out is empty; name the run folder, e.g. --out reports/my-run")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; pass a folder")
    if args.tiny:
        given = [f for f, v in (("--pipeline", args.pipeline), ("--refiner", args.refiner),
                                ("--inception-weights", args.inception_weights), ("--clip", args.clip),
                                ("--dino", args.dino)) if v]
        if given:
            raise InputError(f"--tiny uses random tiny models and cannot be combined with {given[0]}; drop one of them")
    else:
        missing = [f for f, v in (("--assets", args.assets), ("--latents", args.latents), ("--captions", args.captions))
                   if v is None]
        if missing:
            raise InputError(f"{missing[0]} is required (or --tiny for the generated test set)")
    assets = latents = captions = None
    if args.assets is not None:
        assets = _find_assets(args.assets)
    if args.latents is not None:
        latents = _find_latents(args.latents)
    if args.captions is not None:
        try:
            captions = read_captions(args.captions)
        except AssetNotFoundError as exc:
            raise AssetNotFoundError(exc.path, f"--captions: {exc.problem}") from None
        except InputError as exc:
            raise InputError(f"--captions: {exc}") from None
    if assets is not None and captions is not None:
        chosen = list(assets)[:args.limit] if args.limit else list(assets)
        lacking = [a for a in chosen if not captions.get(a)]
        if lacking:
            raise InputError(f"--captions {args.captions} has no caption for {len(lacking)} of {len(chosen)} asset(s) "
                             f"(e.g. {', '.join(lacking[:3])}); add id,caption rows for them")
    check_device_available(device)
    check_output_dir(out, "--out")
    check_weights(args, need_coarse=True)
    config = {
        "version": 1, "seed": args.seed, "tiny": bool(args.tiny),
        "models": {k: getattr(args, k) for k in ("pipeline", "shap_e", "zero123plus", "sharpit_unet", "refiner",
                                                 "instantmesh", "instantmesh_variant", "dtype")},
        "extractors": {"inception": args.inception_weights, "clip": args.clip, "dino": args.dino},
        "geometry": {"points": args.points}, "sdedit_strength": strength,
        "methods": {s.key: {"name": s.name, "path": s.path} for s in specs},
    }
    config = check_config(out, config)
    return {"assets": assets, "latents": latents, "captions": captions, "specs": specs, "out": out,
            "device": device, "config": config, "strength": strength}


def _eval_assets(assets, latents, captions, limit) -> list:
    from sharpit.evaluation.run import EvalAsset

    chosen = list(assets.items())[:limit] if limit else list(assets.items())
    return [EvalAsset(oid, path, latents.get(oid), captions.get(oid, "")) for oid, path in chosen]


#: Refiner settings of ``--tiny`` runs on top of the tiny pipeline's defaults: two steps (SDEdit at
#: 0.6 keeps one) without CFG keep the smoke run short (the tiny models are random anyway).
TINY_EVAL_OVERRIDES = {"refine_steps": 2, "guidance_scale": 1.0}


def _plan(args: argparse.Namespace, checked: Dict[str, Any]):
    """The run: how to build the models and extractors (loaded only if something is left to do)."""
    from sharpit.evaluation.run import RunPlan

    specs = checked["specs"]
    tiny_paths: Dict[str, str] = {}

    def prepare():
        if not args.tiny:
            return None
        # the generated set, unless --assets/--latents/--captions name another one
        from sharpit.testing.evaluation import save_tiny_eval_inputs
        from sharpit.testing.pipeline import save_tiny_models, tiny_cache_dir
        from training.prepare_pairs import _find_latents, find_assets, read_captions

        save_tiny_models(tiny_cache_dir())
        tiny_paths.update(save_tiny_eval_inputs(tiny_cache_dir()))
        return _eval_assets(checked["assets"] or find_assets(tiny_paths["assets"]),
                            checked["latents"] or _find_latents(tiny_paths["latents"]),
                            checked["captions"] or read_captions(tiny_paths["captions"]), args.limit)

    def load_runner(device):
        import torch

        from inference.common import load_pipeline
        from sharpit.evaluation.methods import MethodRunner
        from sharpit.pipeline import SharpIt3DPipeline
        from sharpit.refine import SharpItRefinePipeline
        from sharpit.testing.pipeline import save_tiny_models, tiny_cache_dir

        base = load_pipeline(args, device)
        base.set_progress_bar_config(disable=True)
        dtype = base.unet.dtype
        zero123plus = None
        if any(s.name == "zero123plus_sdedit" for s in specs):
            z_base = save_tiny_models(tiny_cache_dir())["zero123plus"] if args.tiny else args.zero123plus
            zero123plus = SharpItRefinePipeline.from_zero123plus(base=z_base, unet=None, torch_dtype=dtype).to(device)
            zero123plus.set_progress_bar_config(disable=True)
        folders = {}
        for s in specs:
            if s.path is None:
                continue
            index = __import__("json").loads((Path(s.path) / "model_index.json").read_text())
            if index.get("_class_name") == "SharpIt3DPipeline":
                pipe = SharpIt3DPipeline.from_pretrained(s.path, torch_dtype=dtype).to(device)
            else:   # a refiner folder in place of sharpit's refiner, with the same Shap-E and reconstructor
                models = save_tiny_models(tiny_cache_dir()) if args.tiny else {
                    "shap_e": args.shap_e, "instantmesh": args.instantmesh}
                pipe = SharpIt3DPipeline.from_released(shap_e=models["shap_e"], refiner=s.path,
                                                       instantmesh=models["instantmesh"],
                                                       instantmesh_variant=args.instantmesh_variant,
                                                       device=device, torch_dtype=dtype)
                pipe.set_default_options(base.default_options)
            pipe.set_progress_bar_config(disable=True)
            folders[s.key] = pipe
        return MethodRunner(base, zero123plus, folders, dict(TINY_EVAL_OVERRIDES) if args.tiny else {},
                            checked["strength"])

    def load_extractors(device):
        from sharpit.evaluation.fid import load_inception
        from sharpit.evaluation.geometry import FSCORE_THRESHOLD, NUM_POINTS
        from sharpit.evaluation.run import Extractors
        from sharpit.evaluation.similarity import DEFAULT_CLIP, DEFAULT_DINO, load_clip, load_dino

        inception = tiny_paths["inception"] if args.tiny else args.inception_weights
        return Extractors(load_inception(inception, device), load_clip(tiny_paths.get("clip", args.clip or DEFAULT_CLIP),
                                                                       device),
                          load_dino(tiny_paths.get("dino", args.dino or DEFAULT_DINO), device),
                          args.points or (2000 if args.tiny else NUM_POINTS), FSCORE_THRESHOLD)

    def report(out):
        from sharpit.evaluation.records import write_config
        from sharpit.evaluation.report import write_report

        write_config(out, checked["config"])
        write_report(out)

    assets = None if args.tiny else _eval_assets(checked["assets"], checked["latents"], checked["captions"], args.limit)
    return RunPlan(assets, specs, checked["out"], args.seed, checked["device"], load_runner, load_extractors,
                   prepare, report)


def _main(argv: Optional[List[str]] = None) -> int:
    from sharpit.evaluation.records import write_config
    from sharpit.evaluation.run import evaluate

    args = build_parser().parse_args(argv)
    checked = _check(args)
    checked["out"].mkdir(parents=True, exist_ok=True)
    write_config(checked["out"], checked["config"])
    failed = evaluate(_plan(args, checked))
    if failed:
        print(f"{failed} asset(s) or pair(s) failed; reasons in {Path(args.out) / 'failures.jsonl'}; re-run the same "
              "command to retry them", file=sys.stderr, flush=True)
        return EXIT_ITEMS_FAILED
    print(f"report: {Path(args.out) / 'table.md'}, {Path(args.out) / 'index.html'}", flush=True)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    return main_guard(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
