"""The evaluation loop: ground truth, each method, the metrics, one ``results.jsonl`` line per pair.

:func:`evaluate` is what ``python -m inference.evaluate`` runs once its flags are checked. Under
``torchrun`` / ``accelerate launch`` the sorted asset list is split between processes
(``PartialState.split_between_processes``, as the batch CLIs do); every process appends its own
lines to the shared ``results.jsonl`` and ``failures.jsonl`` (:mod:`.records`), and process 0
writes the report once all are done.

Per asset: the ground-truth mesh is rendered at the six Zero123++ v1.2 views with the renderer and
lighting of training targets (``training.renderers.SharpItTargetRenderer``, lambertian, 2x
supersampled, white background, the object normalised to radius 0.5), at the tile size of the
method grids (320). For each method not yet done: its grid and mesh (:mod:`.methods`), then the
metrics of the run (:data:`METRICS`, all by default; ``--metrics`` picks some):

* ``clip``, ``dino``: cosine similarity of each view with the ground-truth view (mean and per view);
* ``psnr``, ``ssim``, ``lpips``: per view (the views are pixel-aligned: same cameras, same
  normalisation);
* ``geometry``: Chamfer distance and F-score of its mesh against the ground-truth mesh (:mod:`.geometry`);
* ``fid``: the Inception pool3 features of its six views (saved; FID is a set metric, computed by
  the report);
* always: wall time and peak memory of the method, and the metrics' own time (``metrics_seconds``);
  the ground truth's render and features, made once per asset, as ``ground_truth_seconds``.

A broken asset (unreadable mesh, missing latent, empty coarse surface) or a failing asset x
method pair (a method grid of another size than the ground truth, a CUDA out-of-memory error, a
``RuntimeError`` inside a metric: any ``Exception``) is logged to ``failures.jsonl`` and skipped;
the others go on, and the command exits 4 at the end. Models and extractors load once a process
finds its first asset with a readable mesh (a process whose assets are all broken loads none);
if they fail to load in any process, every process stops before evaluating anything
(:func:`evaluate`), rather than the others waiting for the failed one at the end.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from ..errors import InputError, SharpItError
from .methods import MethodRunner, MethodSpec
from .records import FAILURES_FILE, RESULTS_FILE, append_jsonl, done_pairs

__all__ = ["METRICS", "parse_metrics", "Extractors", "EvalAsset", "RunPlan", "asset_mesh", "evaluate_asset", "evaluate",
           "GROUND_TRUTH_SHADING", "GROUND_TRUTH_SUPERSAMPLE"]

logger = logging.getLogger("sharpit.evaluation")

#: Ground truth is rendered like training targets (``training/renderers.py``'s defaults).
GROUND_TRUTH_SHADING = "lambertian"
GROUND_TRUTH_SUPERSAMPLE = 2


#: Every metric a run can compute, in report order; ``geometry`` is Chamfer distance and F-score.
#: ``fid`` needs the Inception weights, ``clip``/``dino`` their models, ``lpips`` its trunk and
#: linear layers; ``psnr``, ``ssim`` and ``geometry`` need none.
METRICS = ("fid", "clip", "dino", "psnr", "ssim", "lpips", "geometry")


def parse_metrics(text: Optional[str]) -> Tuple[str, ...]:
    """``clip,dino,psnr`` -> the named metrics in :data:`METRICS` order; None or ``all``: every one.

    Raises:
        InputError: an empty list or an unknown name (the message lists the known ones).
    """
    if text is None or str(text).strip().lower() == "all":
        return METRICS
    names = [n.strip().lower() for n in str(text).split(",") if n.strip()]
    if not names:
        raise InputError(f"--metrics is empty; name one or more of {', '.join(METRICS)} (or all)")
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise InputError(f"--metrics: unknown metric {unknown[0]!r}; known: {', '.join(METRICS)} (or all)")
    return tuple(m for m in METRICS if m in names)


@dataclass
class Extractors:
    """The metrics of a run and what they need: Inception (:func:`.fid.load_inception`), CLIP and
    DINO (:class:`.similarity.ImageEmbedder`), LPIPS (:func:`.lpips.load_lpips`), each None when
    its metric is not in ``metrics``; and the geometry settings."""

    metrics: Tuple[str, ...]
    inception: Any = None
    clip: Any = None
    dino: Any = None
    lpips: Any = None
    num_points: int = 10000
    fscore_threshold: float = 0.05


@dataclass
class EvalAsset:
    """One test object: id, ground-truth mesh file, Shap-E latent file (or None) and caption."""

    id: str
    mesh_path: Path
    latent_path: Optional[Path]
    caption: str


def _save_png(path: Path, grid: torch.Tensor) -> None:
    import io

    from ..atomic import write_bytes_atomic
    from ..grid import tensor_to_pil

    buffer = io.BytesIO()
    tensor_to_pil(grid).save(buffer, format="PNG")
    write_bytes_atomic(path, buffer.getvalue())


def _save_features(path: Path, features: torch.Tensor) -> None:
    from safetensors.torch import save

    from ..atomic import write_bytes_atomic

    write_bytes_atomic(path, save({"inception_pool3": features.contiguous()}))


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values))


def _image_metrics(views: torch.Tensor, gt_views: torch.Tensor, gt_embeddings: Dict[str, Any],
                   ex: Extractors) -> Dict[str, Any]:
    """The run's image metrics of six views against the ground-truth views (whose CLIP/DINO
    embeddings and LPIPS features are in ``gt_embeddings``), and the Inception features under
    ``_features`` for FID."""
    from .fid import inception_features
    from .lpips import lpips_distance
    from .pixels import psnr, ssim
    from .similarity import cosine_similarity

    out: Dict[str, Any] = {}
    for kind in ("clip", "dino"):
        if kind in ex.metrics:
            per_view = cosine_similarity(getattr(ex, kind).embed(views), gt_embeddings[kind]).tolist()
            out[kind], out[f"{kind}_per_view"] = _mean(per_view), per_view
    per_view_metrics = {"psnr": lambda: psnr(views, gt_views), "ssim": lambda: ssim(views, gt_views),
                        "lpips": lambda: lpips_distance(ex.lpips, views, gt_embeddings["lpips"])}
    for name, fn in per_view_metrics.items():
        if name in ex.metrics:
            per_view = fn()
            out[name], out[f"{name}_per_view"] = _mean(per_view), per_view
    if "fid" in ex.metrics:
        out["_features"] = inception_features(ex.inception, views)
    return out


def asset_mesh(asset: EvalAsset):
    """The ground-truth mesh of ``asset``, once its inputs are known to be there.

    Raises:
        AssetNotFoundError: no Shap-E latent for it. SharpItError: the mesh file is broken.
    """
    from ..errors import AssetNotFoundError
    from ..mesh_io import load_mesh

    if asset.latent_path is None:
        raise AssetNotFoundError(asset.mesh_path.with_suffix(".pt"), "no Shap-E latent for this object under "
                                 "--latents (<id>.pt or <id>.safetensors): the coarse input of every method")
    return load_mesh(asset.mesh_path)


def evaluate_asset(asset: EvalAsset, specs: Sequence[MethodSpec], runner: MethodRunner, ex: Extractors,
                   out: Path, seed: int, device, rank: int = 0, done=frozenset(), gt_mesh=None) -> Tuple[int, int]:
    """Evaluate the methods of ``specs`` not in ``done`` on one asset; append their lines to
    ``results.jsonl``. Returns ``(pairs written, pairs failed)``. ``gt_mesh``: the asset's mesh
    when already loaded (:func:`asset_mesh`).

    Any error of one pair (a method or a metric: a bad grid, a ``RuntimeError``, a CUDA
    out-of-memory error; not ``KeyboardInterrupt``) is logged to ``failures.jsonl`` and the next
    method runs. Each record's ``metrics_seconds`` is that method's own metric time; the ground
    truth's render and features, made once per asset, are timed apart as ``ground_truth_seconds``
    (the same value on every record this call writes for the asset).

    Raises:
        SharpItError: the asset itself is broken (mesh, latent): the caller logs it and skips it.
    """
    from training.renderers import SharpItTargetRenderer

    from ..cameras import VIEW_SIZE
    from ..coarse import load_latents
    from ..grid import grid_to_views
    from .fid import inception_features
    from .geometry import mesh_geometry
    from .lpips import lpips_reference

    gt_mesh = asset_mesh(asset) if gt_mesh is None else gt_mesh
    latent, _ = load_latents(asset.latent_path, width=runner.base.coarse.latent_width)
    latent = latent[:1]
    gt_start = time.perf_counter()
    with torch.no_grad():
        gt_grid = SharpItTargetRenderer(GROUND_TRUTH_SHADING, GROUND_TRUTH_SUPERSAMPLE)(
            gt_mesh, VIEW_SIZE, asset.id).float().cpu()
    gt_views = grid_to_views(gt_grid)
    ground_truth_seconds = time.perf_counter() - gt_start   # + its metric features, below
    folder = out / "grids" / asset.id
    _save_png(folder / "ground_truth.png", gt_grid)
    gt_embeddings: Dict[str, Any] = {}   # made once, when the first method gets that far
    gt_ready = False
    written = failed = 0
    for spec in specs:
        if (asset.id, spec.key) in done:
            continue
        try:
            with torch.no_grad():
                result = runner.run(spec, latent, asset.caption, seed, device)
            if spec.name == "shap_e":
                _save_png(folder / "coarse.png", result.grid)
            if tuple(result.grid.shape) != tuple(gt_grid.shape):
                raise InputError(f"method {spec.name} made a {tuple(result.grid.shape)} grid but the ground truth "
                                 f"is {tuple(gt_grid.shape)}; every method must output the six "
                                 f"{gt_grid.shape[-1] // 2}px views of a 3x2 grid")
            if not gt_ready:
                gt_start = time.perf_counter()
                with torch.no_grad():
                    gt_embeddings.update({k: getattr(ex, k).embed(gt_views) for k in ("clip", "dino")
                                          if k in ex.metrics})
                    if "lpips" in ex.metrics:   # the ground truth's LPIPS features, once per asset
                        gt_embeddings["lpips"] = lpips_reference(ex.lpips, gt_views)
                    if "fid" in ex.metrics:
                        _save_features(out / "features" / asset.id / "ground_truth.safetensors",
                                       inception_features(ex.inception, gt_views))
                ground_truth_seconds += time.perf_counter() - gt_start
                gt_ready = True
            start = time.perf_counter()
            with torch.no_grad():
                metrics = _image_metrics(grid_to_views(result.grid), gt_views, gt_embeddings, ex)
            if "geometry" in ex.metrics:
                metrics.update(mesh_geometry(result.mesh, gt_mesh, ex.num_points, seed, ex.fscore_threshold))
            metrics_seconds = time.perf_counter() - start
        except Exception as exc:   # noqa: BLE001 - one pair's error (also OOM, a metric's RuntimeError) skips that pair
            failed += 1
            _log_failure(out, asset, exc, rank, spec)
            continue
        record = {"asset": asset.id, "method": spec.name, "method_key": spec.key, "caption": asset.caption,
                  "seed": seed, "rank": rank, "seconds": result.seconds, "peak_memory_bytes": result.peak_memory_bytes,
                  "memory_kind": result.memory_kind, "metrics_seconds": metrics_seconds,
                  "ground_truth_seconds": ground_truth_seconds, "grid": f"grids/{asset.id}/{spec.key}.png"}
        if "_features" in metrics:
            record["features"] = f"features/{asset.id}/{spec.key}.safetensors"
            _save_features(out / record["features"], metrics.pop("_features"))
        _save_png(folder / f"{spec.key}.png", result.grid)
        append_jsonl(out / RESULTS_FILE, {**record, **metrics})
        written += 1
    return written, failed


def _log_failure(out: Path, asset: EvalAsset, exc: BaseException, rank: int, spec: Optional[MethodSpec] = None) -> None:
    record = {"asset": asset.id, "path": str(asset.mesh_path), "method": None if spec is None else spec.name,
              "error": type(exc).__name__, "message": str(exc), "rank": rank,
              "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    append_jsonl(out / FAILURES_FILE, record)
    what = asset.id if spec is None else f"{asset.id} x {spec.name}"
    print(f"[rank {rank}] FAILED {what}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)


@dataclass
class RunPlan:
    """A checked run: assets, methods, output folder, seed and how to build models and extractors."""

    assets: List[EvalAsset]
    specs: List[MethodSpec]
    out: Path
    seed: int
    device: str
    load_runner: Any = None        # (device) -> MethodRunner, called once an asset's inputs are readable
    load_extractors: Any = None    # (device) -> Extractors, likewise
    prepare: Any = None            # () -> assets or None, on the main process first (e.g. build tiny inputs)
    report: Any = None             # (out) -> None, process 0 once every process is done


def _agree_on_models(error: Optional[BaseException]) -> None:
    """Every process of the launch says whether its models and extractors loaded (``error``: why
    not, or None); if any failed, every process raises at once instead of the others running on
    and then waiting for it forever at the end. A single process just raises its own error.

    Raises:
        SharpItError: this process's load failure (a ``SharpItError`` as it was, e.g.
            ``WeightsNotFoundError``; anything else as one line), or another process's.
    """
    report = None if error is None else f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    reports = [report]
    if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        reports = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(reports, report)
    if error is not None:
        if isinstance(error, SharpItError):
            raise error
        raise SharpItError(f"loading the models and metric extractors failed: {report}") from error
    failed = [(rank, r) for rank, r in enumerate(reports) if r is not None]
    if failed:
        rank, reason = failed[0]
        raise SharpItError(f"process {rank} could not load the models and metric extractors ({reason}), so every "
                           "process stops; fix that and re-run the same command to resume")


def evaluate(plan: RunPlan) -> int:
    """Run ``plan`` split across the processes of a launch; returns the number of pairs or assets
    that failed in this process (0: all done).

    Each process reads its assets' meshes until one is readable (a broken one is logged and
    skipped; a process whose assets are all broken loads nothing), then loads the models and
    extractors; all processes then agree that every load worked (:func:`_agree_on_models`) before
    any asset is evaluated, so a load failure anywhere stops every process with one line. After
    that an error of an asset or of a pair is logged to ``failures.jsonl`` and skipped.

    Raises:
        SharpItError: the models or extractors could not be loaded, here or in another process.
    """
    from accelerate import PartialState
    from tqdm.auto import tqdm

    device = plan.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    state = PartialState(cpu=device == "cpu")
    run_on = torch.device(device) if ":" in device or device == "mps" else state.device
    assets = plan.assets
    if plan.prepare is not None:
        with state.main_process_first():
            prepared = plan.prepare()
        assets = prepared if prepared is not None else assets
    done = done_pairs(plan.out)
    state.wait_for_everyone()
    with state.split_between_processes(assets) as mine:
        mine = list(mine)
    rank = state.process_index
    todo = [a for a in mine if any((a.id, s.key) not in done for s in plan.specs)]
    if len(mine) > len(todo):
        print(f"[rank {rank}] {len(mine) - len(todo)} asset(s) already done", flush=True)
    failed = 0
    progress = tqdm(total=len(todo), desc=f"evaluate (rank {rank})", disable=not state.is_local_main_process)

    def readable(asset):
        """The asset's mesh, or None when it is broken (logged)."""
        nonlocal failed
        try:
            return asset_mesh(asset)
        except Exception as exc:   # noqa: BLE001 - one asset's error skips that asset
            failed += 1
            _log_failure(plan.out, asset, exc, rank)
            progress.update()
            return None

    try:
        first = None   # the models load for the first asset whose mesh is readable
        while todo and first is None:
            first = readable(todo[0])
            if first is None:
                todo = todo[1:]
        runner = extractors = load_error = None
        if first is not None:
            try:
                runner, extractors = plan.load_runner(run_on), plan.load_extractors(run_on)
            except Exception as exc:   # noqa: BLE001 - any load failure stops every process (below)
                load_error = exc
        _agree_on_models(load_error)
        for i, asset in enumerate(todo):
            gt_mesh = first if i == 0 else readable(asset)
            if gt_mesh is None:
                continue
            try:
                _, bad = evaluate_asset(asset, plan.specs, runner, extractors, plan.out, plan.seed, run_on, rank, done,
                                        gt_mesh)
                failed += bad
            except Exception as exc:   # noqa: BLE001 - one asset's error skips that asset
                failed += 1
                _log_failure(plan.out, asset, exc, rank)
            progress.update()
    finally:
        progress.close()
    state.wait_for_everyone()
    if state.is_main_process and plan.report is not None:
        plan.report(plan.out)
    state.wait_for_everyone()
    return failed
