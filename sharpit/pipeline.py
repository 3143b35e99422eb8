"""SharpIt3DPipeline: text or a rough asset in, a detailed mesh out — the notebook API.

Stages (each one a component that can be used on its own):
    coarse       :class:`~sharpit.coarse.ShapEGenerator` (text -> Shap-E latent -> coarse mesh)
    render       the coarse object at the six Zero123++ v1.2 poses, as its mesh or (latents only)
                 its NeRF, anti-aliased: :class:`~sharpit.coarse.CoarseRenderOptions`, the same
                 setting that renders training pairs
    refine       :class:`~sharpit.refine.SharpItPipeline` (coarse grid + prompt -> sharp grid)
    reconstruct  :class:`~sharpit.reconstruct.InstantMeshReconstructor` (grid -> mesh)

The stages run one after another; with ``offload=True`` each stage's weights visit the GPU only
while it runs, so only one stage's weights are resident at a time.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
import warnings
from pathlib import Path
from typing import Dict, Iterator, Optional, Union

import torch

from .cameras import zero123plus_cameras
from .errors import AssetNotFoundError, InputError
from .grid import tensor_to_pil
from .mesh import Mesh, Similarity, normalize_mesh
from .coarse.render_options import DEFAULT_COARSE_RENDER, CoarseRenderOptions
from .coarse.shap_e import SHAP_E_HUB_ID
from .reconstruct.config import HUB_REPO as INSTANTMESH_HUB_REPO
from .reconstruct.texture import DEFAULT_FACE_BUDGET
from .refine.loading import SHARP_IT_UNET_ID, ZERO123PLUS_ID
from .result import SharpItResult

__all__ = ["SharpIt3DPipeline", "DEFAULT_MODELS"]

#: The released weights :meth:`SharpIt3DPipeline.from_pretrained` uses by default.
DEFAULT_MODELS = {
    "shap_e": SHAP_E_HUB_ID,
    "zero123plus": ZERO123PLUS_ID,
    "sharpit_unet": SHARP_IT_UNET_ID,
    "instantmesh": INSTANTMESH_HUB_REPO,
    "instantmesh_variant": "large",
}

_LATENT_SUFFIXES = (".safetensors", ".pt", ".pth")


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _load_reconstructor(source: str, variant: str, dtype: torch.dtype):
    """A folder saved with ``save_pretrained`` (``config.json``), else a released InstantMesh
    checkpoint (a ``.ckpt`` file, a folder holding it, or a hub id)."""
    from .reconstruct import InstantMeshReconstructor

    if (Path(source) / InstantMeshReconstructor.config_name).is_file():
        return InstantMeshReconstructor.from_pretrained(source, torch_dtype=dtype).eval()
    return InstantMeshReconstructor.from_instantmesh_checkpoint(source, variant=variant, torch_dtype=dtype)


class SharpIt3DPipeline:
    """The whole Sharp-It chain.

    Args:
        coarse: a :class:`~sharpit.coarse.ShapEGenerator`, or None when only :meth:`edit` of
            meshes is needed.
        refiner: a :class:`~sharpit.refine.SharpItPipeline`.
        reconstructor: an :class:`~sharpit.reconstruct.InstantMeshReconstructor`.
        device: where the stages run (CUDA when available).
        offload: keep weights on the CPU and move each stage to ``device`` only while it runs.
        models: the ids or paths the components came from (recorded in results' metadata).
    """

    def __init__(self, coarse, refiner, reconstructor, device=None, offload: bool = False,
                 models: Optional[Dict[str, str]] = None):
        self.coarse = coarse
        self.refiner = refiner
        self.reconstructor = reconstructor
        self.device = torch.device(device) if device is not None else _default_device()
        self.offload = bool(offload)
        self.models = dict(models or {})
        if self.device.type == "cpu":
            warnings.warn("sharpit is running on the CPU: expect minutes per asset with the full "
                          "models (a CUDA GPU takes seconds)", stacklevel=2)
        if not self.offload:
            for module in self._modules():
                module.to(self.device)

    def _modules(self):
        return [m for m in (self.coarse, self.refiner, self.reconstructor) if m is not None]

    # -- loading -------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, shap_e: Optional[str] = DEFAULT_MODELS["shap_e"],
                        zero123plus: str = DEFAULT_MODELS["zero123plus"],
                        sharpit_unet: str = DEFAULT_MODELS["sharpit_unet"],
                        refiner: Optional[str] = None,
                        instantmesh: str = DEFAULT_MODELS["instantmesh"],
                        instantmesh_variant: str = DEFAULT_MODELS["instantmesh_variant"],
                        device=None, torch_dtype: Optional[torch.dtype] = None,
                        offload: bool = False) -> "SharpIt3DPipeline":
        """Load every stage; each argument is a hub id or a local path.

        Args:
            shap_e: Shap-E in the diffusers layout (``openai/shap-e``); None skips the coarse
                stage (then only :meth:`edit` of meshes works).
            zero123plus, sharpit_unet: base repo for the refiner's VAE, text encoder, tokenizer and
                scheduler, and the Sharp-It UNet (see :meth:`SharpItPipeline.from_zero123plus`).
            refiner: a saved :class:`~sharpit.refine.SharpItPipeline` folder (e.g. the output of
                training); when given it replaces ``zero123plus`` + ``sharpit_unet``.
            instantmesh: a hub id holding ``instant_nerf_{variant}.ckpt``, a local ``.ckpt``, or a
                folder saved with ``InstantMeshReconstructor.save_pretrained``.
            torch_dtype: fp16 on CUDA and fp32 on CPU by default.
        Raises:
            WeightsNotFoundError: offline and not cached, naming the missing repo.
        """
        from .coarse import ShapEGenerator
        from .refine import SharpItPipeline

        device = torch.device(device) if device is not None else _default_device()
        if torch_dtype is None:
            torch_dtype = torch.float16 if device.type == "cuda" else torch.float32
        coarse = None if shap_e is None else ShapEGenerator.from_pretrained(shap_e, torch_dtype=torch_dtype,
                                                                            device="cpu")
        if refiner is not None:
            refine_pipe = SharpItPipeline.from_pretrained(refiner, torch_dtype=torch_dtype)
        else:
            refine_pipe = SharpItPipeline.from_zero123plus(base=zero123plus, unet=sharpit_unet,
                                                           torch_dtype=torch_dtype)
        recon = _load_reconstructor(instantmesh, instantmesh_variant, torch_dtype)
        models = {"shap_e": shap_e, "instantmesh": f"{instantmesh} ({instantmesh_variant})"}
        if refiner is not None:
            models["refiner"] = str(refiner)
        else:
            models.update(zero123plus=zero123plus, sharpit_unet=sharpit_unet)
        return cls(coarse, refine_pipe, recon, device=device, offload=offload,
                   models={k: str(v) for k, v in models.items()})

    @classmethod
    def from_tiny(cls, directory: Union[str, os.PathLike], device=None, seed: int = 0) -> "SharpIt3DPipeline":
        """Tiny random models for offline smoke runs: built once into ``directory`` in the
        released models' on-disk layouts, then loaded through :meth:`from_pretrained`."""
        from .testing.pipeline import save_tiny_models

        paths = save_tiny_models(directory, seed=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the CPU warning is expected for smoke runs
            pipe = cls.from_pretrained(device=device or "cpu", torch_dtype=torch.float32, **paths)
        pipe.models["tiny"] = "random weights (smoke test)"
        return pipe

    # -- helpers -------------------------------------------------------------------------
    @contextlib.contextmanager
    def _stage(self, name: str, timings: Dict[str, float], module=None) -> Iterator[None]:
        if module is not None and self.offload:
            module.to(self.device)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - start
            if module is not None and self.offload:
                module.to("cpu")
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()

    def _generator(self, seed: int, offset: int) -> torch.Generator:
        # Each stage gets its own generator derived from the seed, so a stage's randomness does
        # not depend on how many numbers the stages before it drew.
        gen_device = self.device if self.device.type == "cuda" else torch.device("cpu")
        return torch.Generator(gen_device).manual_seed(seed + offset)

    @staticmethod
    def _check_prompt(prompt) -> str:
        if not isinstance(prompt, str):
            raise InputError(f"prompt must be a string, got {type(prompt).__name__}")
        if not prompt.strip():
            raise InputError("prompt is empty; describe the object, e.g. 'a red wooden chair'")
        return prompt

    @staticmethod
    def _coarse_render(options: Optional[CoarseRenderOptions]) -> CoarseRenderOptions:
        if options is None:
            return DEFAULT_COARSE_RENDER
        if not isinstance(options, CoarseRenderOptions):
            raise InputError(f"coarse_render must be a sharpit.coarse.CoarseRenderOptions (or None for the "
                             f"default), got {type(options).__name__}")
        return options

    def _render_coarse(self, coarse_mesh: Mesh, latent: Optional[torch.Tensor], options: CoarseRenderOptions,
                       grid_size: int):
        """The six coarse views (a :class:`~sharpit.render.MultiViewRender`, 320 px, white
        background). "mesh" mode rasterises ``coarse_mesh`` (the STF mesh of ``latent`` at
        ``grid_size`` when there is a latent), as :meth:`ShapEGenerator.render_views` does;
        "nerf" mode volume-renders ``latent`` framed at ``grid_size``."""
        from .render import render_views

        if options.mode == "mesh":
            return render_views(coarse_mesh.to(self.device), zero123plus_cameras().to(self.device),
                                supersample=options.supersample)
        return self.coarse.render_views(latent.to(self.device), mode=options.mode, grid_size=grid_size,
                                        supersample=options.supersample)

    @staticmethod
    def _seed(seed: Optional[int]) -> int:
        if seed is None:
            return secrets.randbelow(2 ** 31)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise InputError(f"seed must be a non-negative integer, got {seed!r}")
        return seed

    def _finish(self, prompt: str, coarse_mesh: Mesh, latent, seed: int, params: Dict, timings: Dict,
                transform: Similarity, source: Optional[str], coarse_render: CoarseRenderOptions,
                coarse_grid_size: int, negative_prompt: Optional[str], refine_steps: int,
                guidance_scale: float, strength: float, mesh_resolution: int, textured: bool,
                texture_size: int, face_budget: int, progress: bool) -> SharpItResult:
        nerf = coarse_render.mode == "nerf"
        with self._stage("render", timings, self.coarse if nerf else None):
            coarse_views = self._render_coarse(coarse_mesh, latent, coarse_render, coarse_grid_size)
        with self._stage("refine", timings, self.refiner):
            self.refiner.set_progress_bar_config(disable=not progress)
            refined = self.refiner(coarse_views, prompt, negative_prompt=negative_prompt,
                                   num_inference_steps=refine_steps, guidance_scale=guidance_scale,
                                   strength=strength, generator=self._generator(seed, 1),
                                   output_type="pt").images
        with self._stage("reconstruct", timings, self.reconstructor):
            mesh = self.reconstructor.reconstruct(refined.to(self.device), resolution=mesh_resolution,
                                                  texture=textured, texture_size=texture_size,
                                                  face_budget=face_budget)
        timings["total"] = sum(timings.values())
        params.update(coarse_grid_size=coarse_grid_size, coarse_render=coarse_render.to_dict(),
                      negative_prompt=negative_prompt, refine_steps=refine_steps,
                      refine_guidance_scale=guidance_scale, strength=strength,
                      mesh_resolution=mesh_resolution, textured=textured,
                      texture_size=texture_size if textured else None,
                      face_budget=face_budget if textured else None)
        return SharpItResult(
            prompt=prompt, mesh=mesh.to("cpu").transformed(transform),
            coarse_mesh=coarse_mesh.to("cpu").transformed(transform),
            coarse_grid=tensor_to_pil(coarse_views.grid().cpu()), refined_grid=tensor_to_pil(refined[0].cpu()),
            latent=None if latent is None else latent.detach().cpu(), seed=seed, parameters=params,
            models=dict(self.models), timings=timings, transform=transform, source=source)

    # -- public API ----------------------------------------------------------------------
    def generate(self, prompt: str, seed: Optional[int] = None, negative_prompt: Optional[str] = None,
                 coarse_steps: int = 64, coarse_guidance_scale: float = 15.0, coarse_grid_size: int = 128,
                 coarse_render: Optional[CoarseRenderOptions] = None, refine_steps: int = 75,
                 guidance_scale: float = 4.0, strength: float = 1.0, mesh_resolution: int = 256,
                 textured: bool = False, texture_size: int = 1024, face_budget: int = DEFAULT_FACE_BUDGET,
                 progress: bool = True) -> SharpItResult:
        """Text to a detailed mesh.

        Args:
            prompt: what to make.
            seed: seeds every stage (a random one is drawn and recorded when None).
            coarse_steps, coarse_guidance_scale: Shap-E sampling (official: 64 steps, CFG 15).
            coarse_grid_size: marching-cubes grid of the coarse mesh.
            coarse_render: how the coarse object becomes the refiner's input views (mesh or NeRF,
                anti-aliasing); None uses :data:`~sharpit.coarse.DEFAULT_COARSE_RENDER`, the
                setting training pairs are rendered with.
            refine_steps, guidance_scale, strength: the refiner's steps, CFG scale and SDEdit
                strength in (0, 1] (1 starts from pure noise).
            mesh_resolution: the reconstructor's density grid (256 as InstantMesh).
            textured: bake a UV texture map (xatlas) instead of vertex colours.
        Returns:
            A :class:`~sharpit.result.SharpItResult` in the sharpit world frame (v1.2 scale).
        """
        prompt = self._check_prompt(prompt)
        coarse_render = self._coarse_render(coarse_render)
        if self.coarse is None:
            raise InputError("this pipeline was loaded without Shap-E (shap_e=None); "
                             "load it with a Shap-E model to generate from text, or use edit()")
        seed = self._seed(seed)
        timings: Dict[str, float] = {}
        with self._stage("coarse", timings, self.coarse):
            self.coarse.set_progress_bar_config(disable=not progress)
            latent = self.coarse.sample_latents([prompt], guidance_scale=coarse_guidance_scale,
                                                num_inference_steps=coarse_steps,
                                                generator=self._generator(seed, 0))
            coarse_mesh = self.coarse.to_mesh(latent, grid_size=coarse_grid_size)
        params = {"mode": "generate", "coarse_steps": coarse_steps, "coarse_guidance_scale": coarse_guidance_scale}
        return self._finish(prompt, coarse_mesh, latent, seed, params, timings, Similarity.identity(),
                            None, coarse_render, coarse_grid_size, negative_prompt, refine_steps,
                            guidance_scale, strength, mesh_resolution, textured, texture_size, face_budget,
                            progress)

    def edit(self, asset: Union[str, os.PathLike, Mesh, torch.Tensor], prompt: str,
             seed: Optional[int] = None, negative_prompt: Optional[str] = None,
             refine_steps: int = 75, guidance_scale: float = 4.0, strength: float = 1.0,
             coarse_grid_size: int = 128, coarse_render: Optional[CoarseRenderOptions] = None,
             mesh_resolution: int = 256, textured: bool = False, texture_size: int = 1024,
             face_budget: int = DEFAULT_FACE_BUDGET, progress: bool = True) -> SharpItResult:
        """Re-dress an existing rough asset with a new prompt (appearance editing).

        Args:
            asset: a mesh file (GLB/glTF/OBJ/PLY/...), a :class:`~sharpit.mesh.Mesh` (sharpit world
                frame), a saved Shap-E latent (``.safetensors`` from sharpit, or a Cap3D-style
                ``.pt``), or a latent tensor.
            prompt: the new description.
            strength: SDEdit strength in (0, 1]; below 1 keeps more of the coarse appearance.
            coarse_grid_size: marching-cubes grid of a latent's coarse mesh (unused for meshes).
            coarse_render: how the coarse object becomes the refiner's input views; None uses
                :data:`~sharpit.coarse.DEFAULT_COARSE_RENDER`. Mode "nerf" needs a latent asset.
        Returns:
            A :class:`~sharpit.result.SharpItResult` whose meshes are in the asset's original frame
            and size (for latents: the sharpit world frame, v1.2 scale).
        Raises:
            InputError: among others, ``coarse_render`` mode "nerf" with a mesh asset (a mesh has no
                NeRF to render; nothing falls back silently).
        """
        prompt = self._check_prompt(prompt)
        coarse_render = self._coarse_render(coarse_render)
        coarse_render.check_source(has_latent=self._is_latent(asset))
        seed = self._seed(seed)
        timings: Dict[str, float] = {}
        latent, source = None, None
        with self._stage("coarse", timings, self.coarse if self._is_latent(asset) else None):
            if self._is_latent(asset):
                latent, source = self._load_latent(asset)
                coarse_mesh = self.coarse.to_mesh(latent.to(self.device), grid_size=coarse_grid_size)
                transform = Similarity.identity()
            else:
                mesh, source = self._load_mesh(asset)
                coarse_mesh, to_unit = normalize_mesh(mesh)
                transform = to_unit.inverse()
        params = {"mode": "edit"}
        return self._finish(prompt, coarse_mesh, latent, seed, params, timings, transform, source,
                            coarse_render, coarse_grid_size, negative_prompt, refine_steps, guidance_scale,
                            strength, mesh_resolution, textured, texture_size, face_budget, progress)

    # -- asset loading -------------------------------------------------------------------
    def _is_latent(self, asset) -> bool:
        if isinstance(asset, torch.Tensor):
            return True
        return isinstance(asset, (str, os.PathLike)) and Path(asset).suffix.lower() in _LATENT_SUFFIXES

    def _load_latent(self, asset):
        from .coarse import check_latents, load_latents

        if self.coarse is None:
            raise InputError("editing a Shap-E latent needs the coarse stage; load the pipeline "
                             "with a Shap-E model (shap_e=...)")
        if isinstance(asset, torch.Tensor):
            return check_latents(asset, self.coarse.latent_width), None
        path = Path(asset)
        if not path.is_file():
            raise AssetNotFoundError(path)
        latent, _ = load_latents(path, width=self.coarse.latent_width)
        return latent[:1], str(path)

    @staticmethod
    def _load_mesh(asset):
        from .mesh_io import load_mesh

        if isinstance(asset, Mesh):
            return asset.validate(), asset.source
        if not isinstance(asset, (str, os.PathLike)):
            raise InputError(f"asset must be a mesh path, a Mesh or a Shap-E latent, got {type(asset).__name__}")
        return load_mesh(asset), str(asset)
