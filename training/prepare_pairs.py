"""Write Sharp-It training pairs (coarse grid, target grid, caption) from a folder of 3D assets.

Usage (from the repository root)::

    python -m training.prepare_pairs --assets objaverse/glbs --captions Cap3D_automated_Objaverse.csv \
        --latents cap3d_latents/ --output pairs/
    # split over 8 processes (each writes its own shards and index)
    torchrun --nproc_per_node 8 -m training.prepare_pairs ...    # or: accelerate launch -m ...

For every asset (``.glb``, ``.gltf`` or ``.obj`` anywhere under ``--assets``; the file stem is the
object id, as in Objaverse's ``glbs/000-023/<uid>.glb``):

* target grid: the asset rendered at the six Zero123++ v1.2 poses, by sharpit's renderer or by
  Blender (``--renderer blender``, several lightings);
* coarse grid: the asset's Shap-E latent (``<id>.pt`` Cap3D-style or ``<id>.safetensors``
  written by sharpit, anywhere under ``--latents``) decoded and rendered at the same poses with
  :class:`sharpit.coarse.CoarseRenderOptions` (``--coarse_mode``, ``--coarse_supersample``), whose
  default is the one inference uses, so the refiner sees at inference the kind of grid it was
  trained on;
* caption from the CSV (``uid,caption`` rows with or without a header); a missing caption is
  a warning and becomes "".

Output: see :mod:`training.shards`. A broken asset is logged to ``failed-r<rank>.jsonl`` and
skipped (a rerun retries it); a folder that cannot be written stops the run.

Progress is kept per object, not per shard: each pair is appended to its rank's open tar and
``fsync``-ed, and only then recorded as finished by a line appended to ``index-r<rank>.jsonl``
(also ``fsync``-ed). A kill, even SIGKILL or a power cut, therefore loses only the object being
written (with several processes, one per process). Rerunning the same command resumes: every
process first repairs what its rank left behind (an unfinished index line and the unfinished
object after the last indexed one are cut off, and the shard gets its end-of-archive marker back;
:func:`training.shards.repair_rank`; process 0 also repairs the ranks of an earlier run with more
processes), then all of them skip the objects any index lists and append the rest to new shards,
never re-rendering a finished object nor storing one twice. Until that rerun, training's
start-up shard check may report the shard that was being written as truncated. Ctrl-C exits
with status 130 and loses the same single object.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

from sharpit.coarse.render_options import COARSE_RENDER_MODES, DEFAULT_COARSE_RENDER, CoarseRenderOptions
from sharpit.errors import (EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_NO_WEIGHTS, AssetNotFoundError, ConfigError,
                            CorruptFileError, InputError, OutputNotWritableError, SharpItError, WeightsNotFoundError)
from sharpit.sources import SHAP_E_HUB_ID

from sharpit.checks import (at_least, check_device_available, check_input_dir, check_input_file, check_model_source,
                     check_output_dir, flag_errors, parse_device, quiet_hub_warnings, weights_message)
from .renderers import BLENDER_LIGHTINGS, check_lightings

if TYPE_CHECKING:  # torch, the renderers and the shard writer are imported by prepare_pairs(), after the checks
    import torch

__all__ = ["ASSET_SUFFIXES", "find_assets", "read_captions", "prepare_pairs", "PrepareSummary", "main"]

logger = logging.getLogger("sharpit.training.prepare_pairs")

ASSET_SUFFIXES = (".glb", ".gltf", ".obj")
_LATENT_SUFFIXES = (".pt", ".safetensors")
_ID_COLUMNS = ("object_id", "uid", "id")
_RENDERERS = ("sharpit", "blender")
_SHADINGS = ("unlit", "lambertian")
#: What ShapEGenerator.from_pretrained reads from a local folder (the openai/shap-e layout).
_SHAP_E_FILES = ("prior/config.json", "text_encoder/config.json", "tokenizer/", "scheduler/scheduler_config.json",
                 "shap_e_renderer/config.json")
_SHAP_E_LAYOUT = "prior/, text_encoder/, tokenizer/, scheduler/ and shap_e_renderer/ as in openai/shap-e"
#: The smallest marching-cubes grid the Shap-E decoder is asked for (as ``--coarse-grid-size`` of inference).
_MIN_GRID_SIZE = 8


def find_assets(root) -> Dict[str, Path]:
    """``{object id: path}`` of every asset under ``root``, sorted by id (first path wins on a clash)."""
    root = Path(root)
    if not root.is_dir():
        raise AssetNotFoundError(root, "asset folder not found" if not root.exists() else
                                 "not a folder; pass the folder that holds the assets")
    found: Dict[str, Path] = {}
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in ASSET_SUFFIXES and p.is_file()):
        if path.stem in found:
            logger.warning("object id %r appears twice (%s and %s); using the first", path.stem, found[path.stem], path)
            continue
        found[path.stem] = path
    return dict(sorted(found.items()))


def _find_latents(root) -> Dict[str, Path]:
    root = Path(root)
    if not root.is_dir():
        raise AssetNotFoundError(root, "latent folder not found" if not root.exists() else
                                 "not a folder; pass the folder that holds the latents")
    return {p.stem: p for p in sorted(root.rglob("*")) if p.suffix in _LATENT_SUFFIXES and p.is_file()}


def read_captions(path) -> Dict[str, str]:
    """``{object id: caption}`` from a CSV of ``id,caption`` rows (Cap3D), or with a header naming an
    id column (``object_id``, ``uid`` or ``id``) and a ``caption`` column.

    Raises:
        AssetNotFoundError: no such file. CorruptFileError: a folder, not UTF-8 text, not CSV, a
            header without an id column, or a row without an id and a caption.
    """
    path = Path(path)
    if not path.is_file():
        if path.exists():
            raise CorruptFileError(path, "is a folder, not a CSV file of id,caption rows")
        raise AssetNotFoundError(path, "captions file not found")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [r for r in csv.reader(f) if r]
    except UnicodeDecodeError as exc:
        raise CorruptFileError(path, f"not UTF-8 text (byte {exc.start}); save the captions CSV as UTF-8") from None
    except csv.Error as exc:
        raise CorruptFileError(path, f"not a CSV file ({exc})") from None
    if not rows:
        return {}
    header = [c.strip().lower() for c in rows[0]]
    id_col, cap_col = 0, 1
    if "caption" in header:
        cap_col = header.index("caption")
        ids = [header.index(c) for c in _ID_COLUMNS if c in header]
        if not ids:
            raise CorruptFileError(path, f"the header has a caption column but no id column ({', '.join(_ID_COLUMNS)})")
        id_col, rows = ids[0], rows[1:]
    captions = {}
    for number, row in enumerate(rows, start=1):
        if len(row) <= max(id_col, cap_col):
            raise CorruptFileError(path, f"row {number} has {len(row)} column(s); expected an id and a caption")
        captions[row[id_col].strip()] = row[cap_col].strip()
    return captions


@dataclass
class PrepareSummary:
    """What one process did: pairs written, objects already done, assets that failed."""

    written: int
    skipped: int
    failed: int


@dataclass
class _Plan:
    """The checked inputs of a run: what prepare_pairs() works on once the models load."""

    assets: List[Tuple[str, Path]]
    captions: Dict[str, str]
    latents: Dict[str, Path]
    lightings: List[str]
    device: str


def _coarse_grid(generator, latent_path: Path, tile_size: int, options: CoarseRenderOptions,
                 grid_size: int) -> torch.Tensor:
    from sharpit.coarse import load_latents

    latents, _ = load_latents(latent_path, width=generator.latent_width)
    return generator.render_views(latents[:1].to(generator.device), size=tile_size, mode=options.mode,
                                  supersample=options.supersample, grid_size=grid_size).grid().cpu()


def _examples(names: Sequence[str], n: int = 3) -> str:
    return ", ".join(repr(name) for name in list(names)[:n]) + (", ..." if len(names) > n else "")


def _check(assets, captions, latents, output, shap_e, renderer: str, tile_size: Optional[int], shading: str,
           lightings: Sequence[str], blender_samples: int, coarse_render, shap_e_grid_size: int,
           samples_per_shard: int, limit: Optional[int], device: str) -> _Plan:
    """Every check of a run, before torch is imported or a model loads; the messages name the flags."""
    if renderer not in _RENDERERS:
        raise ConfigError(f"--renderer must be 'sharpit' or 'blender', got {renderer!r}")
    if shading not in _SHADINGS:
        raise ConfigError(f"--shading must be 'unlit' or 'lambertian', got {shading!r}")
    if tile_size is not None and (isinstance(tile_size, bool) or not isinstance(tile_size, int)
                                  or tile_size < 8 or tile_size % 8):
        raise ConfigError(f"--tile_size must be a positive multiple of 8, got {tile_size!r}")
    if not isinstance(coarse_render, CoarseRenderOptions):
        raise ConfigError(f"coarse_render must be a sharpit.coarse.CoarseRenderOptions, got "
                          f"{type(coarse_render).__name__}")
    at_least(shap_e_grid_size, _MIN_GRID_SIZE, "--shap_e_grid_size")
    at_least(samples_per_shard, 1, "--samples_per_shard")
    if limit is not None:
        at_least(limit, 0, "--limit", " (or leave it out for every asset)")
    at_least(blender_samples, 1, "--blender_samples")
    with flag_errors("--lightings"):
        lightings = check_lightings(lightings or tuple(BLENDER_LIGHTINGS))
    device = parse_device(device)
    check_output_dir(output, "--output")
    check_input_dir(assets, "--assets", "asset folder")
    all_assets = list(find_assets(assets).items())
    if not all_assets:
        raise InputError(f"{assets}: --assets holds no {'/'.join(ASSET_SUFFIXES)} file (searched below it); "
                         "pass the folder of your 3D assets")
    all_assets = all_assets[:limit]
    check_input_file(captions, "--captions", "captions CSV")
    with flag_errors("--captions"):
        caption_of = read_captions(captions)
    check_input_dir(latents, "--latents", "latent folder")
    latent_of = _find_latents(latents)
    if not latent_of:
        raise InputError(f"{latents}: --latents holds no <id>.pt or <id>.safetensors Shap-E latent (searched below it)")
    if all_assets and not any(oid in latent_of for oid, _ in all_assets):
        raise InputError(f"{latents}: none of the {len(latent_of)} latents in --latents belongs to an asset of "
                         f"--assets (file stems are the object ids; latents: {_examples(sorted(latent_of))}; "
                         f"assets: {_examples([oid for oid, _ in all_assets])})")
    check_model_source(shap_e, "--shap_e", "a Shap-E folder", _SHAP_E_FILES, _SHAP_E_LAYOUT)
    check_device_available(device)
    return _Plan(all_assets, caption_of, latent_of, lightings, device)


def prepare_pairs(assets, captions, latents, output, shap_e: str, renderer: str = "sharpit",
                  tile_size: Optional[int] = None, shading: str = "lambertian", lightings: Sequence[str] = (),
                  blender_samples: int = 64, coarse_render: Optional[CoarseRenderOptions] = None,
                  shap_e_grid_size: int = 128, samples_per_shard: int = 1000, limit: Optional[int] = None,
                  device: str = "auto") -> PrepareSummary:
    """Write the pairs of this process's share of ``assets`` to ``output`` (see the module docstring).

    Under ``torchrun``/``accelerate launch`` the sorted asset list is split between processes
    (``PartialState.split_between_processes``) and each rank writes its own shards and index.

    Every argument, the output folder and the Shap-E source are checked before torch is imported
    or a model loads; the messages name the command-line flag of the argument (``--assets`` ...).

    Args:
        assets, captions, latents, output: asset folder, captions CSV, latent folder, pairs folder.
        shap_e: Shap-E folder or hub id (``ShapEGenerator.from_pretrained``) used to decode latents.
        renderer: ``"sharpit"`` (``shading``: unlit|lambertian) or ``"blender"`` (``lightings``,
            presets or .hdr/.exr files, all presets when empty; ``blender_samples``). The settings of
            the other renderer are checked but not used.
        tile_size: side of each view; None is 320 (``sharpit.cameras.VIEW_SIZE``, real training),
            small for tests.
        coarse_render: how latents are rendered into coarse grids (mesh or NeRF, anti-aliasing);
            None uses :data:`sharpit.coarse.DEFAULT_COARSE_RENDER`, the inference default.
        shap_e_grid_size: marching-cubes grid of the latents (it also fixes their framing).
        limit: process at most this many assets (before splitting), for trial runs; None for all.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``; a GPU that is not there is an error.
    Raises:
        InputError, ConfigError, AssetNotFoundError, CorruptFileError: a bad argument, naming its flag:
            no asset in ``assets``, no latent (or none belonging to an asset) in ``latents``, ...
        OutputExistsError, OutputNotWritableError: ``output`` cannot be a writable folder.
        WeightsNotFoundError: ``shap_e`` is a hub id that is not cached while the hub is unreachable.
    """
    coarse_render = DEFAULT_COARSE_RENDER if coarse_render is None else coarse_render
    plan = _check(assets, captions, latents, output, shap_e, renderer, tile_size, shading, lightings,
                  blender_samples, coarse_render, shap_e_grid_size, samples_per_shard, limit, device)

    import torch
    from accelerate import PartialState
    from tqdm.auto import tqdm

    from sharpit.cameras import VIEW_SIZE
    from sharpit.coarse import ShapEGenerator
    from sharpit.mesh_io import load_mesh

    from .renderers import BlenderTargetRenderer, SharpItTargetRenderer
    from .shards import ShardWriter, finished_ids, log_failure, repair_ranks_from

    tile_size = VIEW_SIZE if tile_size is None else tile_size
    device = plan.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    state = PartialState(cpu=device == "cpu")
    run_on = torch.device(device) if ":" in device or device == "mps" else state.device
    render_target = (BlenderTargetRenderer(plan.lightings, blender_samples) if renderer == "blender"
                     else SharpItTargetRenderer(shading))
    caption_of, latent_of = plan.captions, plan.latents
    # Repair what interrupted runs left (each rank its own files, process 0 those of ranks this run
    # lacks), then read every index once all are repaired, and write only after everyone has read.
    writer = ShardWriter(output, rank=state.process_index, samples_per_shard=samples_per_shard)
    try:
        if state.is_main_process:
            repair_ranks_from(output, state.num_processes)
        state.wait_for_everyone()
        done = finished_ids(output)
        state.wait_for_everyone()
        with state.split_between_processes(plan.assets) as mine:
            todo = [(oid, path) for oid, path in mine if oid not in done]
            skipped, failed = len(mine) - len(todo), 0
            if skipped:
                logger.info("resuming: %d of this process's %d object(s) are already done", skipped, len(mine))
            missing_captions = [oid for oid, _ in todo if oid not in caption_of]
            if missing_captions:
                logger.warning("%d object(s) have no caption and get \"\" (e.g. %s)", len(missing_captions),
                               ", ".join(missing_captions[:3]))
            generator = None
            if todo:  # nothing to render (a finished run resumed): no model to load
                with quiet_hub_warnings():
                    generator = ShapEGenerator.from_pretrained(shap_e).to(run_on)
            for oid, path in tqdm(todo, desc=f"pairs (rank {state.process_index})",
                                  disable=not state.is_local_main_process):
                try:
                    if oid not in latent_of:
                        raise AssetNotFoundError(Path(latents) / f"{oid}.pt", "no Shap-E latent for this object "
                                                                              "(.pt or .safetensors)")
                    target = render_target(load_mesh(path), tile_size, oid).cpu()
                    coarse = _coarse_grid(generator, latent_of[oid], tile_size, coarse_render, shap_e_grid_size)
                    writer.add(oid, caption_of.get(oid, ""), target, coarse, tile_size)  # durable when it returns
                except OutputNotWritableError:
                    raise  # the pairs folder, not the asset, is the problem: stop
                except Exception as exc:  # noqa: BLE001 - one broken asset must never stop a 180k-object run
                    failed += 1
                    logger.warning("skipping %s (%s): %s: %s", oid, path, type(exc).__name__, exc)
                    log_failure(output, state.process_index, oid, str(path), f"{type(exc).__name__}: {exc}")
    finally:
        writer.close()
    state.wait_for_everyone()
    return PrepareSummary(written=writer.written, skipped=skipped, failed=failed)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Write Sharp-It training pairs from 3D assets and Shap-E latents.")
    parser.add_argument("--assets", required=True, help="folder of .glb/.gltf/.obj assets (searched recursively)")
    parser.add_argument("--captions", required=True, help="CSV of id,caption rows")
    parser.add_argument("--latents", required=True, help="folder of <id>.pt (Cap3D) or <id>.safetensors latents")
    parser.add_argument("--output", required=True, help="pairs folder (shards + index); reruns resume")
    parser.add_argument("--shap_e", default=SHAP_E_HUB_ID, help="Shap-E folder or hub id to decode latents")
    parser.add_argument("--renderer", choices=_RENDERERS, default="sharpit")
    parser.add_argument("--shading", choices=_SHADINGS, default=None,
                        help="--renderer sharpit only: target shading (default: lambertian)")
    parser.add_argument("--lightings", default=None,
                        help="--renderer blender only: comma-separated presets or .hdr/.exr files, one picked per "
                             f"object (default: {','.join(BLENDER_LIGHTINGS)})")
    parser.add_argument("--blender_samples", type=int, default=None,
                        help="--renderer blender only: Cycles samples per pixel (default: 64)")
    parser.add_argument("--tile_size", type=int, default=None, help="side of each of the six views (default: 320)")
    parser.add_argument("--coarse_mode", choices=COARSE_RENDER_MODES, default=DEFAULT_COARSE_RENDER.mode,
                        help="render each latent's mesh or its NeRF as the coarse grid (keep the inference default)")
    parser.add_argument("--coarse_supersample", type=int, default=DEFAULT_COARSE_RENDER.supersample,
                        help="anti-aliasing of the coarse grid: render N times larger and average; 1 = off")
    parser.add_argument("--shap_e_grid_size", type=int, default=128, help="marching-cubes grid of the latent")
    parser.add_argument("--samples_per_shard", type=int, default=1000)
    parser.add_argument("--limit", type=int, default=None, help="only the first N assets (trial runs)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    return parser


def _renderer_flags(args: argparse.Namespace) -> None:
    """Flags of the other renderer are refused rather than silently ignored (they would not change
    a single pixel of this run)."""
    other = {"sharpit": ("--lightings", "--blender_samples"), "blender": ("--shading",)}[args.renderer]
    for flag in other:
        if getattr(args, flag[2:]) is not None:
            wanted = "blender" if args.renderer == "sharpit" else "sharpit"
            raise ConfigError(f"{flag} applies to --renderer {wanted} only, and this run uses --renderer "
                              f"{args.renderer}; drop {flag} or add --renderer {wanted}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; returns 0, 2 with a one-line reason for bad input or an unwritable
    output, 3 when the Shap-E weights are missing, 130 when interrupted (the exit codes of the
    inference commands). Every flag is checked before torch is imported or Shap-E loads."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        at_least(args.coarse_supersample, 1, "--coarse_supersample", " (1 = no anti-aliasing)")
        _renderer_flags(args)
        lightings = [] if args.lightings is None else [s.strip() for s in args.lightings.split(",") if s.strip()]
        if args.lightings is not None and not lightings:
            raise ConfigError("--lightings is empty; give presets or .hdr/.exr files separated by commas")
        coarse_render = CoarseRenderOptions(mode=args.coarse_mode, supersample=args.coarse_supersample)
        summary = prepare_pairs(args.assets, args.captions, args.latents, args.output, args.shap_e,
                                renderer=args.renderer, tile_size=args.tile_size, shading=args.shading or "lambertian",
                                lightings=lightings, blender_samples=64 if args.blender_samples is None
                                else args.blender_samples, coarse_render=coarse_render,
                                shap_e_grid_size=args.shap_e_grid_size, samples_per_shard=args.samples_per_shard,
                                limit=args.limit, device=args.device)
    except WeightsNotFoundError as exc:
        print(f"prepare_pairs: error: {weights_message(exc, '--shap_e')}", file=sys.stderr)
        return EXIT_NO_WEIGHTS
    except SharpItError as exc:
        print(f"prepare_pairs: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("prepare_pairs: interrupted; every finished pair is kept: rerun the same command to resume",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    line = f"wrote {summary.written} pair(s), {summary.skipped} already done, {summary.failed} failed"
    if summary.failed:
        logs = sorted(str(p) for p in Path(args.output).glob("failed-r*.jsonl"))
        line += f" (reasons in {', '.join(logs)})"
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
