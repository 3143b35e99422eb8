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
from typing import Callable, List, Optional

from sharpit.errors import AssetNotFoundError, InputError, SharpItError, WeightsNotFoundError
from sharpit.reconstruct.texture import DEFAULT_FACE_BUDGET

EXIT_BAD_INPUT = 2
EXIT_NO_WEIGHTS = 3
EXIT_INTERRUPTED = 130

#: Smaller defaults for `--tiny` smoke runs (random tiny models; only the plumbing matters).
TINY_DEFAULTS = {"coarse_steps": 4, "coarse_grid_size": 32, "refine_steps": 4, "mesh_resolution": 64,
                 "texture_size": 128, "face_budget": 2000}
FULL_DEFAULTS = {"coarse_steps": 64, "coarse_grid_size": 128, "refine_steps": 75, "mesh_resolution": 256,
                 "texture_size": 1024, "face_budget": DEFAULT_FACE_BUDGET}


def tiny_cache_dir() -> Path:
    """Where `--tiny` keeps its tiny models (``$SHARPIT_CACHE`` or ``~/.cache/sharpit``)."""
    base = os.environ.get("SHARPIT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "sharpit")
    return Path(base) / "tiny-models"


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Output, model, device and refinement flags shared by both commands."""
    from sharpit.coarse import COARSE_RENDER_MODES, DEFAULT_COARSE_RENDER
    from sharpit.pipeline import DEFAULT_MODELS

    parser.add_argument("--out", required=True, help="output folder (one sub-folder per item in batches)")
    parser.add_argument("--seed", type=int, default=0, help="seed; batch item i uses seed + i")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--tiny", action="store_true",
                        help="random tiny models, offline, in seconds: a smoke test of the whole chain")
    parser.add_argument("--textured", action="store_true", help="bake a UV texture map into the GLB")
    parser.add_argument("--negative-prompt", default=None)
    parser.add_argument("--refine-steps", type=int, default=None, help="refiner steps (75)")
    parser.add_argument("--guidance-scale", type=float, default=4.0, help="refiner CFG scale")
    parser.add_argument("--strength", type=float, default=1.0, help="SDEdit strength in (0, 1]")
    parser.add_argument("--coarse-grid-size", type=int, default=None, help="coarse marching-cubes grid (128)")
    parser.add_argument("--coarse-render-mode", choices=COARSE_RENDER_MODES, default=DEFAULT_COARSE_RENDER.mode,
                        help="render the coarse object's mesh, or its NeRF (Shap-E latents only), into the "
                             f"refiner's input views ({DEFAULT_COARSE_RENDER.mode}, as training pairs)")
    parser.add_argument("--coarse-supersample", type=int, default=DEFAULT_COARSE_RENDER.supersample,
                        help="anti-aliasing of the coarse views: render N times larger and average; 1 = off "
                             f"({DEFAULT_COARSE_RENDER.supersample})")
    parser.add_argument("--mesh-resolution", type=int, default=None, help="reconstruction grid (256)")
    parser.add_argument("--texture-size", type=int, default=None, help="texture map size (1024)")
    parser.add_argument("--face-budget", type=int, default=None,
                        help="faces kept before UV unwrapping with --textured (20000)")
    models = parser.add_argument_group("models (hub ids or local paths)")
    models.add_argument("--shap-e", default=DEFAULT_MODELS["shap_e"])
    models.add_argument("--zero123plus", default=DEFAULT_MODELS["zero123plus"])
    models.add_argument("--sharpit-unet", default=DEFAULT_MODELS["sharpit_unet"])
    models.add_argument("--refiner", default=None, help="a saved SharpItPipeline folder (replaces the two above)")
    models.add_argument("--instantmesh", default=DEFAULT_MODELS["instantmesh"])
    models.add_argument("--instantmesh-variant", default=DEFAULT_MODELS["instantmesh_variant"],
                        choices=["base", "large"])
    device = parser.add_argument_group("device")
    device.add_argument("--dtype", choices=["auto", "fp16", "bf16", "fp32"], default="auto")
    device.add_argument("--offload", action="store_true", help="keep one stage on the GPU at a time")


def fill_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Fill unset step/grid flags from the tiny or full profile."""
    profile = TINY_DEFAULTS if args.tiny else FULL_DEFAULTS
    for key, value in profile.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    return args


def coarse_render_options(args: argparse.Namespace):
    """The :class:`~sharpit.coarse.CoarseRenderOptions` of ``--coarse-render-mode`` and
    ``--coarse-supersample`` (InputError, exit code 2, for a bad value)."""
    from sharpit.coarse import CoarseRenderOptions

    return CoarseRenderOptions(mode=args.coarse_render_mode, supersample=args.coarse_supersample)


def read_prompts(path: str) -> List[str]:
    """One prompt per line; blank lines and lines starting with '#' are skipped."""
    p = Path(path)
    if not p.is_file():
        raise AssetNotFoundError(p, "prompt file not found")
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise InputError(f"{p}: the prompt file is not UTF-8 text") from exc
    prompts = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise InputError(f"{p}: the prompt file holds no prompts (one per line)")
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


def plan_items(prompts: List[str], out: Path, seed: int, batch: bool) -> List[Item]:
    if not batch:
        return [Item(0, prompts[0], seed, out)]
    return [Item(i, p, seed + i, out / f"{i:05d}_{slug(p)}") for i, p in enumerate(prompts)]


def is_done(item: Item) -> bool:
    """A finished item has its metadata.json (result folders are written atomically)."""
    return (item.out / "metadata.json").is_file()


def clear_partial(item: Item) -> None:
    """Remove what an interrupted run left half-written for this item."""
    for leftover in item.out.parent.glob(f".{item.out.name}.*.partial"):
        shutil.rmtree(leftover, ignore_errors=True)


def load_pipeline(args: argparse.Namespace, device, need_coarse: bool = True):
    import torch

    from sharpit.pipeline import SharpIt3DPipeline

    if args.tiny:
        return SharpIt3DPipeline.from_tiny(tiny_cache_dir(), device=device)
    dtype = {"auto": None, "fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    return SharpIt3DPipeline.from_pretrained(
        shap_e=args.shap_e if need_coarse else None, zero123plus=args.zero123plus,
        sharpit_unet=args.sharpit_unet, refiner=args.refiner, instantmesh=args.instantmesh,
        instantmesh_variant=args.instantmesh_variant, device=device, torch_dtype=dtype, offload=args.offload)


def run_items(items: List[Item], args: argparse.Namespace, run_one: Callable, need_coarse: bool = True,
              batch: bool = False) -> int:
    """Split ``items`` across the processes of a torchrun/accelerate launch, skip finished ones,
    and save each result atomically. ``run_one(pipe, item)`` returns a SharpItResult."""
    from accelerate import PartialState

    import torch

    state = PartialState(cpu=not torch.cuda.is_available())
    if args.tiny:
        # transformers only writes from the main process of a distributed run: build the tiny
        # models there, the other ranks wait and then load them.
        from sharpit.testing.pipeline import save_tiny_models

        with state.main_process_first():
            save_tiny_models(tiny_cache_dir())
    with state.split_between_processes(items) as mine:
        mine = list(mine)
    todo = []
    for item in mine:
        if is_done(item) and not args.overwrite:
            if not batch:
                raise SharpItError(f"{item.out}: already holds a result; pass --overwrite or choose another --out")
            print(f"[rank {state.process_index}] skip (done): {item.out}", flush=True)
            continue
        todo.append(item)
    if not todo:
        return 0
    pipe = load_pipeline(args, state.device, need_coarse)
    for item in todo:
        clear_partial(item)
        print(f"[rank {state.process_index}] {item.index}: {item.prompt!r} -> {item.out}", flush=True)
        result = run_one(pipe, item)
        result.save(item.out, overwrite=args.overwrite or batch)
        t = result.timings
        print(f"[rank {state.process_index}] done in {t['total']:.1f}s "
              f"({', '.join(f'{k} {v:.1f}s' for k, v in t.items() if k != 'total')})", flush=True)
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
