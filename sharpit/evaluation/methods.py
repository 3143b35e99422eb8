"""The refinement methods the harness compares, all run the same way on the same coarse input.

Every method starts from one test object's Shap-E latent (the paper's coarse input is the object
passed through Shap-E's encoder and decoder; Cap3D publishes such latents for Objaverse) and its
caption, and returns a 3x2 grid of the six Zero123++ v1.2 views plus a mesh:

* ``shap_e``: the coarse object itself: its STF mesh and the grid the refiners receive
  (:meth:`~sharpit.coarse.ShapEGenerator.render_views` with the pipeline's
  :class:`~sharpit.coarse.CoarseRenderOptions`, as ``training/prepare_pairs.py`` renders coarse grids);
* ``zero123plus_sdedit``: stock Zero123++ v1.2 (:meth:`SharpItRefinePipeline.from_zero123plus` with
  ``unet=None``: reference attention, CLIP global embedding, grey null condition) conditioned on the
  coarse object's front view (azimuth 0, elevation 0, :data:`FRONT_VIEW`), starting from the coarse
  grid noised to ``strength`` (:data:`SDEDIT_STRENGTH`; SDEdit), then the same reconstructor;
* ``sharpit``: :class:`~sharpit.pipeline.SharpIt3DPipeline` (concat refiner) on the latent
  (:meth:`~sharpit.pipeline.SharpIt3DPipeline.edit` with the latent: coarse mesh, coarse views,
  refiner, reconstructor);
* ``folder:PATH``: a saved :class:`SharpIt3DPipeline` folder, or a saved
  :class:`~sharpit.refine.SharpItRefinePipeline` folder (a training run's output) put in place of
  the refiner of ``sharpit``; run like ``sharpit``.

The paper does not publish its SDEdit strength or condition view for the Zero123++ baseline; both
are named settings recorded in each run's ``config.json``.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from ..errors import InputError

__all__ = ["BUILTIN_METHODS", "SDEDIT_STRENGTH", "FRONT_VIEW", "MethodSpec", "MethodOutput", "parse_methods",
           "MethodRunner", "measure"]

BUILTIN_METHODS = ("shap_e", "zero123plus_sdedit", "sharpit")
#: SDEdit strength of the Zero123++ baseline: noise the coarse grid to this level (the refine
#: pipeline's documented example; unpublished in the paper).
SDEDIT_STRENGTH = 0.6
#: (azimuth, elevation) in degrees of the coarse view Zero123++ is conditioned on: the front
#: (+x), level, at the v1.2 distance and field of view; Zero123++ v1.2's outputs sit at fixed
#: absolute elevations, so a level input view is its canonical use.
FRONT_VIEW = (0.0, 0.0)


@dataclass(frozen=True)
class MethodSpec:
    """A method as named on the command line: ``name`` is the label in reports, ``key`` a file-safe
    name, ``path`` the folder of a ``folder:`` method."""

    name: str
    key: str
    path: Optional[str] = None


def parse_methods(text: str) -> List[MethodSpec]:
    """``shap_e,zero123plus_sdedit,sharpit,folder:runs/mine`` -> specs, in order, without repeats.

    Raises:
        InputError: an empty list, an unknown name (the message lists the known ones), a
            ``folder:`` without a path or whose path is not a saved pipeline folder.
    """
    specs: List[MethodSpec] = []
    names = [n.strip() for n in str(text).split(",") if n.strip()]
    if not names:
        raise InputError(f"--methods is empty; name one or more of {', '.join(BUILTIN_METHODS)}, folder:PATH")
    for name in names:
        if name.startswith("folder:"):
            path = Path(name[len("folder:"):])
            if not str(path) or str(path) == ".":
                raise InputError("--methods folder: needs a path, e.g. folder:outputs/my-run/pipeline")
            index = path / "model_index.json"
            if not index.is_file():
                raise InputError(f"--methods {name}: {path} is not a saved pipeline folder (no model_index.json); "
                                 "pass a SharpIt3DPipeline or SharpItRefinePipeline folder")
            cls = json.loads(index.read_text()).get("_class_name")
            if cls not in ("SharpIt3DPipeline", "SharpItRefinePipeline"):
                raise InputError(f"--methods {name}: {index} holds a {cls}, not a SharpIt3DPipeline or "
                                 "SharpItRefinePipeline")
            key = "folder_" + (re.sub(r"[^A-Za-z0-9]+", "_", path.resolve().name).strip("_") or "pipeline")
            spec = MethodSpec(name, key, str(path))
        elif name in BUILTIN_METHODS:
            spec = MethodSpec(name, name)
        else:
            raise InputError(f"--methods: unknown method {name!r}; known: {', '.join(BUILTIN_METHODS)}, folder:PATH")
        if spec.key in [s.key for s in specs]:
            raise InputError(f"--methods names {name!r} twice (or two folders with the same name)")
        specs.append(spec)
    return specs


@dataclass
class MethodOutput:
    """What a method made for one object: ``grid`` (3, 3t, 2t) float in [0, 1] on the CPU (the six
    views, row-major), ``mesh`` in the sharpit world frame, ``seconds`` (wall time, CUDA
    synchronised), ``peak_memory_bytes`` and ``memory_kind`` (what that peak is; see :func:`measure`)."""

    grid: torch.Tensor
    mesh: Any
    seconds: float = 0.0
    peak_memory_bytes: int = 0
    memory_kind: str = ""


@dataclass
class _Measure:
    seconds: float = 0.0
    peak_memory_bytes: int = 0
    memory_kind: str = ""


class measure:
    """Context manager: wall time and peak memory of the block on ``device``.

    On CUDA the peak is ``torch.cuda.max_memory_allocated`` after resetting it on entry (this
    block's own peak); on the CPU it is the process's peak resident set size so far
    (``ru_maxrss``, which cannot be reset: an upper bound of this block's peak; kilobytes on Linux,
    bytes on macOS).
    """

    def __init__(self, device):
        self.device = torch.device(device)
        self.result = _Measure(memory_kind="cuda_max_allocated" if self.device.type == "cuda" else "cpu_max_rss")

    def __enter__(self) -> _Measure:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        self._start = time.perf_counter()
        return self.result

    def __exit__(self, *exc) -> None:
        import resource
        import sys

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.result.peak_memory_bytes = int(torch.cuda.max_memory_allocated(self.device))
        else:
            rss = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
            self.result.peak_memory_bytes = rss if sys.platform == "darwin" else rss * 1024
        self.result.seconds = time.perf_counter() - self._start


@dataclass
class MethodRunner:
    """Runs every method of a run on one object. ``base`` is the :class:`SharpIt3DPipeline` of
    ``sharpit`` (its Shap-E decodes the latents for every method, its reconstructor lifts the
    Zero123++ grids); ``zero123plus`` the stock Zero123++ refiner (for ``zero123plus_sdedit``);
    ``folders`` the pipelines of ``folder:`` methods by key; ``overrides`` generation options
    applied to every refiner call (``--tiny`` uses fewer steps)."""

    base: Any
    zero123plus: Any = None
    folders: Dict[str, Any] = field(default_factory=dict)
    overrides: Dict[str, Any] = field(default_factory=dict)
    strength: float = SDEDIT_STRENGTH

    @property
    def options(self):
        """The generation options of every method: ``base``'s defaults with ``overrides``."""
        return self.base.default_options.replace(**self.overrides)

    def coarse(self, latent: torch.Tensor):
        """The coarse mesh and grid of a latent ((1, W)), as every method sees them."""
        options, coarse = self.options, self.base.coarse
        latent = latent.to(coarse.device)
        mesh = coarse.to_mesh(latent, grid_size=options.coarse_grid_size)
        views = coarse.render_views(latent, mode=options.coarse_render.mode, grid_size=options.coarse_grid_size,
                                    supersample=options.coarse_render.supersample)
        return mesh, views

    def run(self, spec: MethodSpec, latent: torch.Tensor, caption: str, seed: int, device) -> MethodOutput:
        """Run ``spec`` on one object; time and peak memory cover the whole method, coarse stage included."""
        with measure(device) as m:
            if spec.name == "shap_e":
                mesh, views = self.coarse(latent)
                out = MethodOutput(views.grid().float().cpu(), mesh.to("cpu"))
            elif spec.name == "zero123plus_sdedit":
                out = self._zero123plus(latent, caption, seed)
            else:
                pipe = self.base if spec.name == "sharpit" else self.folders[spec.key]
                result = pipe.edit(latent, caption, seed=seed, **self.overrides)
                from ..grid import pil_to_tensor

                out = MethodOutput(pil_to_tensor(result.refined_grid), result.mesh)
        out.seconds, out.peak_memory_bytes, out.memory_kind = m.seconds, m.peak_memory_bytes, m.memory_kind
        return out

    def _zero123plus(self, latent: torch.Tensor, caption: str, seed: int) -> MethodOutput:
        from ..cameras import default_distance, orbit_cameras

        options, coarse = self.options, self.base.coarse
        _, views = self.coarse(latent)
        front = coarse.render_views(latent.to(coarse.device), cameras=orbit_cameras([FRONT_VIEW[0]], [FRONT_VIEW[1]],
                                                                                    default_distance()),
                                    mode=options.coarse_render.mode, grid_size=options.coarse_grid_size,
                                    supersample=options.coarse_render.supersample).images[0]
        device = self.zero123plus._execution_device
        generator = torch.Generator(device).manual_seed(int(seed))
        refined = self.zero123plus(front.float().cpu(), prompt=caption, init_grid=views.grid()[None].float(),
                                   strength=self.strength, num_inference_steps=options.refine_steps,
                                   guidance_scale=options.guidance_scale, negative_prompt=options.negative_prompt,
                                   generator=generator, output_type="pt").images
        mesh = self.base.reconstructor.reconstruct(refined, resolution=options.mesh_resolution)
        return MethodOutput(refined[0].float().cpu(), mesh.to("cpu"))
