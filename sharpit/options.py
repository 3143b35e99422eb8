"""Generation options of :class:`~sharpit.pipeline.SharpIt3DPipeline`, grouped once.

One frozen dataclass holds every knob of ``generate``/``edit`` with its default, validates each
value when it is made (before any model runs), and is what the command lines, the web app and the
pipeline's saved defaults (``model_index.json``, ``generation_defaults``) share:

>>> opts = GenerationOptions(refine_steps=30)          # the paper's settings, except 30 steps
>>> opts.replace(guidance_scale=3.0).refine_steps
30

A bad value raises :class:`OptionError`, which names the keyword (``option``), the value and the
allowed range; the command lines turn the keyword into their flag (``refine_steps`` ->
``--refine-steps``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional

from .coarse.edit_defaults import DEFAULT_EDIT_GUIDANCE, DEFAULT_EDIT_STRENGTH, DEFAULT_INVERSION_STEPS
from .coarse.render_options import DEFAULT_COARSE_RENDER, CoarseRenderOptions
from .errors import ConfigError, InputError
from .optimize.options import TextureOptimizeOptions

__all__ = ["GenerationOptions", "OptionError", "TINY_OPTIONS", "DEFAULT_FACE_BUDGET", "LATENT_EDIT_OPTIONS"]

#: Faces kept before UV unwrapping (:func:`sharpit.reconstruct.bake_texture`), so xatlas (CPU-only)
#: stays fast: measured on a 2-core CPU, about 0.4 s at 10k faces, 4 s at 20k and 47 s at 50k.
DEFAULT_FACE_BUDGET = 20000
#: UV layouts of baked textures (see :mod:`sharpit.reconstruct.texture`).
UV_LAYOUTS = ("pairs", "xatlas")
#: Where baked texture colours come from (see :class:`GenerationOptions`).
TEXTURE_SOURCES = ("views", "field")
#: Options that only act with ``textured=True``.
_TEXTURE_ONLY = ("texture_size", "face_budget", "uv_layout", "texture_source")
#: Options that only act in a latent-space edit (``edit(..., via="latent", source_prompt=...)``).
LATENT_EDIT_OPTIONS = ("latent_strength", "inversion_steps", "latent_guidance_scale")


class OptionError(InputError):
    """A generation option is out of range; ``option`` is its keyword (e.g. ``"refine_steps"``)."""

    def __init__(self, option: str, message: str):
        self.option = option
        self.detail = message
        super().__init__(f"{option} {message}")


def _int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise OptionError(name, f"must be an integer >= {low}, got {value!r}")
    return value


def _number(name: str, value, low: float, high: float = math.inf, low_open: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and (value > low if low_open else value >= low) and value <= high
    if not ok:
        span = f"in ({low}, {high}]" if low_open else (f">= {low}" if high == math.inf else f"in [{low}, {high}]")
        raise OptionError(name, f"must be a finite number {span}, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class GenerationOptions:
    """Every setting of one ``generate``/``edit`` call; defaults are the paper's and the official
    models' (Shap-E 64 steps at CFG 15, refiner 75 steps at CFG 4, InstantMesh grid 256).

    Attributes:
        coarse_steps: Shap-E sampling steps (Karras/Heun; each costs two prior calls).
        coarse_guidance_scale: Shap-E classifier-free guidance (0 or 1 disables it).
        coarse_grid_size: marching-cubes grid of the coarse Shap-E mesh.
        coarse_render: how the coarse object becomes the refiner's six input views
            (:class:`~sharpit.coarse.CoarseRenderOptions`, the setting training pairs use).
        negative_prompt: the refiner's unconditional prompt (None: the empty prompt).
        refine_steps: refiner denoising steps.
        guidance_scale: refiner classifier-free guidance scale (<= 1 disables guidance).
        strength: SDEdit strength in (0, 1]; 1 starts from pure noise, lower keeps more of the
            coarse grid.
        mesh_resolution: the reconstructor's density grid per axis.
        textured: bake a UV texture map (xatlas) instead of returning vertex colours.
        texture_size: side of the baked texture map, in pixels (with ``textured``).
        face_budget: faces kept before UV unwrapping (with ``textured``).
        uv_layout: "pairs" (fast, default) or "xatlas" (few seams, for painting) (with
            ``textured``; :mod:`sharpit.reconstruct.texture`).
        texture_source: "views" (default): texels the refined views see take their colours from
            them, the rest from the reconstructor's colour field; "field": the colour field only.
            Measured on a synthetic object, "views" renders 5.7 dB closer to the truth at novel
            views (``benchmarks/RESULTS.md``).
        latent_strength: how much of a latent edit is regenerated under the new prompt, in [0, 1]
            (edit-friendly DDPM inversion restarts at step ``int(inversion_steps * latent_strength)``;
            0 keeps the source latent, 1 regenerates from the inverted noise). Acts only in
            ``edit(..., via="latent", source_prompt=...)``. 0.64 is the inversion paper's code's
            default (Sharp-It publishes none).
        inversion_steps: DDPM steps of the inversion and of the regeneration (128, SPEC section 7), >= 2.
        latent_guidance_scale: Shap-E's classifier-free guidance while inverting (source prompt)
            and regenerating (new prompt) (12, SPEC section 7).
        optimize_steps: steps of multi-view score distillation of the result's texture under the
            refiner (:func:`sharpit.optimize.refine_texture`); 0 (default) keeps the
            feed-forward result. With steps the mesh is textured as ``textured=True`` makes it
            (``texture_size``, ``face_budget``, ``uv_layout``, ``texture_source``), and that
            texture is what the steps start from and optimise.
        optimize: how those steps run (:class:`~sharpit.optimize.TextureOptimizeOptions`, or a
            dict of its fields; its ``texture_size`` is unused here, the baked texture above is
            optimised); acts only with ``optimize_steps > 0``.
    Raises:
        OptionError: a value of the wrong type or out of range, naming its keyword.
    """

    coarse_steps: int = 64
    coarse_guidance_scale: float = 15.0
    coarse_grid_size: int = 128
    coarse_render: CoarseRenderOptions = field(default_factory=lambda: DEFAULT_COARSE_RENDER)
    negative_prompt: Optional[str] = None
    refine_steps: int = 75
    guidance_scale: float = 4.0
    strength: float = 1.0
    mesh_resolution: int = 256
    textured: bool = False
    texture_size: int = 1024
    face_budget: int = DEFAULT_FACE_BUDGET
    uv_layout: str = "pairs"
    texture_source: str = "views"
    latent_strength: float = DEFAULT_EDIT_STRENGTH
    inversion_steps: int = DEFAULT_INVERSION_STEPS
    latent_guidance_scale: float = DEFAULT_EDIT_GUIDANCE
    optimize_steps: int = 0
    optimize: TextureOptimizeOptions = field(default_factory=TextureOptimizeOptions)

    def __post_init__(self) -> None:
        _int("coarse_steps", self.coarse_steps, 1)
        _number("coarse_guidance_scale", self.coarse_guidance_scale, 0.0)
        _int("coarse_grid_size", self.coarse_grid_size, 8)
        render = self.coarse_render
        if isinstance(render, Mapping):
            object.__setattr__(self, "coarse_render", CoarseRenderOptions(**render))
        elif not isinstance(render, CoarseRenderOptions):
            raise OptionError("coarse_render", f"must be a sharpit.coarse.CoarseRenderOptions or a dict with 'mode' "
                                               f"and 'supersample', got {type(render).__name__}")
        if self.negative_prompt is not None and not isinstance(self.negative_prompt, str):
            raise OptionError("negative_prompt", f"must be a string or None, got {type(self.negative_prompt).__name__}")
        _int("refine_steps", self.refine_steps, 1)
        _number("guidance_scale", self.guidance_scale, 0.0)
        _number("strength", self.strength, 0.0, 1.0, low_open=True)
        _int("mesh_resolution", self.mesh_resolution, 8)
        if not isinstance(self.textured, bool):
            raise OptionError("textured", f"must be True or False, got {self.textured!r}")
        _int("texture_size", self.texture_size, 16)
        _int("face_budget", self.face_budget, 4)
        if self.uv_layout not in UV_LAYOUTS:
            raise OptionError("uv_layout", f"must be one of {UV_LAYOUTS}, got {self.uv_layout!r}")
        if self.texture_source not in TEXTURE_SOURCES:
            raise OptionError("texture_source", f"must be one of {TEXTURE_SOURCES}, got {self.texture_source!r}")
        _number("latent_strength", self.latent_strength, 0.0, 1.0)
        _int("inversion_steps", self.inversion_steps, 2)   # a DDPM of one step has no noise map to keep
        _number("latent_guidance_scale", self.latent_guidance_scale, 0.0)
        _int("optimize_steps", self.optimize_steps, 0)
        optimize = self.optimize
        if isinstance(optimize, Mapping):
            try:
                object.__setattr__(self, "optimize", TextureOptimizeOptions(**optimize))
            except TypeError as exc:
                raise OptionError("optimize", f"has an unknown field ({exc}); the fields are those of "
                                              "sharpit.optimize.TextureOptimizeOptions") from None
            except ConfigError as exc:
                raise OptionError("optimize", str(exc)) from None
        elif not isinstance(optimize, TextureOptimizeOptions):
            raise OptionError("optimize", f"must be a sharpit.optimize.TextureOptimizeOptions or a dict of its "
                                          f"fields, got {type(optimize).__name__}")
        for name in ("coarse_guidance_scale", "guidance_scale", "strength", "latent_strength",
                     "latent_guidance_scale"):
            object.__setattr__(self, name, float(getattr(self, name)))

    def replace(self, **overrides: Any) -> "GenerationOptions":
        """A copy with ``overrides`` applied (validated); unknown keywords raise :class:`OptionError`."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise OptionError(unknown[0], f"is not a generation option; the options are: {', '.join(sorted(names))}")
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> Dict[str, Any]:
        """JSON-serialisable form (``coarse_render`` as a dict), as saved and recorded in metadata."""
        data = dataclasses.asdict(self)
        data["coarse_render"] = self.coarse_render.to_dict()
        data["optimize"] = self.optimize.to_dict()
        return data

    def recorded(self, latent_edit: bool = False) -> Dict[str, Any]:
        """What a result records in its metadata (``parameters``): :meth:`to_dict`, with the
        settings that did not act set to None: the texture-only ones when ``textured`` is off
        and nothing is optimised, ``optimize`` when ``optimize_steps`` is 0, the
        latent-edit ones unless ``latent_edit`` (an edit in Shap-E latent space from a source prompt)."""
        data = self.to_dict()
        if not self.textured and self.optimize_steps == 0:
            data.update({name: None for name in _TEXTURE_ONLY})
        if self.optimize_steps == 0:
            data["optimize"] = None
        if not latent_edit:
            data.update({name: None for name in LATENT_EDIT_OPTIONS})
        return data

    @classmethod
    def from_dict(cls, data: Optional[Mapping[str, Any]]) -> "GenerationOptions":
        """Inverse of :meth:`to_dict`; missing keys take their defaults, unknown keys are refused."""
        return cls().replace(**dict(data or {}))


#: Small settings for smoke runs with tiny random models (``--tiny``, ``SharpIt3DPipeline.from_tiny``):
#: only the plumbing matters there, so every stage does as little work as it can while still running.
TINY_OPTIONS = GenerationOptions(coarse_steps=4, coarse_grid_size=32, refine_steps=4, mesh_resolution=64,
                                 texture_size=128, face_budget=2000, inversion_steps=4,
                                 optimize=TextureOptimizeOptions(supersample=1))
