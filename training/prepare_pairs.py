"""Write Sharp-It training pairs (coarse grid, target grid, caption) from a folder of 3D assets.

Usage (from the repository root)::

    python -m training.prepare_pairs --assets objaverse/glbs --captions Cap3D_automated_Objaverse.csv \
        --latents cap3d_latents/ --output pairs/
    # no latents anywhere: encode each asset with Shap-E's encoder (--coarse encode)
    python -m training.prepare_pairs --assets my_assets/ --captions captions.csv --coarse encode \
        --encoder shap_e_transmitter/ --output pairs/
    # split over 8 processes (each writes its own shards and index)
    torchrun --nproc_per_node 8 -m training.prepare_pairs ...    # or: accelerate launch -m ...

For every asset (``.glb``, ``.gltf`` or ``.obj`` anywhere under ``--assets``; the file stem is the
object id, as in Objaverse's ``glbs/000-023/<uid>.glb``):

* target grid: the asset rendered at the six Zero123++ v1.2 poses, by sharpit's renderer or by
  Blender (``--renderer blender``, several lightings);
* coarse grid: the asset's Shap-E latent decoded and rendered at the same poses with
  :class:`sharpit.coarse.CoarseRenderOptions` (``--coarse_mode``, ``--coarse_supersample``), whose
  default is the one inference uses, so the refiner sees at inference the kind of grid it was
  trained on. Where the latent comes from (``--coarse``):

  - ``latents`` (default): ``<id>.pt`` Cap3D-style or ``<id>.safetensors`` written by sharpit,
    anywhere under ``--latents`` (computed by somebody else, e.g. Cap3D's Objaverse latents);
  - ``encode``: the asset itself passed through Shap-E's encoder (``--encoder``:
    :class:`sharpit.coarse.ShapEEncoder`), as the paper made its pairs (SPEC section 6), for assets
    no public latent set covers. Each object's random choices (encoder renders, point sampling)
    come from a generator seeded by :func:`object_seed` of ``--seed`` and the object id, so a
    latent does not depend on the batch order or on how the run is split between processes. The
    latent is written atomically to ``<output>/latents/<id>.safetensors``
    (:func:`sharpit.coarse.save_latents`, the files ``python -m inference.encode`` writes and
    ``--coarse latents`` and ``edit`` read) before the pair is rendered, then decoded from that
    file exactly as ``--coarse latents`` decodes its files. A rerun reuses every saved latent (an
    interrupted or failed object is not encoded twice), and ``--coarse latents --latents
    <output>/latents`` re-renders the pairs (other tile size or coarse rendering) without
    encoding again. ``--latents`` is refused in this mode: the saved latents are the one source
    of each coarse grid, and a rerun whose ``--encoder`` or ``--seed`` differs from those the
    saved latents record is refused too (delete ``<output>/latents`` to encode again);
* caption from the CSV (``uid,caption`` rows with or without a header); a missing caption is
  a warning and becomes "".

Output: see :mod:`training.shards` (and ``latents/`` with ``--coarse encode``). A broken asset
(an unreadable file, a missing latent, a mesh the encoder refuses) is logged to
``failed-r<rank>.jsonl`` and skipped (a rerun retries it); a folder that cannot be written stops
the run.

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
import hashlib
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

from sharpit.checks import (at_least, check_device_available, check_encoder_source, check_input_dir, check_input_file,
                            check_model_source, check_output_dir, flag_errors, parse_device, quiet_hub_warnings,
                            weights_message)
from sharpit.coarse.render_options import COARSE_RENDER_MODES, DEFAULT_COARSE_RENDER, CoarseRenderOptions
from sharpit.errors import (EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_NO_WEIGHTS, AssetNotFoundError, ConfigError,
                            CorruptFileError, InputError, OutputNotWritableError, SharpItError, WeightsNotFoundError)
from sharpit.formats import find_latents
from sharpit.sources import SHAP_E_HUB_ID, TRANSMITTER_CONFIG_FILENAME, TRANSMITTER_FILENAME, TRANSMITTER_URL

from .renderers import BLENDER_LIGHTINGS, check_lightings

if TYPE_CHECKING:  # torch, the renderers and the shard writer are imported by prepare_pairs(), after the checks
    import torch

__all__ = ["ASSET_SUFFIXES", "COARSE_SOURCES", "ENCODED_LATENTS_DIR", "find_assets", "read_captions", "object_seed",
           "prepare_pairs", "PrepareSummary", "main"]

logger = logging.getLogger("sharpit.training.prepare_pairs")

ASSET_SUFFIXES = (".glb", ".gltf", ".obj")
_ID_COLUMNS = ("object_id", "uid", "id")
_RENDERERS = ("sharpit", "blender")
_SHADINGS = ("unlit", "lambertian")
#: Where the coarse side's latents come from: a folder of latents, or Shap-E's encoder.
COARSE_SOURCES = ("latents", "encode")
#: The subfolder of ``--output`` that ``--coarse encode`` keeps its latents in.
ENCODED_LATENTS_DIR = "latents"
_ENCODER_LAYOUT = (f"{TRANSMITTER_FILENAME} + {TRANSMITTER_CONFIG_FILENAME} as released, or config.json + "
                   "safetensors from ShapEEncoder.save_pretrained")
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


def object_seed(seed: int, object_id: str) -> int:
    """The seed of ``object_id``'s encoder generator in a run with ``--seed seed``: the first 8
    bytes of SHA-256 of ``"<seed>/<object_id>"``, as a non-negative 63-bit integer. It depends on
    nothing else (not the asset's position in the list, the batch or the process), so a resumed or
    differently split run encodes every object exactly as a single uninterrupted run would."""
    digest = hashlib.sha256(f"{int(seed)}/{object_id}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & (2 ** 63 - 1)


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
    latents: Dict[str, Path]      # --coarse latents: the latent file of each object id that has one
    lightings: List[str]
    device: str
    encoder: Optional[str] = None   # --coarse encode: the encoder as recorded in each latent file


def _coarse_grid(generator, latent_path: Path, tile_size: int, options: CoarseRenderOptions,
                 grid_size: int) -> torch.Tensor:
    from sharpit.coarse import load_latents

    latents, _ = load_latents(latent_path, width=generator.latent_width)
    return generator.render_views(latents[:1].to(generator.device), size=tile_size, mode=options.mode,
                                  supersample=options.supersample, grid_size=grid_size).grid().cpu()


def _examples(names: Sequence[str], n: int = 3) -> str:
    return ", ".join(repr(name) for name in list(names)[:n]) + (", ..." if len(names) > n else "")


def _check_coarse_source(coarse: str, latents, encoder, seed, assets: List[Tuple[str, Path]]):
    """The flags of ``--coarse``: returns ``(latent files by object id, encoder as recorded)``."""
    if coarse not in COARSE_SOURCES:
        raise ConfigError(f"--coarse must be 'latents' or 'encode', got {coarse!r}")
    if coarse == "encode":
        if latents is not None:
            raise ConfigError("--latents applies to --coarse latents only; --coarse encode encodes every asset and "
                              f"keeps the latents in <--output>/{ENCODED_LATENTS_DIR}/ (reused on a rerun). Drop "
                              "--latents, or use --coarse latents to render latents you already have")
        if encoder is None:
            raise ConfigError(f"--coarse encode needs --encoder: a Shap-E encoder folder ({_ENCODER_LAYOUT}) or hub "
                              f"id; the released files are {TRANSMITTER_URL} and its _config.yaml")
        at_least(seed, 0, "--seed")
        hub_id = check_encoder_source(encoder)
        return {}, os.fspath(encoder) if hub_id else str(Path(encoder).resolve())   # as latent files record it
    if encoder is not None:
        raise ConfigError("--encoder applies to --coarse encode only, and this run uses --coarse latents; drop "
                          "--encoder or add --coarse encode")
    if latents is None:
        raise ConfigError("--latents is required with --coarse latents (the default): the folder of <id>.pt or "
                          "<id>.safetensors Shap-E latents; without latents, use --coarse encode --encoder DIR")
    check_input_dir(latents, "--latents", "latent folder")
    latent_of = find_latents(latents)
    if not latent_of:
        raise InputError(f"{latents}: --latents holds no <id>.pt or <id>.safetensors Shap-E latent (searched below it)")
    if assets and not any(oid in latent_of for oid, _ in assets):
        raise InputError(f"{latents}: none of the {len(latent_of)} latents in --latents belongs to an asset of "
                         f"--assets (file stems are the object ids; latents: {_examples(sorted(latent_of))}; "
                         f"assets: {_examples([oid for oid, _ in assets])})")
    return latent_of, None


def _check(assets, captions, latents, output, shap_e, renderer: str, tile_size: Optional[int], shading: str,
           lightings: Sequence[str], blender_samples: int, coarse_render, shap_e_grid_size: int,
           samples_per_shard: int, limit: Optional[int], device: str, coarse: str = "latents", encoder=None,
           seed: int = 0) -> _Plan:
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
    latent_of, encoder_id = _check_coarse_source(coarse, latents, encoder, seed, all_assets)
    check_model_source(shap_e, "--shap_e", "a Shap-E folder", _SHAP_E_FILES, _SHAP_E_LAYOUT)
    check_device_available(device)
    return _Plan(all_assets, caption_of, latent_of, lightings, device, encoder_id)


def _check_saved_latents(paths: Sequence[Path], encoder_id: str, seed: int) -> None:
    """Latents a rerun would reuse must come from the same ``--encoder`` and ``--seed`` (their
    headers only are read). A file whose header cannot be read is left to the object's own
    decoding, which records it as that object's failure."""
    from safetensors import safe_open

    for path in paths:
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
        except Exception:  # noqa: BLE001 - reported per object when it is decoded
            continue
        expected = {"encoder": encoder_id, "seed": str(object_seed(seed, path.stem))}
        if any(meta.get(key) != value for key, value in expected.items()):
            raise ConfigError(f"{path} was encoded by another --encoder or --seed (it records encoder "
                              f"{meta.get('encoder', '?')}, run seed {meta.get('run_seed', '?')}; this run has "
                              f"--encoder {encoder_id} --seed {seed}); rerun with the flags of the first run, or "
                              f"delete {path.parent} (or choose another --output) to encode every object again")


def _encode_to_file(encoder, mesh, path: Path, object_id: str, source: Path, encoder_id: str, seed: int,
                    shap_e: str) -> None:
    """Encode ``mesh`` with its object's own generator and save the (1, W) latent atomically."""
    import torch

    from sharpit.coarse import save_latents

    generator = torch.Generator().manual_seed(object_seed(seed, object_id))
    latents = encoder.encode(mesh, generator=generator, progress=False)
    save_latents(path, latents, {"source": str(source), "object_id": object_id, "seed": object_seed(seed, object_id),
                                 "run_seed": seed, "encoder": encoder_id, "up_axis": "auto", "mode": "encode",
                                 "model_id": shap_e}, overwrite=True)


def prepare_pairs(assets, captions, latents, output, shap_e: str, renderer: str = "sharpit",
                  tile_size: Optional[int] = None, shading: str = "lambertian", lightings: Sequence[str] = (),
                  blender_samples: int = 64, coarse_render: Optional[CoarseRenderOptions] = None,
                  shap_e_grid_size: int = 128, samples_per_shard: int = 1000, limit: Optional[int] = None,
                  device: str = "auto", coarse: str = "latents", encoder: Optional[str] = None,
                  seed: int = 0) -> PrepareSummary:
    """Write the pairs of this process's share of ``assets`` to ``output`` (see the module docstring).

    Under ``torchrun``/``accelerate launch`` the sorted asset list is split between processes
    (``PartialState.split_between_processes``) and each rank writes its own shards and index.

    Every argument, the output folder and the Shap-E source are checked before torch is imported
    or a model loads; the messages name the command-line flag of the argument (``--assets`` ...).

    Args:
        assets, captions, latents, output: asset folder, captions CSV, latent folder (None with
            ``coarse="encode"``), pairs folder.
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
        coarse: ``"latents"`` (the latents in ``latents``) or ``"encode"`` (each asset encoded by
            ``encoder``; latents kept in ``output/latents/``, see the module docstring).
        encoder: ``coarse="encode"`` only: a Shap-E encoder folder (released ``transmitter.pt`` +
            ``transmitter_config.yaml``, or ``ShapEEncoder.save_pretrained``) or hub id.
        seed: ``coarse="encode"``: with the object id, seeds each object's encoder generator
            (:func:`object_seed`); >= 0.
    Raises:
        InputError, ConfigError, AssetNotFoundError, CorruptFileError: a bad argument, naming its flag:
            no asset in ``assets``, no latent (or none belonging to an asset) in ``latents``, ...
        OutputExistsError, OutputNotWritableError: ``output`` cannot be a writable folder.
        WeightsNotFoundError: ``shap_e`` or ``encoder`` is a hub id that is not cached while the hub
            is unreachable.
        ConfigError: ``coarse="encode"`` with ``latents`` or without ``encoder``, ``encoder`` with
            ``coarse="latents"``, or saved latents of another encoder or seed in ``output/latents/``.
    """
    coarse_render = DEFAULT_COARSE_RENDER if coarse_render is None else coarse_render
    plan = _check(assets, captions, latents, output, shap_e, renderer, tile_size, shading, lightings,
                  blender_samples, coarse_render, shap_e_grid_size, samples_per_shard, limit, device, coarse,
                  encoder, seed)

    import torch
    from accelerate import PartialState
    from tqdm.auto import tqdm

    from sharpit.cameras import VIEW_SIZE
    from sharpit.coarse import ShapEEncoder, ShapEGenerator
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
        if coarse == "encode":   # every rank checks every saved latent, so all refuse together (none waits alone)
            latent_dir = Path(output) / ENCODED_LATENTS_DIR
            _check_saved_latents([p for p in (latent_dir / f"{oid}.safetensors" for oid, _ in plan.assets)
                                  if p.is_file()], plan.encoder, seed)
        with state.split_between_processes(plan.assets) as mine:
            todo = [(oid, path) for oid, path in mine if oid not in done]
            skipped, failed = len(mine) - len(todo), 0
            if skipped:
                logger.info("resuming: %d of this process's %d object(s) are already done", skipped, len(mine))
            missing_captions = [oid for oid, _ in todo if oid not in caption_of]
            if missing_captions:
                logger.warning("%d object(s) have no caption and get \"\" (e.g. %s)", len(missing_captions),
                               ", ".join(missing_captions[:3]))
            shap_e_encoder = None
            if coarse == "encode":  # the latents this process's objects get, saved ones reused
                latent_dir.mkdir(parents=True, exist_ok=True)
                latent_of = {oid: latent_dir / f"{oid}.safetensors" for oid, _ in todo}
                saved = [p for p in latent_of.values() if p.is_file()]
                if saved:
                    logger.info("reusing %d saved latent(s) in %s", len(saved), latent_dir)
                if len(saved) < len(todo):  # something to encode
                    with quiet_hub_warnings(), flag_errors("--encoder"):
                        shap_e_encoder = ShapEEncoder.from_pretrained(encoder).to(run_on)
            generator = None
            if todo:  # nothing to render (a finished run resumed): no model to load
                with quiet_hub_warnings():
                    generator = ShapEGenerator.from_pretrained(shap_e).to(run_on)
            if shap_e_encoder is not None and shap_e_encoder.latent_width != generator.latent_width:
                raise ConfigError(f"--encoder {encoder} makes latents of width {shap_e_encoder.latent_width}, and "
                                  f"--shap_e {shap_e} decodes latents of width {generator.latent_width}; pass the "
                                  "Shap-E the encoder belongs to")
            for oid, path in tqdm(todo, desc=f"pairs (rank {state.process_index})",
                                  disable=not state.is_local_main_process):
                try:
                    if oid not in latent_of:
                        raise AssetNotFoundError(Path(latents) / f"{oid}.pt", "no Shap-E latent for this object "
                                                                              "(.pt or .safetensors)")
                    mesh = load_mesh(path)
                    if coarse == "encode" and not latent_of[oid].is_file():  # saved before the pair: a rerun reuses it
                        _encode_to_file(shap_e_encoder, mesh, latent_of[oid], oid, path, plan.encoder, seed, shap_e)
                    target = render_target(mesh, tile_size, oid).cpu()
                    coarse_grid = _coarse_grid(generator, latent_of[oid], tile_size, coarse_render, shap_e_grid_size)
                    writer.add(oid, caption_of.get(oid, ""), target, coarse_grid, tile_size)  # durable when it returns
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
    parser = argparse.ArgumentParser(description="Write Sharp-It training pairs from 3D assets and Shap-E latents "
                                                 "(given, or made by Shap-E's encoder).")
    parser.add_argument("--assets", required=True, help="folder of .glb/.gltf/.obj assets (searched recursively)")
    parser.add_argument("--captions", required=True, help="CSV of id,caption rows")
    parser.add_argument("--coarse", choices=COARSE_SOURCES, default="latents",
                        help="where the coarse latents come from: 'latents' (--latents) or 'encode' (each asset "
                             "encoded by --encoder; latents kept in <--output>/latents/)")
    parser.add_argument("--latents", default=None,
                        help="--coarse latents: folder of <id>.pt (Cap3D) or <id>.safetensors latents")
    parser.add_argument("--encoder", default=None,
                        help="--coarse encode: Shap-E encoder folder (transmitter.pt + transmitter_config.yaml, or "
                             "ShapEEncoder.save_pretrained) or hub id")
    parser.add_argument("--seed", type=int, default=None,
                        help="--coarse encode: with each object id, seeds its encoder renders and point sampling "
                             "(default: 0)")
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


def _coarse_flags(args: argparse.Namespace) -> None:
    """``--seed`` only seeds the encoder; refused with ``--coarse latents`` (it would change nothing)."""
    if args.coarse == "latents" and args.seed is not None:
        raise ConfigError("--seed applies to --coarse encode only (it seeds the encoder), and this run uses "
                          "--coarse latents; drop --seed or add --coarse encode")


def _weights_flag(exc: WeightsNotFoundError) -> str:
    """The flag of the missing weights: the encoder's errors name --encoder, the rest are Shap-E's."""
    return "--encoder" if "--encoder" in str(exc) else "--shap_e"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; returns 0, 2 with a one-line reason for bad input or an unwritable
    output, 3 when the Shap-E or encoder weights are missing, 130 when interrupted (the exit codes of the
    inference commands). Every flag is checked before torch is imported or Shap-E loads."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        at_least(args.coarse_supersample, 1, "--coarse_supersample", " (1 = no anti-aliasing)")
        _renderer_flags(args)
        _coarse_flags(args)
        lightings = [] if args.lightings is None else [s.strip() for s in args.lightings.split(",") if s.strip()]
        if args.lightings is not None and not lightings:
            raise ConfigError("--lightings is empty; give presets or .hdr/.exr files separated by commas")
        coarse_render = CoarseRenderOptions(mode=args.coarse_mode, supersample=args.coarse_supersample)
        summary = prepare_pairs(args.assets, args.captions, args.latents, args.output, args.shap_e,
                                renderer=args.renderer, tile_size=args.tile_size, shading=args.shading or "lambertian",
                                lightings=lightings, blender_samples=64 if args.blender_samples is None
                                else args.blender_samples, coarse_render=coarse_render,
                                shap_e_grid_size=args.shap_e_grid_size, samples_per_shard=args.samples_per_shard,
                                limit=args.limit, device=args.device, coarse=args.coarse, encoder=args.encoder,
                                seed=0 if args.seed is None else args.seed)
    except WeightsNotFoundError as exc:
        print(f"prepare_pairs: error: {weights_message(exc, _weights_flag(exc))}", file=sys.stderr)
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
