"""SharpIt3DPipeline: text or a rough asset in, a detailed mesh out, as one diffusers pipeline.

Stages, each built on the pipeline's registered components and usable on its own:

    coarse       :attr:`SharpIt3DPipeline.coarse`, a :class:`~sharpit.coarse.ShapEGenerator` on
                 ``prior``, ``prior_text_encoder``, ``prior_tokenizer``, ``prior_scheduler``,
                 ``shap_e_renderer`` (text -> Shap-E latent -> coarse mesh)
    render       the coarse object at the six Zero123++ v1.2 poses, as its mesh or (latents only)
                 its NeRF, anti-aliased (:class:`~sharpit.coarse.CoarseRenderOptions`, the setting
                 that renders training pairs)
    refine       :attr:`SharpIt3DPipeline.refiner`, a :class:`~sharpit.refine.SharpItRefinePipeline`
                 on ``vae``, ``text_encoder``, ``tokenizer``, ``unet``, ``scheduler`` (coarse grid +
                 prompt -> sharp grid)
    reconstruct  ``reconstructor``, an :class:`~sharpit.reconstruct.InstantMeshReconstructor`
                 (grid -> mesh)
    optimize     optional (``optimize_steps``): the mesh's texture refined by multi-view score
                 distillation under the refiner (:func:`sharpit.optimize.refine_texture`)

Editing an existing mesh (:meth:`SharpIt3DPipeline.edit`) goes through Shap-E's latent space when
the pipeline has the optional ``shap_e_encoder`` (the paper's path: the mesh is encoded, edited by
edit-friendly DDPM inversion when a source prompt is given, and decoded, so the refiner sees the
Shap-E-looking coarse views it was trained on), or renders the mesh as it is (``via="render"``).

As any diffusers pipeline: ``save_pretrained(dir)`` writes one folder (``model_index.json`` and a
sub-folder per component) that ``from_pretrained`` loads back (a local folder or a hub id);
``.to("cuda", torch.float16)``; ``enable_model_cpu_offload()`` keeps one model on the GPU at a
time; ``set_progress_bar_config``; ``callback_on_step_end``. :meth:`SharpIt3DPipeline.from_released`
assembles it from the released repositories (Shap-E, Zero123++ v1.2, Sharp-It, InstantMesh).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Union

import torch
from diffusers import DiffusionPipeline

from .cameras import zero123plus_cameras
from .coarse.edit_defaults import EDIT_ROUTES, edit_route
from .errors import AssetNotFoundError, ConfigError, InputError
from .formats import LATENT_SUFFIXES
from .grid import tensor_to_pil
from .mesh import Mesh, Similarity, normalize_mesh
from .options import LATENT_EDIT_OPTIONS, TINY_OPTIONS, GenerationOptions
from .result import SharpIt3DPipelineOutput
from .sources import DEFAULT_MODELS, SHAP_E_HUB_ID, diffusers_dtype, load_errors, one_dtype
from .warn import warn

__all__ = ["SharpIt3DPipeline", "DEFAULT_MODELS"]

#: The coarse stage's components: all of them or none (an edit-only pipeline).
COARSE_COMPONENTS = ("prior", "prior_text_encoder", "prior_tokenizer", "prior_scheduler", "shap_e_renderer")
#: Components kept in float32 whatever the pipeline's dtype (see :class:`SharpIt3DPipeline`).
FLOAT32_COMPONENTS = ("shap_e_renderer", "shap_e_encoder")
#: The stages of a run that draw random numbers, each from its own generator (:func:`stage_seed`).
SEED_STAGES = ("coarse", "refine", "encode", "invert", "optimize")


def stage_seed(seed: int, stage: str) -> int:
    """The seed of one stage of a run with seed ``seed``: a 64-bit mix of the seed and the stage
    (an odd-multiplier affine map, one-to-one in ``seed`` for each stage). No two stages share a
    random stream, nor do the stages of batch items seeded ``seed + i``: the former ``seed + stage
    number`` gave item 0's refiner the noise of item 1's Shap-E. Any integer seed >= 0 works (the
    map wraps modulo 2^64, the range of torch's generators)."""
    if stage not in SEED_STAGES:
        raise ValueError(f"unknown stage {stage!r}; one of {SEED_STAGES}")
    return (int(seed) * 0x9E3779B97F4A7C15 + (SEED_STAGES.index(stage) + 1) * 0xBF58476D1CE4E5B9) % 2 ** 64


#: The stock Zero123++ image-conditioning components of the refiner (optional).
IMAGE_COMPONENTS = ("vision_encoder", "feature_extractor_clip", "feature_extractor_vae")


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _load_reconstructor(source: str, variant: str, dtype: torch.dtype):
    """A folder saved with ``save_pretrained`` (``config.json``), else a released InstantMesh
    checkpoint (a ``.ckpt`` file, a folder holding it, or a hub id)."""
    from .reconstruct import InstantMeshReconstructor

    if (Path(source) / InstantMeshReconstructor.config_name).is_file():
        with load_errors(source, "reconstructor"):
            return InstantMeshReconstructor.from_pretrained(source, **diffusers_dtype(dtype)).eval()
    return InstantMeshReconstructor.from_instantmesh_checkpoint(source, variant=variant, torch_dtype=dtype)


def coarse_shading(mesh: Mesh) -> str:
    """How a coarse mesh is shaded into the refiner's input views.

    Coloured meshes (every Shap-E mesh, and coloured or textured assets) are rendered unlit, as
    training pairs render Shap-E's meshes (:mod:`sharpit.coarse.render_options`). A mesh with no
    colour at all (STL, a plain OBJ) would then be a flat grey silhouette with no cue to its shape,
    so it is shaded "lambertian": ambient 0.3 plus 0.7 diffuse from a light at the camera (the terms
    of Shap-E's "basic" lighting, which the author's notebooks render STF meshes with), on the
    neutral grey albedo (:data:`sharpit.colors.NEUTRAL_GREY`).
    """
    return "unlit" if mesh.vertex_colors is not None or mesh.has_texture else "lambertian"


class SharpIt3DPipeline(DiffusionPipeline):
    r"""The whole Sharp-It chain: prompt (or rough asset) -> Shap-E -> six views -> refiner -> mesh.

    Components (``model_index.json``): the refiner's ``vae``, ``text_encoder``, ``tokenizer``,
    ``unet`` and ``scheduler``; the ``reconstructor``; optionally Shap-E's ``prior``,
    ``prior_text_encoder``, ``prior_tokenizer``, ``prior_scheduler`` and ``shap_e_renderer`` (all
    or none: without them only :meth:`edit` of meshes works), Shap-E's encoder
    ``shap_e_encoder`` (a :class:`~sharpit.coarse.ShapEEncoder`; :meth:`edit` of meshes through
    Shap-E's latent space), and stock Zero123++'s ``vision_encoder``, ``feature_extractor_clip``,
    ``feature_extractor_vae``.

    Saved settings: the refiner's ``conditioning_mode``, ``null_condition``,
    ``condition_latent_space`` and ``ramping_coefficients`` (see
    :class:`~sharpit.refine.SharpItRefinePipeline`); ``generation_defaults``, the
    :class:`~sharpit.options.GenerationOptions` a call starts from (override per call with
    keywords or ``options=``); ``model_sources``, where each component came from (recorded in
    every result's metadata).

    The Shap-E renderer and encoder always stay float32 (their positional encodings reach
    ``2^14 x``, which float16 cannot resolve), also after ``.to(torch.float16)``, and stay on the
    execution device under ``enable_model_cpu_offload`` (they are used outside ``forward``; the
    encoder renders its inputs on its own device).
    """

    model_cpu_offload_seq = "prior_text_encoder->prior->text_encoder->vision_encoder->unet->vae->reconstructor"
    _optional_components = list(COARSE_COMPONENTS + IMAGE_COMPONENTS) + ["shap_e_encoder"]
    _exclude_from_cpu_offload = list(FLOAT32_COMPONENTS)

    def __init__(self, vae, text_encoder, tokenizer, unet, scheduler, reconstructor,
                 prior=None, prior_text_encoder=None, prior_tokenizer=None, prior_scheduler=None,
                 shap_e_renderer=None, vision_encoder=None, feature_extractor_clip=None,
                 feature_extractor_vae=None, shap_e_encoder=None, conditioning_mode: Optional[str] = None,
                 null_condition: Optional[str] = None, condition_latent_space: str = "raw",
                 ramping_coefficients: Optional[Sequence[float]] = None,
                 generation_defaults: Optional[Dict[str, Any]] = None,
                 model_sources: Optional[Dict[str, str]] = None):
        super().__init__()
        coarse = dict(prior=prior, prior_text_encoder=prior_text_encoder, prior_tokenizer=prior_tokenizer,
                      prior_scheduler=prior_scheduler, shap_e_renderer=shap_e_renderer)
        given = [name for name, part in coarse.items() if part is not None]
        if given and len(given) != len(coarse):
            missing = [name for name in coarse if name not in given]
            raise ConfigError(f"the Shap-E stage needs all of {', '.join(coarse)}; missing {', '.join(missing)} "
                              "(pass all of them, or none for an edit-only pipeline)")
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                              reconstructor=reconstructor, vision_encoder=vision_encoder,
                              feature_extractor_clip=feature_extractor_clip,
                              feature_extractor_vae=feature_extractor_vae, shap_e_encoder=shap_e_encoder,
                              **coarse)
        self._stage_cache: Dict[str, tuple] = {}
        refiner = self._make_refiner(conditioning_mode, null_condition, condition_latent_space, ramping_coefficients)
        self.register_to_config(conditioning_mode=conditioning_mode, null_condition=refiner.config.null_condition,
                                condition_latent_space=refiner.config.condition_latent_space,
                                ramping_coefficients=refiner.config.ramping_coefficients,
                                generation_defaults=GenerationOptions.from_dict(generation_defaults).to_dict(),
                                model_sources={k: str(v) for k, v in (model_sources or {}).items()})
        self._stage_cache["refiner"] = (self._refiner_key(), refiner)
        self._keep_float32_components()

    # -- the stages, built on the registered components ----------------------------------
    def _refiner_key(self) -> tuple:
        return tuple(id(getattr(self, n)) for n in ("vae", "text_encoder", "tokenizer", "unet", "scheduler")
                     + IMAGE_COMPONENTS)

    def _make_refiner(self, conditioning_mode, null_condition, condition_latent_space, ramping_coefficients):
        from .refine import SharpItRefinePipeline

        return SharpItRefinePipeline(
            vae=self.vae, text_encoder=self.text_encoder, tokenizer=self.tokenizer, unet=self.unet,
            scheduler=self.scheduler, vision_encoder=self.vision_encoder,
            feature_extractor_clip=self.feature_extractor_clip, feature_extractor_vae=self.feature_extractor_vae,
            conditioning_mode=conditioning_mode, null_condition=null_condition,
            condition_latent_space=condition_latent_space, ramping_coefficients=ramping_coefficients)

    @property
    def refiner(self):
        """The refine stage, a :class:`~sharpit.refine.SharpItRefinePipeline` sharing this
        pipeline's modules and settings (rebuilt only when a component is replaced)."""
        key = self._refiner_key()
        cached = self._stage_cache.get("refiner")
        if cached is None or cached[0] != key:
            c = self.config
            cached = (key, self._make_refiner(c.conditioning_mode, c.null_condition, c.condition_latent_space,
                                              c.ramping_coefficients))
            self._stage_cache["refiner"] = cached
        return cached[1]

    @property
    def coarse(self):
        """The coarse stage, a :class:`~sharpit.coarse.ShapEGenerator` on this pipeline's Shap-E
        components, or None for an edit-only pipeline."""
        if self.prior is None:
            return None
        parts = [getattr(self, n) for n in COARSE_COMPONENTS]
        key = tuple(map(id, parts))
        cached = self._stage_cache.get("coarse")
        if cached is None or cached[0] != key:
            from .coarse import ShapEGenerator

            source = self.config.model_sources.get("shap_e", SHAP_E_HUB_ID)
            cached = (key, ShapEGenerator(*parts, model_id=source))
            self._stage_cache["coarse"] = cached
        return cached[1]

    @property
    def default_options(self) -> GenerationOptions:
        """The :class:`~sharpit.options.GenerationOptions` every call starts from (saved setting
        ``generation_defaults``); change them with :meth:`set_default_options`."""
        return GenerationOptions.from_dict(self.config.generation_defaults)

    def set_default_options(self, options: Optional[GenerationOptions] = None, **overrides) -> None:
        """Set the saved defaults to ``options`` (or the current ones) with ``overrides`` applied."""
        base = self.default_options if options is None else self._check_options(options)
        self.register_to_config(generation_defaults=base.replace(**overrides).to_dict())

    @property
    def models(self) -> Dict[str, str]:
        """Where each component came from, and the pipeline folder or hub id it was loaded from."""
        models = dict(self.config.model_sources)
        loaded_from = self.config.get("_name_or_path")
        if loaded_from:
            models["pipeline"] = str(loaded_from)
        return models

    # -- loading -------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Union[str, os.PathLike], **kwargs) -> "SharpIt3DPipeline":
        """Load a pipeline saved with :meth:`save_pretrained` (a local folder or a hub id of such a
        folder); keywords as diffusers' ``DiffusionPipeline.from_pretrained`` (``dtype`` or ``torch_dtype``,
        ``variant``, ``local_files_only``, ...) and setting overrides (``null_condition=...``).

        To assemble the pipeline from the released models instead, use :meth:`from_released`.

        Raises:
            WeightsNotFoundError: a hub id that is not cached while offline.
            AssetNotFoundError: a path that does not exist.
            CheckpointError: a folder with a missing or broken component.
        """
        name = os.fspath(pretrained_model_name_or_path)
        # model_index.json names these modules for the reconstructor and the encoder; diffusers
        # (0.42+) loads classes only from modules the process has imported itself
        import sharpit.coarse.encoder  # noqa: F401
        import sharpit.reconstruct.model  # noqa: F401

        dtype = one_dtype(kwargs)   # either name, passed on under the one this diffusers knows
        if isinstance(dtype, torch.dtype):   # load the float32-only parts in float32 (unrounded)
            dtype = {"default": dtype, **{part: torch.float32 for part in FLOAT32_COMPONENTS}}
        kwargs.update(diffusers_dtype(dtype))
        with load_errors(name, "Sharp-It 3D pipeline"):
            return super().from_pretrained(name, **kwargs)

    @classmethod
    def from_released(cls, shap_e: Optional[str] = DEFAULT_MODELS["shap_e"],
                      shap_e_encoder: Optional[str] = None,
                      zero123plus: str = DEFAULT_MODELS["zero123plus"],
                      sharpit_unet: str = DEFAULT_MODELS["sharpit_unet"],
                      refiner: Optional[str] = None,
                      instantmesh: str = DEFAULT_MODELS["instantmesh"],
                      instantmesh_variant: str = DEFAULT_MODELS["instantmesh_variant"],
                      device=None, torch_dtype: Optional[torch.dtype] = None,
                      generation_defaults: Optional[GenerationOptions] = None) -> "SharpIt3DPipeline":
        """Assemble the pipeline from the released models; each argument is a hub id or a local path.

        Args:
            shap_e: Shap-E in the diffusers layout (``openai/shap-e``); None skips the coarse
                stage (then only :meth:`edit` of meshes works).
            shap_e_encoder: Shap-E's encoder, for :meth:`edit` of meshes through Shap-E's latent
                space: a folder holding the released ``transmitter.pt`` + ``transmitter_config.yaml``
                (OpenAI publishes them outside the Hugging Face hub:
                :data:`~sharpit.sources.TRANSMITTER_URL`), a folder saved by
                ``ShapEEncoder.save_pretrained``, or a hub id holding either. None (default): no
                encoder; mesh edits then render the mesh as it is.
            zero123plus, sharpit_unet: base repo for the refiner's VAE, text encoder, tokenizer and
                scheduler, and the Sharp-It UNet (see :meth:`SharpItRefinePipeline.from_zero123plus`).
            refiner: a saved :class:`~sharpit.refine.SharpItRefinePipeline` folder (e.g. the output
                of training); when given it replaces ``zero123plus`` + ``sharpit_unet``.
            instantmesh: a hub id holding ``instant_nerf_{variant}.ckpt``, a local ``.ckpt``, or a
                folder saved with ``InstantMeshReconstructor.save_pretrained``.
            device: where to put the models (CUDA when available). For a GPU smaller than the
                models, pass ``device="cpu"`` and call :meth:`enable_model_cpu_offload`.
            torch_dtype: fp16 on CUDA and fp32 on CPU by default (the Shap-E renderer stays fp32).
            generation_defaults: the options calls start from (the paper's by default).
        Raises:
            WeightsNotFoundError: offline and not cached, naming the missing repo.
        """
        from .coarse import ShapEGenerator
        from .refine import SharpItRefinePipeline

        device = torch.device(device) if device is not None else _default_device()
        if torch_dtype is None:
            torch_dtype = torch.float16 if device.type == "cuda" else torch.float32
        coarse = {}
        if shap_e is not None:
            gen = ShapEGenerator.from_pretrained(shap_e, torch_dtype=torch_dtype, device="cpu")
            coarse = dict(prior=gen.prior, prior_text_encoder=gen.text_encoder, prior_tokenizer=gen.tokenizer,
                          prior_scheduler=gen.scheduler, shap_e_renderer=gen.renderer)
        if refiner is not None:
            refine_pipe = SharpItRefinePipeline.from_pretrained(refiner, **diffusers_dtype(torch_dtype))
        else:
            refine_pipe = SharpItRefinePipeline.from_zero123plus(base=zero123plus, unet=sharpit_unet,
                                                                 torch_dtype=torch_dtype)
        recon = _load_reconstructor(instantmesh, instantmesh_variant, torch_dtype)
        sources = {"instantmesh": f"{instantmesh} ({instantmesh_variant})"}
        if shap_e is not None:
            sources["shap_e"] = str(shap_e)
        encoder = None
        if shap_e_encoder is not None:
            from .coarse import ShapEEncoder

            encoder = ShapEEncoder.from_pretrained(shap_e_encoder)   # float32: see the class docstring
            sources["shap_e_encoder"] = str(shap_e_encoder)
        if refiner is not None:
            sources["refiner"] = str(refiner)
        else:
            sources.update(zero123plus=str(zero123plus), sharpit_unet=str(sharpit_unet))
        r = refine_pipe.components
        pipe = cls(vae=r["vae"], text_encoder=r["text_encoder"], tokenizer=r["tokenizer"], unet=r["unet"],
                   scheduler=r["scheduler"], reconstructor=recon, vision_encoder=r["vision_encoder"],
                   feature_extractor_clip=r["feature_extractor_clip"],
                   feature_extractor_vae=r["feature_extractor_vae"], shap_e_encoder=encoder,
                   conditioning_mode=refine_pipe.config.conditioning_mode,
                   null_condition=refine_pipe.config.null_condition,
                   condition_latent_space=refine_pipe.config.condition_latent_space,
                   ramping_coefficients=refine_pipe.config.ramping_coefficients,
                   generation_defaults=None if generation_defaults is None else generation_defaults.to_dict(),
                   model_sources=sources, **coarse)
        if device.type == "cpu":
            warn("sharpit is running on the CPU: expect minutes per asset with the full models (a CUDA "
                 "GPU takes seconds)")
        return pipe.to(device)

    @classmethod
    def from_tiny(cls, directory: Union[str, os.PathLike, None] = None, device=None,
                  seed: int = 0) -> "SharpIt3DPipeline":
        """Tiny random models for offline smoke runs: built once into ``directory`` (default
        :func:`~sharpit.testing.pipeline.tiny_cache_dir`) in the released models' on-disk layouts,
        loaded through :meth:`from_released`, with :data:`~sharpit.options.TINY_OPTIONS` as the
        default options. Outputs are noise by design."""
        from .testing.pipeline import save_tiny_models, tiny_cache_dir

        paths = save_tiny_models(tiny_cache_dir() if directory is None else directory, seed=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the CPU warning is expected for smoke runs
            pipe = cls.from_released(device=device or "cpu", torch_dtype=torch.float32,
                                     generation_defaults=TINY_OPTIONS, **paths)
        pipe.register_to_config(model_sources={**pipe.config.model_sources, "tiny": "random weights (smoke test)"})
        return pipe

    def to(self, *args, **kwargs) -> "SharpIt3DPipeline":
        """``DiffusionPipeline.to`` (device and/or dtype). The float32-only components
        (:data:`FLOAT32_COMPONENTS`: the Shap-E renderer and encoder) follow the device but are
        never cast: a cast to float16 and back would round their weights."""
        dtype = kwargs.get("dtype", next((a for a in args if isinstance(a, torch.dtype)), None))
        kept = {}
        if dtype is not None and dtype != torch.float32:
            kept = {name: getattr(self, name) for name in FLOAT32_COMPONENTS if getattr(self, name) is not None}
        for name in kept:   # hidden from diffusers' cast (object.__setattr__: the config stays as it is)
            object.__setattr__(self, name, None)
        try:
            pipe = super().to(*args, **kwargs)
        finally:
            for name, part in kept.items():
                object.__setattr__(self, name, part)
        device = kwargs.get("device", next((a for a in args if not isinstance(a, torch.dtype)), None))
        if device is not None:
            for part in kept.values():
                part.to(device)
        return pipe

    def _keep_float32_components(self) -> None:
        for part in (getattr(self, name) for name in FLOAT32_COMPONENTS):
            if part is not None and part.dtype != torch.float32:
                part.to(torch.float32)

    def optimize(self, compile: bool = False, channels_last: bool = True, compile_mode: Optional[str] = None) -> None:
        """The one switch for GPU speed-ups, in place: ``channels_last`` memory format for the
        refiner's UNet and VAE (convolutions run faster in NHWC on tensor cores), and with
        ``compile`` ``torch.compile`` of the UNet and the reconstructor (``nn.Module.compile``; the
        first call then pays the compilation, later calls of the same shapes are faster).
        Outputs are unchanged up to floating-point rounding."""
        if channels_last:
            self.unet.to(memory_format=torch.channels_last)
            self.vae.to(memory_format=torch.channels_last)
        if compile:
            self.unet.compile(mode=compile_mode, fullgraph=False)
            self.reconstructor.compile(mode=compile_mode, fullgraph=False)

    # -- helpers -------------------------------------------------------------------------
    @contextlib.contextmanager
    def _stage(self, name: str, timings: Dict[str, float]) -> Iterator[None]:
        device = self._execution_device
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        try:
            yield
        finally:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - start

    def _generator(self, seed: int, stage: str) -> torch.Generator:
        """The generator of one stage of a run (:func:`stage_seed`): a stage's randomness does not
        depend on how many numbers the stages before it drew."""
        device = self._execution_device
        return torch.Generator(device if device.type == "cuda" else "cpu").manual_seed(stage_seed(seed, stage))

    @staticmethod
    def _check_callbacks(**callbacks) -> None:
        for name, callback in callbacks.items():
            if callback is not None and not callable(callback):
                raise InputError(f"{name} must be a function (or None), got {type(callback).__name__}")

    @staticmethod
    def _check_prompt(prompt) -> str:
        if not isinstance(prompt, str):
            raise InputError(f"prompt must be a string, got {type(prompt).__name__}")
        if not prompt.strip():
            raise InputError("prompt is empty; describe the object, e.g. 'a red wooden chair'")
        return prompt

    @staticmethod
    def _check_options(options) -> GenerationOptions:
        if not isinstance(options, GenerationOptions):
            raise InputError(f"options must be a sharpit.GenerationOptions, got {type(options).__name__}")
        return options

    def _options(self, options: Optional[GenerationOptions], overrides: Dict[str, Any]) -> GenerationOptions:
        base = self.default_options if options is None else self._check_options(options)
        return base.replace(**overrides) if overrides else base

    @staticmethod
    def _seed(seed: Optional[int], generator: Optional[torch.Generator]) -> int:
        """The run's seed: ``seed``, else one drawn from ``generator``, else a random one."""
        if seed is not None and generator is not None:
            raise InputError("pass either seed or generator, not both")
        if generator is not None:
            if not isinstance(generator, torch.Generator):
                raise InputError(f"generator must be a torch.Generator, got {type(generator).__name__}")
            return int(torch.randint(2 ** 31, (1,), generator=generator, device=generator.device))
        if seed is None:
            return secrets.randbelow(2 ** 31)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise InputError(f"seed must be a non-negative integer, got {seed!r}")
        return seed

    def _render_coarse(self, coarse_mesh: Mesh, latent: Optional[torch.Tensor], options: GenerationOptions):
        """The six coarse views (a :class:`~sharpit.render.MultiViewRender`, 320 px, white
        background). "mesh" mode rasterises ``coarse_mesh`` (the STF mesh of ``latent`` when
        there is a latent), as :meth:`ShapEGenerator.render_views` does, shaded as
        :func:`coarse_shading` says; "nerf" mode volume-renders ``latent`` framed at the coarse
        grid size."""
        from .render import render_views

        device, render = self._execution_device, options.coarse_render
        if render.mode == "mesh":
            return render_views(coarse_mesh.to(device), zero123plus_cameras().to(device),
                                supersample=render.supersample, shading=coarse_shading(coarse_mesh))
        return self.coarse.render_views(latent.to(device), mode=render.mode, grid_size=options.coarse_grid_size,
                                        supersample=render.supersample)

    def _optimize_texture(self, mesh: Mesh, coarse_mesh: Mesh, latent: Optional[torch.Tensor], prompt: str,
                          options: GenerationOptions, seed: int, state_path, callback=None) -> Mesh:
        """``options.optimize_steps`` of multi-view SDS on ``mesh``'s texture (normalised frame),
        the refiner conditioned on the coarse object rendered at each (turned) rig as
        :meth:`_render_coarse` renders it at the canonical one."""
        from .optimize import refine_texture
        from .render import render_views

        device, render = self._execution_device, options.coarse_render
        if render.mode == "mesh":
            shading, on_device = coarse_shading(coarse_mesh), coarse_mesh.to(device)

            def condition(cameras):
                return render_views(on_device, cameras.to(device), supersample=render.supersample, shading=shading)
        else:
            def condition(cameras):
                return self.coarse.render_views(latent.to(device), cameras=cameras.to(device), mode=render.mode,
                                                grid_size=options.coarse_grid_size, supersample=render.supersample)
        with torch.enable_grad():
            result = refine_texture(self.refiner, mesh, condition, prompt, options.optimize_steps,
                                    negative_prompt=options.negative_prompt, options=options.optimize,
                                    generator=self._generator(seed, "optimize"), state_path=state_path,
                                    callback_on_step_end=callback)
        return result.mesh

    def _finish(self, prompt: str, coarse_mesh: Mesh, latent, seed: int, options: GenerationOptions,
                params: Dict, timings: Dict, transform: Similarity, source: Optional[str],
                callback_on_step_end, callback_on_step_end_tensor_inputs,
                optimize_state=None, optimize_callback=None) -> SharpIt3DPipelineOutput:
        with self._stage("render", timings):
            coarse_views = self._render_coarse(coarse_mesh, latent, options)
        params["coarse_shading"] = coarse_shading(coarse_mesh) if options.coarse_render.mode == "mesh" else None
        with self._stage("refine", timings):
            refiner = self.refiner
            refiner.set_progress_bar_config(**getattr(self, "_progress_bar_config", {}))
            refined = refiner(coarse_views, prompt, negative_prompt=options.negative_prompt,
                              num_inference_steps=options.refine_steps, guidance_scale=options.guidance_scale,
                              strength=options.strength, generator=self._generator(seed, "refine"), output_type="pt",
                              callback_on_step_end=callback_on_step_end,
                              callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs).images
        with self._stage("reconstruct", timings), warnings.catch_warnings():
            if "tiny" in self.config.model_sources:   # random tiny models: noisy views by design
                warnings.filterwarnings("ignore", message="the views' border pixels")
            mesh = self.reconstructor.reconstruct(refined, resolution=options.mesh_resolution,
                                                  texture=options.textured or options.optimize_steps > 0,
                                                  texture_size=options.texture_size, face_budget=options.face_budget,
                                                  uv_layout=options.uv_layout, texture_source=options.texture_source)
        if options.optimize_steps:
            with self._stage("optimize", timings):
                mesh = self._optimize_texture(mesh, coarse_mesh, latent, prompt, options, seed, optimize_state,
                                              optimize_callback)
        self.maybe_free_model_hooks()
        timings["total"] = sum(timings.values())
        # the latent-edit options acted only when a source prompt steered a latent edit
        params.update(options.recorded(latent_edit=params.get("source_prompt") is not None))
        return SharpIt3DPipelineOutput(
            prompt=prompt, mesh=mesh.to("cpu").transformed(transform),
            coarse_mesh=coarse_mesh.to("cpu").transformed(transform),
            coarse_grid=tensor_to_pil(coarse_views.grid().cpu()), refined_grid=tensor_to_pil(refined[0].cpu()),
            latent=None if latent is None else latent.detach().cpu(), seed=seed, parameters=params,
            models=self.models, timings=timings, transform=transform, source=source)

    # -- public API ----------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, prompt: str, asset: Union[str, os.PathLike, Mesh, torch.Tensor, None] = None,
                 **kwargs) -> SharpIt3DPipelineOutput:
        """``pipe(prompt)`` is :meth:`generate`; ``pipe(prompt, asset=...)`` is :meth:`edit`."""
        if asset is None:
            return self.generate(prompt, **kwargs)
        return self.edit(asset, prompt, **kwargs)

    @torch.no_grad()
    def generate(self, prompt: str, seed: Optional[int] = None, generator: Optional[torch.Generator] = None,
                 options: Optional[GenerationOptions] = None,
                 optimize_state: Union[str, os.PathLike, None] = None,
                 callback_on_step_end: Optional[Callable] = None,
                 callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
                 optimize_callback: Optional[Callable[[int, Dict], None]] = None,
                 **overrides) -> SharpIt3DPipelineOutput:
        """Text to a detailed mesh.

        Args:
            prompt: what to make.
            seed: seeds every stage (each gets its own generator derived from it); a random one is
                drawn and recorded when neither ``seed`` nor ``generator`` is given.
            generator: alternatively, a ``torch.Generator`` the run's seed is drawn from.
            options: a :class:`~sharpit.options.GenerationOptions`; default :attr:`default_options`.
            optimize_state: with ``optimize_steps``, a file the optimisation saves its state to
                (atomically, every ``optimize.save_every`` steps) and resumes from when the same
                call is run again after an interruption (:func:`sharpit.optimize.refine_texture`).
            callback_on_step_end, callback_on_step_end_tensor_inputs: called after each refiner
                step, as in diffusers (``f(refiner, step, timestep, tensors) -> dict``).
            optimize_callback: with ``optimize_steps``, ``f(step, record)`` after each optimisation
                step (``step`` counts from 0; ``record``: that step's dict, an entry of
                :attr:`sharpit.optimize.TextureRefineResult.stats`); an exception it raises stops
                the run (the saved ``optimize_state`` stays for a resume).
            overrides: any :class:`~sharpit.options.GenerationOptions` field by keyword
                (``refine_steps=30``, ``textured=True``, ...), applied on top of ``options``.
        Returns:
            A :class:`~sharpit.result.SharpIt3DPipelineOutput` in the sharpit world frame (v1.2 scale).
        Raises:
            InputError: a bad prompt, seed or option (:class:`~sharpit.options.OptionError` names it),
                or a pipeline without Shap-E; raised before any model runs.
        """
        prompt = self._check_prompt(prompt)
        self._check_callbacks(callback_on_step_end=callback_on_step_end, optimize_callback=optimize_callback)
        options = self._options(options, overrides)
        seed = self._seed(seed, generator)
        coarse = self.coarse
        if coarse is None:
            raise InputError("this pipeline was loaded without Shap-E (shap_e=None); "
                             "load it with a Shap-E model to generate from text, or use edit()")
        timings: Dict[str, float] = {}
        with self._stage("coarse", timings):
            coarse.set_progress_bar_config(**getattr(self, "_progress_bar_config", {}))
            latent = coarse.sample_latents([prompt], guidance_scale=options.coarse_guidance_scale,
                                           num_inference_steps=options.coarse_steps,
                                           generator=self._generator(seed, "coarse"))
            coarse_mesh = coarse.to_mesh(latent, grid_size=options.coarse_grid_size)
        return self._finish(prompt, coarse_mesh, latent, seed, options, {"mode": "generate"}, timings,
                            Similarity.identity(), None, callback_on_step_end, callback_on_step_end_tensor_inputs,
                            optimize_state, optimize_callback)

    @torch.no_grad()
    def edit(self, asset: Union[str, os.PathLike, Mesh, torch.Tensor], prompt: str, seed: Optional[int] = None,
             generator: Optional[torch.Generator] = None, options: Optional[GenerationOptions] = None,
             up_axis: str = "auto", via: Optional[str] = None, source_prompt: Optional[str] = None,
             optimize_state: Union[str, os.PathLike, None] = None,
             callback_on_step_end: Optional[Callable] = None,
             callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
             optimize_callback: Optional[Callable[[int, Dict], None]] = None,
             **overrides) -> SharpIt3DPipelineOutput:
        """Edit an existing rough asset with a new prompt.

        Args:
            asset: a mesh file (GLB/glTF/OBJ/PLY/...), a :class:`~sharpit.mesh.Mesh` (sharpit world
                frame), a saved Shap-E latent (``.safetensors`` from sharpit or
                ``python -m inference.encode``, or a Cap3D-style ``.pt``), or a latent tensor.
            prompt: the new description.
            via: how a mesh asset becomes the refiner's coarse views. ``"latent"``, the paper's
                path and the default when the pipeline has a ``shap_e_encoder`` (and Shap-E):
                the mesh is encoded into a Shap-E latent (:class:`~sharpit.coarse.ShapEEncoder`),
                edited when ``source_prompt`` is given, decoded and rendered exactly as training
                pairs' coarse grids were (the refiner was trained on Shap-E-looking views).
                ``"render"``, the default without an encoder: the mesh is rendered as it is.
                Latent assets always take the latent path. The encoding's random choices (its
                cameras and point samples) come from this call's seed; ``sharpit-encode --seed`` and
                ``prepare_pairs --coarse encode`` seed them their own way (a CPU generator, a hash
                of the object id), so encode a mesh once and edit the saved latent when several
                edits must start from the same latent.
            source_prompt: what the asset shows now. With it, the Shap-E latent is edited toward
                ``prompt`` by edit-friendly DDPM inversion before refinement
                (:meth:`~sharpit.coarse.ShapEGenerator.invert` with the source prompt, then
                :meth:`~sharpit.coarse.ShapEGenerator.edit_latents`; options ``latent_strength``,
                ``inversion_steps``, ``latent_guidance_scale``): the shape can change. Without it the
                latent is kept and only the refiner sees the new prompt (appearance editing), and
                those three options given as keywords are refused (they would change nothing).
            up_axis: for a mesh file, its up axis (:func:`sharpit.mesh_io.load_mesh`): "auto"
                (glTF y-up by its specification, other formats z-up), "y" (most OBJ/PLY/STL
                exporters, e.g. Blender's OBJ default) or "z".
            seed, generator, options, optimize_state, callback_on_step_end, optimize_callback, overrides: as in
                :meth:`generate`; ``strength`` below 1 keeps more of the coarse appearance;
                ``coarse_grid_size`` is the grid of a latent's coarse mesh (unused on the
                ``"render"`` path); ``coarse_render`` mode "nerf" needs a latent (a latent asset or
                ``via="latent"``).
        Returns:
            A :class:`~sharpit.result.SharpIt3DPipelineOutput` whose meshes are in the asset's
            original frame and size (for latent assets: the sharpit world frame, v1.2 scale); its
            ``latent`` is the (edited) Shap-E latent on the latent path.
        Raises:
            InputError: among others an unknown ``via``, ``via="latent"`` without an encoder or
                Shap-E, ``source_prompt`` on the ``"render"`` path, ``via="render"`` for a latent
                asset, ``coarse_render`` mode "nerf" without a latent (nothing falls back silently).
            MeshError: a mesh the encoder cannot take (no faces, too many faces).
        """
        from .mesh_io import UP_AXES

        prompt = self._check_prompt(prompt)
        self._check_callbacks(callback_on_step_end=callback_on_step_end, optimize_callback=optimize_callback)
        options = self._options(options, overrides)
        if up_axis not in UP_AXES:
            raise InputError(f"up_axis must be one of {UP_AXES}, got {up_axis!r}")
        is_latent = self._is_latent(asset)
        via = self._edit_route(via, is_latent)
        if source_prompt is not None:
            if not isinstance(source_prompt, str) or not source_prompt.strip():
                raise InputError("source_prompt must be a non-empty string describing the asset, got "
                                 f"{source_prompt!r}")
            if via != "latent":
                raise InputError("source_prompt steers an edit in Shap-E's latent space, which via='render' skips; "
                                 "use via='latent' (needs the pipeline's shap_e_encoder) or drop source_prompt")
        else:
            idle = sorted(set(overrides) & set(LATENT_EDIT_OPTIONS))
            if idle:   # per-call keywords that would change nothing (saved defaults and options= may hold them)
                raise InputError(f"{', '.join(idle)} act only in a latent edit from a source prompt; pass "
                                 "source_prompt='what the asset shows now', or drop them")
        options.coarse_render.check_source(has_latent=via == "latent")
        seed = self._seed(seed, generator)
        device = self._execution_device
        timings: Dict[str, float] = {}
        latent = None
        if is_latent:
            with self._stage("coarse", timings):
                latent, source = self._load_latent(asset)
            transform = Similarity.identity()
        else:
            with self._stage("coarse", timings):
                mesh, source = self._load_mesh(asset, up_axis)
                normalized, to_unit = normalize_mesh(mesh)
            transform = to_unit.inverse()   # the result comes back in the asset's frame and size
            if via == "latent":
                with self._stage("encode", timings):
                    latent = self.shap_e_encoder.encode(mesh.to(device), generator=self._generator(seed, "encode"),
                                                        progress=False)
        if source_prompt is not None:
            with self._stage("invert", timings):
                latent = self._edit_latent(latent, source_prompt.strip(), prompt, options, seed)
        if latent is None:
            coarse_mesh = normalized
        else:
            with self._stage("decode", timings):
                coarse_mesh = self.coarse.to_mesh(latent.to(device), grid_size=options.coarse_grid_size)
        params = {"mode": "edit", "up_axis": None if is_latent or isinstance(asset, Mesh) else up_axis,
                  "via": via, "source_prompt": None if source_prompt is None else source_prompt.strip()}
        return self._finish(prompt, coarse_mesh, latent, seed, options, params, timings, transform, source,
                            callback_on_step_end, callback_on_step_end_tensor_inputs, optimize_state,
                            optimize_callback)

    def _edit_route(self, via: Optional[str], is_latent: bool) -> str:
        """The coarse route of an edit (:func:`edit_route`): ``via`` checked, or the default."""
        route, problem = edit_route(via, is_latent, self.shap_e_encoder is not None, self.prior is not None)
        messages = {
            "unknown": f"via must be one of {EDIT_ROUTES} (or None for the default), got {via!r}",
            "latent_asset": "a Shap-E latent asset has no mesh to render as it is: via='render' applies to mesh "
                            "assets; leave via unset for latents",
            "no_encoder": "via='latent' encodes the mesh with Shap-E's encoder, which this pipeline was loaded "
                          "without: pass SharpIt3DPipeline.from_released(shap_e_encoder=FOLDER) with the "
                          "released transmitter.pt + transmitter_config.yaml (sharpit.sources.TRANSMITTER_URL), "
                          "or use via='render'",
            "no_shap_e": "via='latent' decodes the encoded latent with Shap-E, which this pipeline was loaded "
                         "without (shap_e=None); load it with a Shap-E model or use via='render'",
        }
        if problem is not None:
            raise InputError(messages[problem])
        return route

    def _edit_latent(self, latent: torch.Tensor, source_prompt: str, prompt: str, options: GenerationOptions,
                     seed: int) -> torch.Tensor:
        """Edit-friendly DDPM inversion of ``latent`` under ``source_prompt``, regenerated under
        ``prompt`` from step ``int(inversion_steps * latent_strength)`` with the same noise maps."""
        coarse = self.coarse
        coarse.set_progress_bar_config(**getattr(self, "_progress_bar_config", {}))
        inversion = coarse.invert(latent.to(self._execution_device), source_prompt,
                                  num_inference_steps=options.inversion_steps,
                                  guidance_scale=options.latent_guidance_scale,
                                  generator=self._generator(seed, "invert"))
        return coarse.edit_latents(inversion, prompt, strength=options.latent_strength,
                                   guidance_scale=options.latent_guidance_scale)

    # -- asset loading -------------------------------------------------------------------
    @staticmethod
    def _is_latent(asset) -> bool:
        if isinstance(asset, torch.Tensor):
            return True
        return isinstance(asset, (str, os.PathLike)) and Path(asset).suffix.lower() in LATENT_SUFFIXES

    def _load_latent(self, asset):
        from .coarse import check_latents, load_latents

        if self.coarse is None:
            raise InputError("editing a Shap-E latent needs the coarse stage; load the pipeline "
                             "with a Shap-E model (shap_e=...)")
        if isinstance(asset, torch.Tensor):
            latent = check_latents(asset, self.coarse.latent_width)
            if latent.shape[0] != 1:
                raise InputError(f"edit takes one Shap-E latent, got {latent.shape[0]} rows; pass latents[i:i + 1]")
            return latent, None
        path = Path(asset)
        if not path.is_file():
            raise AssetNotFoundError(path)
        latent, _ = load_latents(path, width=self.coarse.latent_width)
        return latent, str(path)

    @staticmethod
    def _load_mesh(asset, up_axis: str):
        from .mesh_io import load_mesh

        if isinstance(asset, Mesh):
            return asset.validate(), asset.source
        if not isinstance(asset, (str, os.PathLike)):
            raise InputError(f"asset must be a mesh path, a Mesh or a Shap-E latent, got {type(asset).__name__}")
        return load_mesh(asset, up_axis=up_axis), str(asset)
