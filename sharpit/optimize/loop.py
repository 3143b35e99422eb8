"""The texture optimisation loop: :func:`refine_texture`.

Each step (random draws from one CPU generator, in this order: rig offset, timestep, latent
noise, then inside the encoders the render's posterior sample, the condition's and the null
condition's):

1. pick a rig offset (:func:`~sharpit.cameras.rotated_zero123plus_cameras`) and a timestep
   (:func:`~sharpit.optimize.options.sample_timestep`);
2. render the six 320x320 views of the texture differentiably
   (:func:`~sharpit.render.render_texture`; the rasterisation of each offset is computed once) and
   tile them into the 3x2 grid (:func:`~sharpit.grid.views_to_grid`);
3. SDS: encode the grid with the refiner's VAE (with gradient), noise it, ask the frozen UNet for
   the guided noise given the coarse grid's condition latents, inject ``w(t)(eps_hat - eps)``
   (:class:`~sharpit.optimize.sds.RefinerPrior`); or SDEdit: an image target from a few denoising
   steps, pixel MSE;
4. one Adam step on the texels, then a clamp to [0, 1].

Peak memory (what scales with what): the refiner's weights (UNet 3.5 GB, VAE 0.3 GB, text encoder
1.3 GB in float32; half in float16); the UNet forward of the CFG batch (2 x 4 x 120 x 80 latents,
no graph kept: ``no_grad``); the VAE encoder's activations kept for its backward, which dominate
(they scale with the grid's pixels: 960 x 640 x 128 channels at full resolution, about 1.5 GB in
float32 for the whole encoder; :meth:`SharpItRefinePipeline.enable_vae_tiling` does not apply to
the backward); the render's graph (about 30 bytes per covered sample, tens of MB); the cached
rasterisations (16 bytes per covered sample, about 11 MB per rig offset at supersample 2) and
condition posteriors (300 KB per offset); Adam's two moments (2 x the texture: 24 MB at 1024^2).
Nothing grows with the number of steps (the per-step statistics are a few numbers).

Resuming: with ``state_path``, the texture, Adam's moments, the generator's state and the
statistics are written atomically every ``options.save_every`` steps and after the last; a run
started again with the same inputs continues from there and ends with the same texture as an
uninterrupted run. A state written for other inputs (mesh, text, seed, steps, options, the coarse
condition, or another refiner: :func:`_model_identity`) is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Union

import numpy as np
import torch
from PIL import Image

from ..atomic import atomic_path
from ..cameras import rotated_zero123plus_cameras
from ..errors import InputError
from ..grid import GRID_HEIGHT, GRID_WIDTH, views_to_grid
from ..mesh import Mesh
from ..refine.conditioning import NULL_PROMPT
from ..render import rasterize_texture_coords, render_texture
from .options import TextureOptimizeOptions, sample_timestep
from .sds import RefinerPrior
from .texture import project_texture, uv_textured_mesh

__all__ = ["refine_texture", "TextureRefineResult", "RIG_PERIOD_DEG", "STATE_VERSION"]

#: The Zero123++ v1.2 rig maps onto itself (views permuted) when turned by this many degrees.
RIG_PERIOD_DEG = 120.0
#: Format version of saved optimisation states.
STATE_VERSION = 1

Condition = Union[torch.Tensor, Image.Image, Callable]


@dataclass
class TextureRefineResult:
    """What :func:`refine_texture` returns.

    Attributes:
        mesh: the textured mesh: the input's vertices and faces (or their "pairs" layout: 3F
            vertices) with ``uvs`` and the optimised (T, T, 3) ``texture`` in [0, 1]; the input
            mesh itself when ``steps == 0``.
        stats: one dict per step run in this call or before a resume: ``step``, ``t`` (training
            timestep), ``rig_offset_deg``, ``residual`` (SDS: ``mean((x0_hat - z)^2)``, the prior's clean latent estimate against the render's latent;
            SDEdit: the mean squared pixel difference to the target).
        seconds: wall-clock time of this call's steps.
        resumed_from: the step a saved state let this call start at (0 when it started fresh).
    """

    mesh: Mesh
    stats: List[Dict] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from: int = 0


@contextlib.contextmanager
def _no_param_grads(*modules):
    """Frozen weights: no gradients are computed for the parameters of ``modules`` inside."""
    params = [p for m in modules for p in m.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


def _check_grid(grid) -> torch.Tensor:
    """One (1, 3, 960, 640) float32 coarse grid in [0, 1]; no silent resizing."""
    from ..refine import coerce_condition

    if callable(getattr(grid, "grid", None)):
        grid = grid.grid()
    if isinstance(grid, Image.Image):
        h, w = grid.size[1], grid.size[0]
    elif isinstance(grid, (np.ndarray, torch.Tensor)) and grid.ndim >= 2:
        h, w = (grid.shape[0], grid.shape[1]) if isinstance(grid, np.ndarray) else tuple(grid.shape[-2:])
    else:
        raise InputError(f"the coarse condition must be a 3x2 grid (PIL image, array or tensor), a "
                         f"MultiViewRender, or a function of cameras returning one; got {type(grid).__name__}")
    if (h, w) != (GRID_HEIGHT, GRID_WIDTH):
        raise InputError(f"the coarse grid must be {GRID_HEIGHT}x{GRID_WIDTH} (six 320x320 views, 3 high and "
                         f"2 wide), as the views the texture is rendered to; got {h}x{w}")
    out = coerce_condition(grid)
    if out.shape[0] != 1:
        raise InputError(f"refine one mesh at a time: got {out.shape[0]} coarse grids")
    return out


def _check_steps(steps) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise InputError(f"steps must be an integer >= 0 (0 keeps the mesh as it is), got {steps!r}")
    return steps


#: Tensors at each end of the UNet's and the VAE's state dicts whose sums enter the resume
#: fingerprint (:func:`_model_identity`).
_CHECKSUM_TENSORS = 4


def _model_identity(refiner) -> str:
    """The refiner as the resume fingerprint sees it: class and config of its UNet, VAE and
    scheduler (without diffusers' private ``_`` keys such as the folder it was loaded from) and a
    cheap weight checksum: shape, sum and absolute sum (float64, 6 significant digits, so the
    same weights on another device agree) of the first and last :data:`_CHECKSUM_TENSORS`
    state-dict tensors of the UNet and the VAE. Another checkpoint (fine-tuned further, another
    run) differs in all of them; reading them costs a few tensor sums, not a pass over 3.5 GB."""
    parts = []
    for name in ("unet", "vae", "scheduler"):
        module = getattr(refiner, name)
        config = sorted((k, repr(v)) for k, v in dict(module.config).items() if not str(k).startswith("_"))
        parts.append(repr((name, type(module).__name__, config)))
    for name in ("unet", "vae"):
        tensors = list(getattr(refiner, name).state_dict().values())
        for t in tensors[:_CHECKSUM_TENSORS] + tensors[-_CHECKSUM_TENSORS:]:
            t = t.detach().double()
            parts.append(f"{name} {tuple(t.shape)} {float(t.sum()):.6g} {float(t.abs().sum()):.6g}")
    return "\n".join(parts)


def _fingerprint(mesh: Mesh, prompt: str, negative_prompt: str, steps: int, seed: int,
                 options: TextureOptimizeOptions, condition: torch.Tensor, refiner) -> str:
    """What a saved state must match to be resumed: the mesh, its initial texture, the text, the
    step count, the seed, the options, the coarse condition grid (the fixed one, or the canonical
    rig's render of a condition function) and the refiner (:func:`_model_identity`)."""
    h = hashlib.sha256()
    for t in (mesh.vertices, mesh.faces, mesh.uvs, mesh.texture, condition):
        if t is not None:
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    h.update(repr((prompt, negative_prompt, steps, seed, sorted(options.to_dict().items()))).encode())
    h.update(_model_identity(refiner).encode())
    return h.hexdigest()


def _load_state(path: Path, fingerprint: str) -> Optional[Dict]:
    from ..safe_load import load_checkpoint

    if not path.exists():
        return None
    state = load_checkpoint(path)
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise InputError(f"{path} is not a sharpit texture-optimisation state (version {STATE_VERSION}); "
                         "delete it or pass another state_path")
    if state.get("fingerprint") != fingerprint:
        raise InputError(f"the state in {path} was saved by a run with another mesh, prompt, seed, step count, "
                         "options, coarse condition or refiner; delete it to start over, or pass another state_path")
    return state


def _save_state(path: Path, fingerprint: str, step: int, texture, optimizer, rng, stats) -> None:
    state = {"version": STATE_VERSION, "fingerprint": fingerprint, "step": step, "texture": texture.detach().cpu(),
             "optimizer": optimizer.state_dict(), "rng": rng.get_state(), "stats": stats}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def refine_texture(refiner, mesh: Mesh, condition: Condition, prompt: str, steps: int, *,
                   negative_prompt: Optional[str] = None, options: Optional[TextureOptimizeOptions] = None,
                   seed: Optional[int] = None, generator: Optional[torch.Generator] = None,
                   state_path: Union[str, os.PathLike, None] = None,
                   callback_on_step_end: Optional[Callable[[int, Dict], None]] = None) -> TextureRefineResult:
    """Optimise ``mesh``'s UV texture with multi-view SDS under the frozen refiner prior.

    The entry point for ``SharpIt3DPipeline(optimize_steps=N)``: after reconstruction call
    ``refine_texture(pipe.refiner, mesh, condition, prompt, N, seed=..., negative_prompt=...)``.

    Args:
        refiner: a :class:`~sharpit.refine.SharpItRefinePipeline` in concat mode (Sharp-It's); its
            progress-bar configuration and execution device apply.
        mesh: the mesh to texture, normalised as the coarse object was (the views must show the
            same object at the same place; sharpit world frame, radius 0.5). A mesh without a
            texture is laid out in the "pairs" atlas first (:func:`~sharpit.optimize.texture.uv_textured_mesh`).
        condition: the coarse views the refiner is conditioned on: a 960x640 3x2 grid (PIL, array,
            (3, H, W) / (1, 3, H, W) tensor in [0, 1], or a ``MultiViewRender``) for the canonical
            rig only, or a function ``cameras -> grid`` that renders the coarse object at any
            :class:`~sharpit.cameras.CameraBatch` (then the rig is also turned, see
            ``options.rig_rotations``), e.g. ``lambda cams: render_views(coarse_mesh, cams,
            supersample=2, shading=coarse_shading(coarse_mesh))``.
        prompt: the text of the conditional branch; negative_prompt: of the unconditional one
            (None: :data:`sharpit.refine.NULL_PROMPT`, the refiner's own).
        steps: optimisation steps (>= 0); 0 returns ``mesh`` unchanged.
        options: :class:`~sharpit.optimize.options.TextureOptimizeOptions` (defaults when None).
        seed / generator: randomness; a ``generator`` gives the seed (one draw). Neither: seed 0.
        state_path: a file to save the state to and resume from (see the module docstring).
        callback_on_step_end: ``f(step, stats)`` after each step (``stats`` as in :attr:`TextureRefineResult.stats`).
    Returns:
        :class:`TextureRefineResult`.
    Raises:
        InputError: bad steps, seed, prompt or grid size, a state saved for other inputs, or a
            texture size too small for the mesh's faces; ConfigError: a refiner of the wrong kind
            or bad options; MeshError: an invalid mesh.
    """
    steps = _check_steps(steps)
    options = options if options is not None else TextureOptimizeOptions()
    if not isinstance(options, TextureOptimizeOptions):
        raise InputError(f"options must be a TextureOptimizeOptions, got {type(options).__name__}")
    if not isinstance(prompt, str) or (negative_prompt is not None and not isinstance(negative_prompt, str)):
        raise InputError("prompt and negative_prompt must be strings")
    if seed is not None and generator is not None:
        raise InputError("pass either seed or generator, not both")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63):
        raise InputError(f"seed must be an integer in [0, 2**63), got {seed!r}")
    fixed_grid = None if callable(condition) and not isinstance(condition, (torch.Tensor, Image.Image)) \
        and not callable(getattr(condition, "grid", None)) else _check_grid(condition)
    negative_prompt = NULL_PROMPT if negative_prompt is None else negative_prompt
    prior = RefinerPrior(refiner, prompt, negative_prompt, options.guidance_scale)
    if steps == 0:
        return TextureRefineResult(mesh=mesh)
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator)) if generator is not None else 0
    rotations = options.rig_rotations or (1 if fixed_grid is not None else 4)
    if fixed_grid is not None and rotations > 1:
        raise InputError(f"rig_rotations={rotations} turns the cameras away from the fixed coarse grid's; pass "
                         "the condition as a function of cameras (see refine_texture's docstring) or use 1")

    device = prior.device
    textured = uv_textured_mesh(mesh, options.texture_size).to(device)
    offsets = [RIG_PERIOD_DEG * k / rotations for k in range(rotations)]
    # the canonical rig's condition (a condition function's render of it is fingerprinted too)
    grids = {0: fixed_grid if fixed_grid is not None else
             _check_grid(condition(rotated_zero123plus_cameras(offsets[0]).to(device)))}
    fingerprint = _fingerprint(textured, prompt, negative_prompt, steps, seed, options, grids[0], refiner)
    rng = torch.Generator("cpu").manual_seed(seed)
    texture = textured.texture.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([texture], lr=options.learning_rate)
    stats: List[Dict] = []
    start = 0
    path = Path(state_path) if state_path is not None else None
    state = _load_state(path, fingerprint) if path is not None else None
    if state is not None:
        with torch.no_grad():
            texture.copy_(state["texture"].to(device))
        optimizer.load_state_dict(state["optimizer"])
        rng.set_state(state["rng"])
        stats, start = list(state["stats"]), int(state["step"])

    fragments: Dict[int, object] = {}
    posteriors: Dict[int, torch.Tensor] = {}

    def rig(k: int):
        if k not in fragments:
            cams = rotated_zero123plus_cameras(offsets[k]).to(device)
            fragments[k] = rasterize_texture_coords(textured, cams, supersample=options.supersample)
            grid = grids.pop(k) if k in grids else _check_grid(condition(cams))
            posteriors[k] = prior.condition_posterior(grid.to(device))
        return fragments[k], posteriors[k]

    began = time.perf_counter()
    vae = refiner.vae
    with _no_param_grads(vae, refiner.unet), \
            refiner.labelled_progress_bar(steps - start, "texture optimisation (SDS)") as progress:
        for step in range(start, steps):
            k = int(torch.randint(0, rotations, (1,), generator=rng))
            t = sample_timestep(options, step, steps, prior.num_train_timesteps, rng)
            frags, posterior = rig(k)
            shape = (1, vae.config.latent_channels, GRID_HEIGHT // 8, GRID_WIDTH // 8)
            noise = torch.randn(shape, generator=rng).to(device)
            views = render_texture(frags, texture, options.background)
            grid = views_to_grid(views)[None]
            if options.target == "sds":
                latents = prior.encode(grid, rng)
                loss, residual = prior.sds_loss(latents, t, noise, prior.condition_latents(posterior, rng))
            else:
                with torch.no_grad():
                    latents = prior.encode(grid, rng)
                target = prior.sdedit_target(latents, t, noise, prior.condition_latents(posterior, rng),
                                             options.sdedit_steps)
                loss, residual = prior.sdedit_loss(grid, target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            project_texture(texture)
            record = {"step": step, "t": t, "rig_offset_deg": offsets[k], "residual": residual}
            stats.append(record)
            if path is not None and ((step + 1) % options.save_every == 0 or step + 1 == steps):
                _save_state(path, fingerprint, step + 1, texture, optimizer, rng, stats)
            if callback_on_step_end is not None:
                callback_on_step_end(step, record)
            progress.update()
    out = Mesh(textured.vertices.to(mesh.device), textured.faces.to(mesh.device), uvs=textured.uvs.to(mesh.device),
               texture=texture.detach().to(mesh.device), source=mesh.source)
    return TextureRefineResult(mesh=out, stats=stats, seconds=time.perf_counter() - began, resumed_from=start)
