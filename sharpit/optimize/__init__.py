"""Optimisation-based refinement: a mesh's texture optimised under the frozen Sharp-It refiner.

Multi-view score distillation (DreamFusion's SDS applied to all six views of the 3x2 grid at once,
as MVDream does with its multi-view prior), with the coarse grid as the refiner's condition and the
prompt as text. Entry point: :func:`refine_texture`; settings: :class:`TextureOptimizeOptions`.

Modules: :mod:`~sharpit.optimize.options` (settings and the timestep schedule),
:mod:`~sharpit.optimize.texture` (the texture parameterisation), :mod:`~sharpit.optimize.sds`
(the prior and its losses), :mod:`~sharpit.optimize.loop` (the loop, state, memory notes).
"""

from ..lazy import lazy_exports

__all__ = ["refine_texture", "TextureRefineResult", "TextureOptimizeOptions", "RefinerPrior", "TARGETS",
           "TIMESTEP_SCHEDULES", "timestep_range"]

#: Imported on first use, so ``sharpit.options`` can use the light settings class without the
#: renderer and diffusers.
_LAZY = {"refine_texture": ".loop", "TextureRefineResult": ".loop", "RefinerPrior": ".sds",
         "TextureOptimizeOptions": ".options", "TARGETS": ".options", "TIMESTEP_SCHEDULES": ".options",
         "timestep_range": ".options"}

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
