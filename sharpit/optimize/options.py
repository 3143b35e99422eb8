"""Settings of the texture optimisation (:func:`sharpit.optimize.refine_texture`), validated when made.

Every choice that no public code settles for a *refinement* prior is a named field here, with the
evidence it rests on; the defaults are assumptions until the released weights can be measured
with the evaluation harness.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Dict, Optional

from ..errors import ConfigError

if TYPE_CHECKING:
    import torch

__all__ = ["TextureOptimizeOptions", "TIMESTEP_SCHEDULES", "TARGETS", "timestep_range"]

#: How the diffusion timestep range changes over the steps (see :func:`timestep_range`).
TIMESTEP_SCHEDULES = ("anneal", "uniform")
#: What the prior's prediction becomes: ``"sds"`` a score-distillation gradient on the grid
#: latent, ``"sdedit"`` an image target (see :mod:`sharpit.optimize.sds`).
TARGETS = ("sds", "sdedit")


@dataclass(frozen=True)
class TextureOptimizeOptions:
    """How :func:`~sharpit.optimize.refine_texture` optimises a texture under the refiner prior.

    Attributes:
        guidance_scale: classifier-free guidance of the prior (``<= 1``: no CFG, one UNet batch).
            DreamFusion's SDS uses 100 and MVDream's multi-view SDS 50 (with CFG rescaling), both
            with text-only priors that need strong mode seeking; the refiner is conditioned on the
            coarse grid too. 7.5 is an assumption between the refiner's own 4.0 and those.
        timestep_schedule: ``"anneal"`` (default): ``t ~ U(t_min, t_max(i))`` with ``t_max``
            shrinking linearly from :attr:`t_max` to :attr:`t_max_end` over the run (coarse to
            fine, as DreamTime/HiFA anneal and Magic3D's fine stage restricts ``t`` to <= 0.5);
            ``"uniform"``: DreamFusion's fixed ``U(t_min, t_max)``.
        t_min, t_max, t_max_end: fractions of the training timesteps (1000). A refinement starts
            from a good texture, so the range starts at 0.6 rather than DreamFusion's 0.98.
        learning_rate: Adam's step on the texels (colours in [0, 1], clamped after each step).
        rig_rotations: rig azimuth offsets sampled each step, evenly spaced over the rig's
            120-degree period (:func:`~sharpit.cameras.rotated_zero123plus_cameras`); None: 4 when
            the condition can be rendered at any cameras (a callable), else 1 (a fixed coarse grid
            only matches the canonical rig). Each offset's rasterisation and condition posterior
            are computed once and kept.
        supersample: samples per pixel side of the rendered views (2, as the coarse renders).
        texture_size: side of the texture laid out (``"pairs"`` atlas) for a mesh without one.
        target: ``"sds"`` (default) or ``"sdedit"`` (:data:`TARGETS`).
        sdedit_steps: DDIM steps of each SDEdit denoising (``target="sdedit"`` only).
        save_every: with a ``state_path``, steps between saved states (the last step always saves).
        background: grey level of the rendered views' background (white, as Sharp-It's grids).
    """

    guidance_scale: float = 7.5
    timestep_schedule: str = "anneal"
    t_min: float = 0.02
    t_max: float = 0.6
    t_max_end: float = 0.2
    learning_rate: float = 0.02
    rig_rotations: Optional[int] = None
    supersample: int = 2
    texture_size: int = 1024
    target: str = "sds"
    sdedit_steps: int = 4
    save_every: int = 50
    background: float = 1.0

    def __post_init__(self):
        def number(name, lo, hi):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or not lo <= value <= hi:
                raise ConfigError(f"{name} must be a number in [{lo}, {hi}], got {value!r}")

        def integer(name, lo):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise ConfigError(f"{name} must be an integer >= {lo}, got {value!r}")

        number("guidance_scale", 0.0, 1000.0)
        number("t_min", 0.0, 1.0)
        number("t_max", 0.0, 1.0)
        number("t_max_end", 0.0, 1.0)
        number("learning_rate", 1e-8, 100.0)
        number("background", 0.0, 1.0)
        if self.timestep_schedule not in TIMESTEP_SCHEDULES:
            raise ConfigError(f"timestep_schedule must be one of {TIMESTEP_SCHEDULES}, got {self.timestep_schedule!r}")
        if self.target not in TARGETS:
            raise ConfigError(f"target must be one of {TARGETS}, got {self.target!r}")
        if not self.t_min < min(self.t_max, self.t_max_end):
            raise ConfigError(f"need t_min < t_max and t_min < t_max_end, got t_min={self.t_min}, "
                              f"t_max={self.t_max}, t_max_end={self.t_max_end}")
        if self.rig_rotations is not None:
            integer("rig_rotations", 1)
        integer("supersample", 1)
        integer("texture_size", 8)
        integer("sdedit_steps", 1)
        integer("save_every", 1)

    def replace(self, **changes) -> "TextureOptimizeOptions":
        """A copy with ``changes`` applied (and validated)."""
        return replace(self, **changes)

    def to_dict(self) -> Dict:
        return asdict(self)


def timestep_range(options: TextureOptimizeOptions, step: int, steps: int, num_train_timesteps: int):
    """``(lo, hi)`` integer training timesteps sampled from at ``step`` (0-based) of ``steps``.

    ``"uniform"``: ``[t_min, t_max] * T``; ``"anneal"``: the upper end moves linearly from
    ``t_max * T`` at step 0 to ``t_max_end * T`` at the last step.
    """
    hi = options.t_max
    if options.timestep_schedule == "anneal" and steps > 1:
        hi = options.t_max + (options.t_max_end - options.t_max) * step / (steps - 1)
    lo_t = max(0, int(round(options.t_min * num_train_timesteps)))
    hi_t = min(num_train_timesteps - 1, max(lo_t, int(round(hi * num_train_timesteps))))
    return lo_t, hi_t


def sample_timestep(options: TextureOptimizeOptions, step: int, steps: int, num_train_timesteps: int,
                    generator: Optional[torch.Generator]) -> int:
    """One integer timestep drawn uniformly from :func:`timestep_range` with ``generator``."""
    import torch

    lo, hi = timestep_range(options, step, steps, num_train_timesteps)
    return int(torch.randint(lo, hi + 1, (1,), generator=generator))
