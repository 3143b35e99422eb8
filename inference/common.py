"""What `inference.generate` and `inference.edit` share: model flags, batches split across
processes, resumable outputs, and exit codes.

Exit codes: 0 success; 2 bad input (a one-line reason on stderr); 3 weights missing (how to get
them is printed); 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from sharpit.checks import check_output_dir, hub_reachable
from sharpit.errors import (EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_ITEMS_FAILED, EXIT_NO_WEIGHTS, AssetNotFoundError, InputError,
                            OutputExistsError, SharpItError, WeightsNotFoundError)


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Output, model, device and refinement flags shared by both commands."""
    from sharpit.coarse import COARSE_RENDER_MODES, DEFAULT_COARSE_RENDER

    parser.add_argument("--out", required=True, help="output folder (one sub-folder per item in batches)")
    parser.add_argument("--seed", type=int, default=0, help="seed; batch item i uses seed + i")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--tiny", action="store_true",
                        help="random tiny models, offline, in seconds: a smoke test of the whole chain")
    parser.add_argument("--textured", action="store_true", help="bake a UV texture map into the GLB")
    parser.add_argument("--negative-prompt", default=None, help="the refiner's negative prompt")
    parser.add_argument("--refine-steps", type=int, default=None, help="refiner steps (75)")
    parser.add_argument("--guidance-scale", type=float, default=None, help="refiner CFG scale (4)")
    parser.add_argument("--strength", type=float, default=None, help="SDEdit strength in (0, 1] (1)")
    parser.add_argument("--coarse-grid-size", type=int, default=None, help="coarse marching-cubes grid (128)")
    parser.add_argument("--coarse-render-mode", choices=COARSE_RENDER_MODES, default=None,
                        help="render the coarse object's mesh, or its NeRF (Shap-E latents only), into the "
                             f"refiner's input views ({DEFAULT_COARSE_RENDER.mode}, as training pairs)")
    parser.add_argument("--coarse-supersample", type=int, default=None,
                        help="anti-aliasing of the coarse views: render N times larger and average; 1 = off "
                             f"({DEFAULT_COARSE_RENDER.supersample})")
    parser.add_argument("--mesh-resolution", type=int, default=None, help="reconstruction grid (256)")
    parser.add_argument("--texture-size", type=int, default=None, help="texture map size (1024)")
    parser.add_argument("--face-budget", type=int, default=None,
                        help="faces kept before UV unwrapping with --textured (20000)")
    parser.add_argument("--texture-source", choices=["views", "field"], default=None,
                        help="texture colours with --textured: from the refined views where they see the "
                             "surface (default) or from the reconstructor's colour field only")
    parser.add_argument("--uv-layout", choices=["pairs", "xatlas"], default=None,
                        help="texture layout with --textured: pairs (fast, default) or xatlas (few seams, "
                             "for painting)")
    parser.add_argument("--optimize-steps", type=int, default=None,
                        help="after reconstruction, optimise the mesh's texture for N steps of multi-view score "
                             "distillation under the refiner (0: off; the mesh comes back textured). Interrupted "
                             "runs resume from a state file next to the result")
    add_model_args(parser)


def prog(module: str) -> str:
    """The command's name for its usage line: the console script (``sharpit-generate``) when run
    as one, else ``python -m inference.<module>``."""
    script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return script if script.startswith("sharpit-") else f"python -m inference.{module}"


#: Help of ``--encoder`` (edit and the web app: Shap-E's encoder for the latent route of edits).
ENCODER_HELP = ("Shap-E's encoder: a folder with transmitter.pt + transmitter_config.yaml (released by OpenAI "
                "outside the hub), a ShapEEncoder.save_pretrained folder, or a hub id")


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """Model and device flags (shared by generate, edit and the web app)."""
    from sharpit.sources import DEFAULT_MODELS

    models = parser.add_argument_group("models (hub ids or local paths)")
    models.add_argument("--pipeline", default=None,
                        help="a saved SharpIt3DPipeline folder or hub id (replaces the model flags below)")
    models.add_argument("--shap-e", default=DEFAULT_MODELS["shap_e"], help="Shap-E (diffusers layout) (%(default)s)")
    models.add_argument("--zero123plus", default=DEFAULT_MODELS["zero123plus"],
                        help="the Zero123++ v1.2 pipeline the refiner is built on (%(default)s)")
    models.add_argument("--sharpit-unet", default=DEFAULT_MODELS["sharpit_unet"],
                        help="Sharp-It's multi-view UNet (%(default)s)")
    models.add_argument("--refiner", default=None, help="a saved SharpItRefinePipeline folder (replaces the two above)")
    models.add_argument("--instantmesh", default=DEFAULT_MODELS["instantmesh"],
                        help="the InstantMesh reconstructor: a hub id or a folder with its checkpoint (%(default)s)")
    models.add_argument("--instantmesh-variant", default=DEFAULT_MODELS["instantmesh_variant"],
                        choices=["base", "large"], help="which InstantMesh NeRF checkpoint (%(default)s)")
    device = parser.add_argument_group("device")
    device.add_argument("--dtype", choices=["auto", "fp16", "bf16", "fp32"], default="auto",
                        help="weights' precision (auto: fp16 on a GPU, fp32 on the CPU)")
    device.add_argument("--offload", action="store_true",
                        help="keep one model on the GPU at a time (diffusers' enable_model_cpu_offload)")


#: Command-line flag of each generation option (the rest are ``--`` + the option with dashes).
_OPTION_FLAGS = {"coarse_render": "--coarse-render-mode/--coarse-supersample"}
#: Where a batch logs the items that failed (one JSON line each), inside ``--out``.
FAILURES_FILE = "failures.jsonl"


def generation_overrides(args: argparse.Namespace, **command_options) -> Dict[str, Any]:
    """The generation options given as flags, validated now (before any model loads), as keyword
    overrides of the pipeline's saved defaults (:attr:`SharpIt3DPipeline.default_options`: the
    paper's settings, :data:`~sharpit.options.TINY_OPTIONS` with ``--tiny``). ``command_options``
    are the command's own option flags (e.g. ``coarse_steps`` of generate).

    Raises:
        InputError: a bad value, naming the flag and the allowed range (exit code 2).
    """
    from sharpit.coarse import DEFAULT_COARSE_RENDER, CoarseRenderOptions
    from sharpit.options import TINY_OPTIONS, GenerationOptions, OptionError

    if args.seed < 0:
        raise InputError(f"--seed must be an integer >= 0, got {args.seed}")
    flags = dict(command_options, refine_steps=args.refine_steps, guidance_scale=args.guidance_scale,
                 strength=args.strength, coarse_grid_size=args.coarse_grid_size,
                 mesh_resolution=args.mesh_resolution, texture_size=args.texture_size,
                 face_budget=args.face_budget, uv_layout=args.uv_layout, texture_source=args.texture_source,
                 negative_prompt=args.negative_prompt, optimize_steps=args.optimize_steps)
    overrides = {k: v for k, v in flags.items() if v is not None}
    if args.textured:
        overrides["textured"] = True
    try:
        if args.coarse_render_mode is not None or args.coarse_supersample is not None:
            overrides["coarse_render"] = CoarseRenderOptions(
                mode=args.coarse_render_mode or DEFAULT_COARSE_RENDER.mode,
                supersample=DEFAULT_COARSE_RENDER.supersample if args.coarse_supersample is None
                else args.coarse_supersample)
        (TINY_OPTIONS if args.tiny else GenerationOptions()).replace(**overrides)
    except OptionError as exc:
        flag = _OPTION_FLAGS.get(exc.option, "--" + exc.option.replace("_", "-"))
        raise InputError(f"{flag} {exc.detail}") from None
    except InputError as exc:
        raise InputError(f"{_OPTION_FLAGS['coarse_render']}: {exc}") from None
    return overrides


def read_prompts(path: str) -> List[str]:
    """One prompt per line; blank lines and lines starting with '#' are skipped."""
    p = Path(path)
    if p.is_dir():
        raise InputError(f"--prompts {p} is a folder; pass a text file with one prompt per line")
    if not p.is_file():
        raise AssetNotFoundError(p, "--prompts: file not found; pass a text file with one prompt per line")
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise InputError(f"--prompts {p}: the file is not UTF-8 text; save it as UTF-8") from None
    prompts = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise InputError(f"--prompts {p}: the file holds no prompts (one per line)")
    return prompts


def collect_prompts(args: argparse.Namespace, example: str) -> "tuple[List[str], bool]":
    """The prompts of ``--prompt`` or ``--prompts FILE`` and whether this is a batch."""
    if args.prompts is not None:
        return read_prompts(args.prompts), True
    if not args.prompt.strip():
        raise InputError(f"--prompt is empty; describe it, e.g. --prompt '{example}'")
    return [args.prompt], False


def slug(text: str, limit: int = 40) -> str:
    s = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return s[:limit] or "item"


@dataclass
class Item:
    """One unit of work: its index in the batch, prompt, seed and output folder."""

    index: int
    prompt: str
    seed: int
    out: Path
    source: Optional[str] = None   # the edited asset, as recorded in metadata.json


def plan_items(prompts: List[str], out: Path, seed: int, batch: bool, source: Optional[str] = None) -> List[Item]:
    if not batch:
        return [Item(0, prompts[0], seed, out, source)]
    return [Item(i, p, seed + i, out / f"{i:05d}_{slug(p)}", source) for i, p in enumerate(prompts)]


def check_output(out: "Path | str", overwrite: bool, batch: bool) -> None:
    """Check ``--out`` before anything heavy runs: a single result's folder must not hold anything
    unless ``--overwrite``; a batch's ``--out`` must be a folder if it exists (finished items are
    skipped); and folders must be creatable there (a probe folder is made and removed, so
    read-only mounts, ``/proc`` and permission problems show now, not after the run).

    Raises:
        OutputExistsError, OutputNotWritableError: naming ``--out`` and what to do.
    """
    if not str(out).strip():
        raise InputError("--out is empty; name the folder results go to, e.g. --out outputs/chair")
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise OutputExistsError(out, "--out is a file; results are folders: choose another --out")
        if not batch and not overwrite and any(out.iterdir()):
            raise OutputExistsError(out, "--out already holds files; pass --overwrite or choose another --out")
    check_output_dir(out, "--out")


#: The flag that takes a local folder or file instead of each model's hub id.
MODEL_FLAGS = {"shap_e": "--shap-e", "zero123plus": "--zero123plus", "sharpit_unet": "--sharpit-unet",
               "refiner": "--refiner", "instantmesh": "--instantmesh", "pipeline": "--pipeline"}


def _check_local_model(key: str, path: Path, marker: str) -> None:
    """A local model path must be what its flag takes: a folder holding ``marker``
    (``model_index.json``, ``config.json``), or for ``--instantmesh`` also a ``.ckpt`` file."""
    flag = MODEL_FLAGS[key]
    if not path.exists():
        raise AssetNotFoundError(path, f"{flag}: no such file or folder; pass a local folder or a Hugging Face hub id")
    if key == "instantmesh":
        if path.is_file() and path.suffix != ".ckpt":
            raise InputError(f"{flag} {path}: not an InstantMesh checkpoint; pass the released .ckpt file, the "
                             "folder holding it, or a folder saved with InstantMeshReconstructor.save_pretrained")
        if path.is_dir() and not ((path / marker).is_file() or (path / "config.json").is_file()):
            raise InputError(f"{flag} {path}: the folder holds neither {marker} nor a saved reconstructor "
                             "(config.json)")
        return
    if not path.is_dir():
        raise InputError(f"{flag} {path} is a file; pass the model's folder (it holds {marker})")
    if not (path / marker).is_file():
        raise InputError(f"{flag} {path}: not a model folder (no {marker}); pass the folder you downloaded, e.g. "
                         "with `hf download <id> --local-dir DIR`")


def check_model_flags(args: argparse.Namespace) -> None:
    """Model flags that cannot go together (no import, no file access: run it right after parsing).

    Raises:
        InputError: ``--tiny`` with a model flag, or ``--pipeline`` with ``--encoder``.
    """
    encoder = getattr(args, "encoder", None)
    if args.tiny:
        given = [flag for flag, value in (("--pipeline", args.pipeline), ("--refiner", args.refiner),
                                          ("--encoder", encoder)) if value]
        if given:
            raise InputError(f"--tiny uses random tiny models and cannot be combined with {given[0]}; drop one of them")
    elif encoder is not None and args.pipeline is not None:
        raise InputError("--pipeline loads a saved pipeline as it is and cannot be combined with --encoder; save "
                         "the pipeline with its shap_e_encoder, or use the model flags")


def check_weights(args: argparse.Namespace, need_coarse: bool) -> None:
    """Before loading: every model flag names an existing local path, or a hub id that is cached
    or downloadable. Offline (``HF_HUB_OFFLINE=1``, or no answer from the hub within 1.5 s) every
    missing model is reported at once, with the flag that takes a local folder, instead of minutes
    of retries.

    Raises:
        AssetNotFoundError: a local path that does not exist (names the flag).
        WeightsNotFoundError: hub ids that are not cached while the hub cannot be reached.
    """
    from huggingface_hub import try_to_load_from_cache

    from sharpit.sources import is_hub_id

    check_model_flags(args)
    if args.tiny:
        return
    encoder = getattr(args, "encoder", None)
    if encoder is not None:
        from sharpit.checks import check_encoder_source

        check_encoder_source(encoder, "--encoder")
    if args.pipeline is not None:
        wanted = {"pipeline": (args.pipeline, "model_index.json")}
    else:
        wanted = {"zero123plus": (args.zero123plus, "model_index.json"),
                  "instantmesh": (args.instantmesh, f"instant_nerf_{args.instantmesh_variant}.ckpt")}
        if args.refiner is not None:
            wanted = {"refiner": (args.refiner, "model_index.json"), "instantmesh": wanted["instantmesh"]}
        else:
            wanted["sharpit_unet"] = (args.sharpit_unet, "config.json")
        if need_coarse:
            wanted = {"shap_e": (args.shap_e, "model_index.json"), **wanted}
    missing = []
    for key, (source, marker) in wanted.items():
        if not is_hub_id(source):
            _check_local_model(key, Path(source), marker)
            continue
        if not isinstance(try_to_load_from_cache(source, marker), str):
            missing.append((key, source))
    if missing and not hub_reachable():
        flags = "; ".join(f"{MODEL_FLAGS[key]} DIR for {source}" for key, source in missing)
        raise WeightsNotFoundError(missing[0][1], f"Missing here: {flags}.")


def expected_parameters(args: argparse.Namespace, overrides: Dict[str, Any], latent_edit: bool = False,
                        **fixed) -> Dict[str, Any]:
    """The ``parameters`` a result made now would record (metadata.json), without loading a model:
    the generation options (the pipeline's saved defaults, :data:`~sharpit.options.TINY_OPTIONS`
    with ``--tiny``, those of ``--pipeline``'s ``model_index.json``, else the paper's, with the
    flags applied; :meth:`~sharpit.options.GenerationOptions.recorded` with ``latent_edit``) and
    ``fixed`` (``mode``, ``up_axis``, ...). Models are not compared: pass ``--overwrite`` after
    changing one. ``fixed`` comes first, so a changed route (``via``, ``source_prompt``) is what a
    refused rerun names, not the options it switched off."""
    from sharpit.options import TINY_OPTIONS, GenerationOptions

    index = _saved_index(args.pipeline) or {}
    base = TINY_OPTIONS if args.tiny else GenerationOptions.from_dict(index.get("generation_defaults"))
    return {**fixed, **base.replace(**overrides).recorded(latent_edit=latent_edit)}


def saved_components(args: argparse.Namespace) -> "tuple[bool, bool]":
    """``(Shap-E, Shap-E's encoder)``: whether the pipeline a command will load has each, read
    without loading it: ``--tiny`` has both; the model flags have Shap-E (``--shap-e``) and the
    encoder with ``--encoder``; a ``--pipeline`` has what its ``model_index.json`` lists."""
    if args.tiny:
        return True, True
    if args.pipeline is None:
        return True, getattr(args, "encoder", None) is not None
    index = _saved_index(args.pipeline) or {}

    def present(name: str) -> bool:
        entry = index.get(name)
        return isinstance(entry, list) and entry[0] is not None

    return present("prior"), present("shap_e_encoder")


def _saved_index(pipeline: Optional[str]) -> Optional[Dict[str, Any]]:
    """A saved pipeline's ``model_index.json`` (local or in the hub cache), or None."""
    import json

    if pipeline is None:
        return None
    index = Path(pipeline) / "model_index.json"
    if not index.is_file():
        from huggingface_hub import try_to_load_from_cache

        from sharpit.sources import is_hub_id

        if not is_hub_id(pipeline):
            return None   # check_weights reports the bad path

        cached = try_to_load_from_cache(pipeline, "model_index.json")
        if not isinstance(cached, str):
            return None   # not downloaded yet: the items are compared after nothing (none can be done)
        index = Path(cached)
    return json.loads(index.read_text())


def done_state(item: Item, expected: Dict[str, Any]) -> Optional[str]:
    """None when ``item`` has no finished result; ``"same"`` when its ``metadata.json`` records this
    prompt, seed and ``expected`` parameters; otherwise a short description of the first difference.
    Result folders are written atomically, so a metadata.json means a complete result."""
    import json

    path = item.out / "metadata.json"
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return "an unreadable metadata.json"
    if meta.get("prompt") != item.prompt:
        return f"prompt {meta.get('prompt')!r} (now {item.prompt!r})"
    if meta.get("seed") != item.seed:
        return f"seed {meta.get('seed')} (now {item.seed})"
    if item.source is not None and meta.get("source") != item.source:
        return f"asset {meta.get('source')!r} (now {item.source!r})"
    saved = meta.get("parameters") or {}
    for key, value in expected.items():
        if saved.get(key) != value:
            return f"{key} {saved.get(key)!r} (now {value!r})"
    return "same"


def check_done_items(items: List[Item], expected: Dict[str, Any], overwrite: bool) -> None:
    """Before loading anything: a finished item made with other parameters is refused unless
    ``--overwrite`` (which redoes every item), so a re-run never mixes settings silently.

    Raises:
        OutputExistsError: naming the item, the first differing parameter and what to do.
    """
    if overwrite:
        return
    for item in items:
        state = done_state(item, expected)
        if state not in (None, "same"):
            raise OutputExistsError(item.out, f"holds a result made with {state}; pass --overwrite to redo the "
                                              "batch with the new settings, or choose another --out")


def record_failure(out: Path, item: Item, exc: BaseException, rank: int) -> None:
    """Append one failed item to ``<out>/failures.jsonl`` (one JSON line, appended atomically)."""
    import json
    import time

    line = json.dumps({"index": item.index, "prompt": item.prompt, "seed": item.seed, "out": str(item.out),
                       "error": type(exc).__name__, "message": str(exc), "rank": rank,
                       "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / FAILURES_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)


def optimize_state_path(item: Item) -> Path:
    """Where ``--optimize-steps`` keeps ``item``'s optimisation state until its result is saved."""
    return item.out.parent / f".{item.out.name}.optimize-state.pt"


def clear_partial(item: Item) -> None:
    """Remove what an interrupted run left half-written for this item."""
    for leftover in item.out.parent.glob(f".{item.out.name}.*.partial"):
        shutil.rmtree(leftover, ignore_errors=True)


def load_pipeline(args: argparse.Namespace, device, need_coarse: bool = True):
    """The pipeline of ``--tiny``, ``--pipeline`` or the model flags, on ``device``; with
    ``--offload`` on a GPU, diffusers' model CPU offload (one model on the GPU at a time)."""
    import warnings

    import torch

    from sharpit.pipeline import SharpIt3DPipeline

    dtype = {"auto": None, "fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    offload = args.offload and torch.device(device).type == "cuda"
    if args.offload and not offload:
        warnings.warn("--offload only matters on a GPU; ignored on the CPU", stacklevel=2)
    if args.tiny:
        pipe = SharpIt3DPipeline.from_tiny(device=device)
    elif args.pipeline is not None:
        if dtype is None:
            dtype = torch.float16 if torch.device(device).type == "cuda" else torch.float32
        pipe = SharpIt3DPipeline.from_pretrained(args.pipeline, torch_dtype=dtype)
        if not offload:
            pipe.to(device)
    else:
        pipe = SharpIt3DPipeline.from_released(
            shap_e=args.shap_e if need_coarse else None, shap_e_encoder=getattr(args, "encoder", None),
            zero123plus=args.zero123plus,
            sharpit_unet=args.sharpit_unet, refiner=args.refiner, instantmesh=args.instantmesh,
            instantmesh_variant=args.instantmesh_variant, device="cpu" if offload else device, torch_dtype=dtype)
    if offload:
        pipe.enable_model_cpu_offload(device=device)
    return pipe


def run_items(items: List[Item], args: argparse.Namespace, run_one: Callable, expected: Dict[str, Any],
              need_coarse: bool = True, batch: bool = False) -> int:
    """Split ``items`` across the processes of a torchrun/accelerate launch, skip finished ones
    (same prompt, seed and ``expected`` parameters), and save each result atomically.
    ``run_one(pipe, item)`` returns a SharpIt3DPipelineOutput.

    In a batch an item that fails is logged to ``<out>/failures.jsonl`` with its reason and the
    batch goes on; the return value is then :data:`EXIT_ITEMS_FAILED` and the last line says how
    many failed (re-running retries them). A single item's error propagates.
    """
    from accelerate import PartialState

    import torch

    state = PartialState(cpu=not torch.cuda.is_available())
    if args.tiny:
        # transformers only writes from the main process of a distributed run: build the tiny
        # models there, the other ranks wait and then load them.
        from sharpit.testing.pipeline import save_tiny_models, tiny_cache_dir

        with state.main_process_first():
            save_tiny_models(tiny_cache_dir())
    with state.split_between_processes(items) as mine:
        mine = list(mine)
    rank = state.process_index
    todo = []
    for item in mine:
        if not args.overwrite and done_state(item, expected) == "same":
            print(f"[rank {rank}] skip (done): {item.out}", flush=True)
            continue
        todo.append(item)
    if not todo:
        return 0
    pipe = load_pipeline(args, state.device, need_coarse)
    failed = 0
    for item in todo:
        clear_partial(item)
        print(f"[rank {rank}] {item.index}: {item.prompt!r} -> {item.out}", flush=True)
        try:
            result = run_one(pipe, item)
            result.save(item.out, overwrite=args.overwrite or batch)
            optimize_state_path(item).unlink(missing_ok=True)
        except Exception as exc:   # noqa: BLE001 - in a batch one bad item must not stop the others
            if not batch:
                raise
            failed += 1
            record_failure(Path(args.out), item, exc, rank)
            print(f"[rank {rank}] FAILED {item.index}: {type(exc).__name__}: {exc}", flush=True)
            continue
        t = result.timings
        print(f"[rank {rank}] done in {t['total']:.1f}s "
              f"({', '.join(f'{k} {v:.1f}s' for k, v in t.items() if k != 'total')})", flush=True)
    if failed:
        print(f"[rank {rank}] {failed} of {len(todo)} item(s) failed; reasons in {Path(args.out) / FAILURES_FILE}; "
              "re-run the same command to retry them", file=sys.stderr, flush=True)
        return EXIT_ITEMS_FAILED
    return 0


def main_guard(fn: Callable[[Optional[List[str]]], int], argv: Optional[List[str]] = None) -> int:
    """Run a CLI entry point, turning our errors into a one-line reason and an exit code."""
    try:
        return fn(argv)
    except WeightsNotFoundError as exc:
        print(f"error: {exc}\nTo try the whole chain offline with random tiny models, add --tiny.",
              file=sys.stderr)
        return EXIT_NO_WEIGHTS
    except SharpItError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
