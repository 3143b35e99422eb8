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
from typing import Dict, Optional, Sequence

import torch
from tqdm.auto import tqdm

from sharpit.cameras import VIEW_SIZE
from sharpit.coarse.render_options import COARSE_RENDER_MODES, DEFAULT_COARSE_RENDER, CoarseRenderOptions
from sharpit.coarse.shap_e import SHAP_E_HUB_ID
from sharpit.errors import (EXIT_INTERRUPTED, EXIT_NO_WEIGHTS, AssetNotFoundError, ConfigError, CorruptFileError,
                            OutputNotWritableError, SharpItError, WeightsNotFoundError)

from .renderers import BLENDER_LIGHTINGS, BlenderTargetRenderer, SharpItTargetRenderer
from .shards import ShardWriter, finished_ids, log_failure, repair_ranks_from

__all__ = ["ASSET_SUFFIXES", "find_assets", "read_captions", "prepare_pairs", "PrepareSummary", "main"]

logger = logging.getLogger("sharpit.training.prepare_pairs")

ASSET_SUFFIXES = (".glb", ".gltf", ".obj")
_LATENT_SUFFIXES = (".pt", ".safetensors")
_ID_COLUMNS = ("object_id", "uid", "id")


def find_assets(root) -> Dict[str, Path]:
    """``{object id: path}`` of every asset under ``root``, sorted by id (first path wins on a clash)."""
    root = Path(root)
    if not root.is_dir():
        raise AssetNotFoundError(root, "asset folder not found")
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
        raise AssetNotFoundError(root, "latent folder not found")
    return {p.stem: p for p in sorted(root.rglob("*")) if p.suffix in _LATENT_SUFFIXES and p.is_file()}


def read_captions(path) -> Dict[str, str]:
    """``{object id: caption}`` from a CSV of ``id,caption`` rows (Cap3D), or with a header naming an
    id column (``object_id``, ``uid`` or ``id``) and a ``caption`` column."""
    path = Path(path)
    if not path.is_file():
        raise AssetNotFoundError(path, "captions file not found")
    with open(path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.reader(f) if r]
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


def _coarse_grid(generator, latent_path: Path, tile_size: int, options: CoarseRenderOptions,
                 grid_size: int) -> torch.Tensor:
    from sharpit.coarse import load_latents

    latents, _ = load_latents(latent_path, width=generator.latent_width)
    return generator.render_views(latents[:1].to(generator.device), size=tile_size, mode=options.mode,
                                  supersample=options.supersample, grid_size=grid_size).grid().cpu()


def prepare_pairs(assets, captions, latents, output, shap_e: str, renderer: str = "sharpit",
                  tile_size: int = VIEW_SIZE, shading: str = "lambertian", lightings: Sequence[str] = (),
                  blender_samples: int = 64, coarse_render: Optional[CoarseRenderOptions] = None,
                  shap_e_grid_size: int = 128, samples_per_shard: int = 1000, limit: Optional[int] = None,
                  device: str = "auto") -> PrepareSummary:
    """Write the pairs of this process's share of ``assets`` to ``output`` (see the module docstring).

    Under ``torchrun``/``accelerate launch`` the sorted asset list is split between processes
    (``PartialState.split_between_processes``) and each rank writes its own shards and index.

    Args:
        assets, captions, latents, output: asset folder, captions CSV, latent folder, pairs folder.
        shap_e: Shap-E folder or hub id (``ShapEGenerator.from_pretrained``) used to decode latents.
        renderer: ``"sharpit"`` (``shading``: unlit|lambertian) or ``"blender"`` (``lightings``).
        tile_size: side of each view; 320 for real training, small for tests.
        coarse_render: how latents are rendered into coarse grids (mesh or NeRF, anti-aliasing);
            None uses :data:`sharpit.coarse.DEFAULT_COARSE_RENDER`, the inference default.
        shap_e_grid_size: marching-cubes grid of the latents (it also fixes their framing).
        limit: process at most this many assets (before splitting), for trial runs.
    """
    from accelerate import PartialState

    from sharpit.coarse import ShapEGenerator
    from sharpit.mesh_io import load_mesh

    if tile_size < 8 or tile_size % 8:
        raise ConfigError(f"tile_size must be a positive multiple of 8, got {tile_size}")
    if renderer not in ("sharpit", "blender"):
        raise ConfigError(f"renderer must be 'sharpit' or 'blender', got {renderer!r}")
    coarse_render = DEFAULT_COARSE_RENDER if coarse_render is None else coarse_render
    if not isinstance(coarse_render, CoarseRenderOptions):
        raise ConfigError(f"coarse_render must be a sharpit.coarse.CoarseRenderOptions, got "
                          f"{type(coarse_render).__name__}")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    state = PartialState(cpu=device == "cpu")
    render_target = (BlenderTargetRenderer(lightings or tuple(BLENDER_LIGHTINGS), blender_samples)
                     if renderer == "blender" else SharpItTargetRenderer(shading))
    all_assets = list(find_assets(assets).items())[:limit]
    caption_of = read_captions(captions)
    latent_of = _find_latents(latents)
    generator = ShapEGenerator.from_pretrained(shap_e).to(state.device)
    # Repair what interrupted runs left (each rank its own files, process 0 those of ranks this run
    # lacks), then read every index once all are repaired, and write only after everyone has read.
    writer = ShardWriter(output, rank=state.process_index, samples_per_shard=samples_per_shard)
    try:
        if state.is_main_process:
            repair_ranks_from(output, state.num_processes)
        state.wait_for_everyone()
        done = finished_ids(output)
        state.wait_for_everyone()
        with state.split_between_processes(all_assets) as mine:
            todo = [(oid, path) for oid, path in mine if oid not in done]
            skipped, failed = len(mine) - len(todo), 0
            if skipped:
                logger.info("resuming: %d of this process's %d object(s) are already done", skipped, len(mine))
            missing_captions = [oid for oid, _ in todo if oid not in caption_of]
            if missing_captions:
                logger.warning("%d object(s) have no caption and get \"\" (e.g. %s)", len(missing_captions),
                               ", ".join(missing_captions[:3]))
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
    parser.add_argument("--renderer", choices=("sharpit", "blender"), default="sharpit")
    parser.add_argument("--shading", choices=("unlit", "lambertian"), default="lambertian",
                        help="sharpit renderer shading")
    parser.add_argument("--lightings", default=",".join(BLENDER_LIGHTINGS),
                        help="blender renderer: comma-separated presets or .hdr/.exr files, one picked per object")
    parser.add_argument("--blender_samples", type=int, default=64, help="Cycles samples per pixel")
    parser.add_argument("--tile_size", type=int, default=VIEW_SIZE, help="side of each of the six views")
    parser.add_argument("--coarse_mode", choices=COARSE_RENDER_MODES, default=DEFAULT_COARSE_RENDER.mode,
                        help="render each latent's mesh or its NeRF as the coarse grid (keep the inference default)")
    parser.add_argument("--coarse_supersample", type=int, default=DEFAULT_COARSE_RENDER.supersample,
                        help="anti-aliasing of the coarse grid: render N times larger and average; 1 = off")
    parser.add_argument("--shap_e_grid_size", type=int, default=128, help="marching-cubes grid of the latent")
    parser.add_argument("--samples_per_shard", type=int, default=1000)
    parser.add_argument("--limit", type=int, default=None, help="only the first N assets (trial runs)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; returns 0, 2 with a one-line reason for bad input or an unwritable
    output, 3 when the Shap-E weights are missing, 130 when interrupted (the exit codes of the
    inference commands)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        coarse_render = CoarseRenderOptions(mode=args.coarse_mode, supersample=args.coarse_supersample)
        summary = prepare_pairs(args.assets, args.captions, args.latents, args.output, args.shap_e,
                                renderer=args.renderer, tile_size=args.tile_size, shading=args.shading,
                                lightings=[s for s in args.lightings.split(",") if s],
                                blender_samples=args.blender_samples, coarse_render=coarse_render,
                                shap_e_grid_size=args.shap_e_grid_size, samples_per_shard=args.samples_per_shard,
                                limit=args.limit, device=args.device)
    except WeightsNotFoundError as exc:
        print(f"prepare_pairs: error: {exc} (--shap_e takes a local folder)", file=sys.stderr)
        return EXIT_NO_WEIGHTS
    except SharpItError as exc:
        print(f"prepare_pairs: error: {exc}", file=sys.stderr)
        return 2
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
