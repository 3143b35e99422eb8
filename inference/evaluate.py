"""Evaluate refinement methods against ground-truth objects: the paper's table and more.

Usage (from the repository root, or ``sharpit-evaluate``)::

    python -m inference.evaluate --assets objaverse/test --latents cap3d_latents/ --captions captions.csv \
        --methods shap_e,zero123plus_sdedit,sharpit --out reports/NAME \
        --inception-weights weights-inception-2015-12-05-6726825d.pth
    accelerate launch --num_processes 4 -m inference.evaluate ...        # split across processes
    python -m inference.evaluate --tiny --out reports/smoke                # offline, tiny models, seconds
    python -m inference.evaluate ... --metrics clip,dino,psnr,ssim,lpips,geometry   # no FID (no Inception weights)

``--assets`` is a folder of meshes (``.glb``/``.gltf``/``.obj``, the file stem is the object id, as
``training/prepare_pairs.py``) or a text file listing mesh paths; ``--latents`` holds each object's
Shap-E latent (``<id>.pt`` Cap3D-style or ``<id>.safetensors``), the coarse input of every method;
``--captions`` is a CSV of ``id,caption`` rows. Methods: ``shap_e``, ``zero123plus_sdedit``,
``sharpit`` and ``folder:PATH`` (a saved SharpIt3DPipeline or SharpItRefinePipeline folder, e.g. your
training run); see :mod:`sharpit.evaluation.methods`.

``--metrics`` picks the metrics (default all: fid, clip, dino, psnr, ssim, lpips, geometry;
:data:`sharpit.evaluation.run.METRICS`); only the extractors those need are checked and loaded.
Extractor weights are never downloaded: ``--inception-weights FILE`` (FID), ``--clip`` / ``--dino``
(hub ids or folders), ``--lpips-weights DIR`` (the LPIPS trunk and linear layers,
:mod:`sharpit.evaluation.lpips`), or their default places (torch's hub cache, the Hugging Face
cache, the ``lpips`` pip package).

Writes to ``--out``: ``config.json``, ``results.jsonl`` (one line per asset x method), ``failures.jsonl``,
``grids/``, ``features/``, ``table.md``, ``distributions.png``, ``time_vs_quality.png``, ``index.html``
(:mod:`sharpit.evaluation.records`, :mod:`sharpit.evaluation.report`). Re-running the same command
skips finished pairs; a folder made with other settings is refused.

Every flag is checked before torch loads a model. Exit codes: 0 done; 2 bad input (one line);
3 weights missing (a model or an extractor: the message names the flag that takes a local path);
4 some assets failed (logged, the others done); 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from inference.common import add_model_args, check_weights, main_guard, prog
from sharpit.errors import EXIT_ITEMS_FAILED, AssetNotFoundError, InputError, WeightsNotFoundError

_ASSET_SUFFIXES = (".glb", ".gltf", ".obj")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog("evaluate"), description=__doc__.split("\n\n")[0])
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
    ex.add_argument("--metrics", default=None,
                    help="comma-separated metrics to compute: fid, clip, dino, psnr, ssim, lpips, geometry (default: all)")
    ex.add_argument("--inception-weights", default=None,
                    help="torch-fidelity's weights-inception-2015-12-05-6726825d.pth (default: torch's hub cache)")
    ex.add_argument("--clip", default=None, help="CLIP model, hub id or folder (openai/clip-vit-large-patch14)")
    ex.add_argument("--dino", default=None, help="DINO model, hub id or folder (facebook/dino-vitb16)")
    ex.add_argument("--lpips-net", default="alex", choices=["alex", "vgg"], help="LPIPS trunk (alex, lpips' default)")
    ex.add_argument("--lpips-weights", default=None,
                    help="folder with torchvision's trunk file (alexnet-owt-7be5be79.pth / vgg16-397923af.pth) and/or "
                         "lpips' v0.1 linear layers (alex.pth / vgg.pth); default: torch's hub cache and the lpips "
                         "pip package")
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
        if p.stem in found and found[p.stem] != p:   # results are keyed by id: one would be lost
            raise InputError(f"--assets {path}: {found[p.stem]} and {p} have the same object id {p.stem!r} (the "
                             "file name without its suffix); rename one or list only one")
        found[p.stem] = p
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
    from sharpit.checks import check_device_available, check_output_dir, flag_errors, parse_device
    from sharpit.evaluation.methods import SDEDIT_STRENGTH, parse_methods
    from sharpit.evaluation.records import check_config
    from sharpit.coarse import find_latents
    from sharpit.evaluation.fid import require_torch_fidelity
    from sharpit.evaluation.run import parse_metrics
    from training.prepare_pairs import read_captions

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
    metrics = parse_metrics(args.metrics)
    if not str(args.out).strip():
        raise InputError("--out is empty; name the run folder, e.g. --out reports/my-run")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; pass a folder")
    if args.tiny:
        given = [f for f, v in (("--pipeline", args.pipeline), ("--refiner", args.refiner),
                                ("--inception-weights", args.inception_weights), ("--clip", args.clip),
                                ("--dino", args.dino), ("--lpips-weights", args.lpips_weights),
                                ("--lpips-net", args.lpips_net != "alex")) if v]
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
        with flag_errors("--latents"):
            latents = find_latents(args.latents)
        if not latents:
            raise InputError(f"--latents {args.latents}: no .safetensors, .pt or .pth latent in this folder")
    if args.captions is not None:
        with flag_errors("--captions"):
            captions = read_captions(args.captions)
    if assets is not None and captions is not None:
        chosen = list(assets)[:args.limit] if args.limit else list(assets)
        lacking = [a for a in chosen if not captions.get(a)]
        if lacking:
            raise InputError(f"--captions {args.captions} has no caption for {len(lacking)} of {len(chosen)} asset(s) "
                             f"(e.g. {', '.join(lacking[:3])}); add id,caption rows for them")
    check_device_available(device)
    check_output_dir(out, "--out")
    check_weights(args, need_coarse=True)
    if "fid" in metrics:   # also with --tiny (its Inception is torch-fidelity's class)
        require_torch_fidelity()
    if not args.tiny:
        _check_extractors(args, metrics)
    config = {
        "version": 1, "seed": args.seed, "tiny": bool(args.tiny),
        "models": {k: getattr(args, k) for k in ("pipeline", "shap_e", "zero123plus", "sharpit_unet", "refiner",
                                                 "instantmesh", "instantmesh_variant", "dtype")},
        "metrics": list(metrics),
        "extractors": {"inception": args.inception_weights, "clip": args.clip, "dino": args.dino,
                       "lpips": args.lpips_weights, "lpips_net": args.lpips_net},
        "geometry": {"points": args.points}, "sdedit_strength": strength,
        "methods": {s.key: {"name": s.name, "path": s.path} for s in specs},
    }
    config = check_config(out, config)
    return {"assets": assets, "latents": latents, "captions": captions, "specs": specs, "out": out,
            "device": device, "config": config, "strength": strength, "metrics": metrics}


def _check_extractors(args: argparse.Namespace, metrics) -> None:
    """Before loading: the weights of every extractor ``metrics`` need are here (a hub id: cached
    or the hub reachable). Every missing one is reported in one message.

    Raises:
        AssetNotFoundError, InputError, CheckpointError: a given path that does not exist or is
            the wrong kind (exit 2, names the flag).
        WeightsNotFoundError: weights missing here (exit 3); names each flag that takes a local path.
    """
    from sharpit.checks import check_model_source
    from sharpit.evaluation.fid import inception_weights_path
    from sharpit.evaluation.lpips import lpips_weight_files
    from sharpit.evaluation.similarity import DEFAULT_CLIP, DEFAULT_DINO

    layout = "config.json, model.safetensors and preprocessor_config.json, as {} on the hub"
    checks = {
        "fid": ("--inception-weights", lambda: inception_weights_path(args.inception_weights)),
        "clip": ("--clip", lambda: check_model_source(args.clip or DEFAULT_CLIP, "--clip", "a CLIP model folder",
                                                      ["config.json", "preprocessor_config.json"],
                                                      layout.format(DEFAULT_CLIP))),
        "dino": ("--dino", lambda: check_model_source(args.dino or DEFAULT_DINO, "--dino", "a DINO ViT model folder",
                                                      ["config.json", "preprocessor_config.json"],
                                                      layout.format(DEFAULT_DINO))),
        "lpips": ("--lpips-weights", lambda: lpips_weight_files(args.lpips_net, args.lpips_weights)),
    }
    missing = []
    for metric, (flag, check) in checks.items():
        if metric in metrics:
            try:
                check()
            except WeightsNotFoundError as exc:
                missing.append((flag, exc))
    if missing:
        first = missing[0][1]
        if len(missing) > 1:
            first.args = (f"{first} Also missing here: {', '.join(f for f, _ in missing[1:])} (or leave those "
                          f"metrics out with --metrics).",)
        raise first


def _eval_assets(assets, latents, captions, limit) -> list:
    from sharpit.evaluation.run import EvalAsset

    chosen = list(assets.items())[:limit] if limit else list(assets.items())
    return [EvalAsset(oid, path, latents.get(oid), captions.get(oid, "")) for oid, path in chosen]


#: Settings of ``--tiny`` runs on top of the tiny pipeline's defaults: two refiner steps (SDEdit at
#: 0.6 keeps one) without CFG, and coarser marching-cubes grids (coarse 16, reconstructor 32) keep
#: the smoke run short (the tiny models are random anyway; the views stay full size).
TINY_EVAL_OVERRIDES = {"refine_steps": 2, "guidance_scale": 1.0, "coarse_grid_size": 16, "mesh_resolution": 32}


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
        from sharpit.coarse import find_latents
        from training.prepare_pairs import find_assets, read_captions

        save_tiny_models(tiny_cache_dir())
        tiny_paths.update(save_tiny_eval_inputs(tiny_cache_dir()))
        return _eval_assets(checked["assets"] or find_assets(tiny_paths["assets"]),
                            checked["latents"] or find_latents(tiny_paths["latents"]),
                            checked["captions"] or read_captions(tiny_paths["captions"]), args.limit)

    def load_runner(device):
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
        from sharpit.evaluation.lpips import load_lpips
        from sharpit.evaluation.run import Extractors
        from sharpit.evaluation.similarity import DEFAULT_CLIP, DEFAULT_DINO, load_clip, load_dino

        metrics = checked["metrics"]
        sources = {"inception": args.inception_weights, "clip": args.clip or DEFAULT_CLIP,
                   "dino": args.dino or DEFAULT_DINO, "lpips": args.lpips_weights}
        sources.update({k: v for k, v in tiny_paths.items() if k in sources})   # --tiny: the tiny ones
        return Extractors(
            metrics,
            inception=load_inception(sources["inception"], device) if "fid" in metrics else None,
            clip=load_clip(sources["clip"], device) if "clip" in metrics else None,
            dino=load_dino(sources["dino"], device) if "dino" in metrics else None,
            lpips=load_lpips(args.lpips_net, sources["lpips"], device) if "lpips" in metrics else None,
            num_points=args.points or (2000 if args.tiny else NUM_POINTS), fscore_threshold=FSCORE_THRESHOLD)

    def report(out):
        from sharpit.evaluation.records import write_config
        from sharpit.evaluation.report import write_report

        write_config(out, checked["config"])
        write_report(out)

    assets = None if args.tiny else _eval_assets(checked["assets"], checked["latents"], checked["captions"], args.limit)
    return RunPlan(assets, specs, checked["out"], args.seed, checked["device"], load_runner, load_extractors,
                   prepare, report)


def _main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)   # an unknown flag is refused before torch is imported
    checked = _check(args)
    from sharpit.evaluation.records import write_config
    from sharpit.evaluation.run import evaluate

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
