"""The coarse stage: Shap-E text-to-3D through diffusers' Shap-E components.

:class:`ShapEGenerator` samples Shap-E latents from prompts (the official Karras/Heun sampler
settings), edits latents by edit-friendly DDPM inversion (:meth:`~ShapEGenerator.invert`,
:meth:`~ShapEGenerator.edit_latents`; :mod:`sharpit.coarse.inversion`), turns a latent into a
vertex-coloured :class:`~sharpit.mesh.Mesh` (signed-distance field + marching cubes), and renders
the six Zero123++ views either from that mesh or by volume rendering the latent directly.

Frames: meshes and cameras are in the sharpit world (z up, front +x, object in the sphere of
radius 0.5). A latent's field lives in Shap-E's frame; its *framing* (a
:class:`~sharpit.mesh.Similarity`) is the rotation :data:`~sharpit.cameras.SHAP_E_TO_SHARPIT`
followed by the centring and scaling that make the zero level set of its signed distance
(extracted at ``grid_size``) fit the radius-0.5 sphere. Both render modes use the same framing, so
the object sits identically in "mesh" and "nerf" views.
"""

from __future__ import annotations

import math
import os
from typing import Any, Dict, List, Optional, Sequence, Union

import torch

from ..cameras import CameraBatch, VIEW_SIZE, zero123plus_cameras
from ..errors import AssetNotFoundError, ConfigError, EmptySurfaceError, InputError
from ..mesh import Mesh, Similarity
from ..sources import SHAP_E_HUB_ID, diffusers_dtype, is_hub_id, load_errors
from .fields import frame_mesh, load_latent_into_mlp, stf_fields, stf_mesh
from .inversion import (DEFAULT_EDIT_GUIDANCE, DEFAULT_EDIT_STRENGTH, DEFAULT_INVERSION_STEPS, ShapEInversion,
                        check_variance, invert_ddpm, regenerate_ddpm)
from .latents import check_latents
from .nerf import render_latent_nerf
from .sampling import (OFFICIAL_SIGMA_MAX, OFFICIAL_SIGMA_MIN, RespacedDDPM, ShapEDiffusionClock, heun_sample,
                       karras_sigmas)

__all__ = ["ShapEGenerator", "SHAP_E_HUB_ID"]



class ShapEGenerator:
    """Shap-E text-to-3D on diffusers components.

    Args:
        prior: ``PriorTransformer`` (predicts the clean latent, ``prediction_type="sample"``).
        text_encoder: ``CLIPTextModelWithProjection``.
        tokenizer: ``CLIPTokenizer``.
        scheduler: the ``HeunDiscreteScheduler`` of ``openai/shap-e``; only its config is used (the
            training diffusion's length and "exp" schedule): sampling runs the official Karras/Heun
            loop of :mod:`sharpit.coarse.sampling`, which differs from diffusers' Heun step in
            where it clamps and which timestep the prior sees.
        renderer: ``ShapERenderer`` (kept in float32: its positional encoding reaches
            ``2^14 * x``, which float16 cannot resolve).
        model_id: the hub id or folder the components came from (recorded in latent metadata).
    """

    def __init__(self, prior, text_encoder, tokenizer, scheduler, renderer, model_id: str = SHAP_E_HUB_ID):
        self.prior = prior.eval()
        self.text_encoder = text_encoder.eval()
        self.tokenizer = tokenizer
        self.scheduler = scheduler
        self.renderer = renderer.eval()
        self.model_id = str(model_id)
        self._clock = ShapEDiffusionClock.from_scheduler_config(scheduler.config)
        self._progress_kwargs: Dict[str, Any] = {}
        prior_width = prior.config.num_embeddings * prior.config.embedding_dim
        rows = sum(int(shape[0]) for shape in renderer.config.param_shapes)
        if prior_width != rows * renderer.config.d_latent:
            raise ConfigError(
                f"the prior makes latents of {prior.config.num_embeddings} x {prior.config.embedding_dim} "
                f"but the renderer reads {rows} x {renderer.config.d_latent}; the components do not match")

    # -- loading ---------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path_or_hub_id: Union[str, "os.PathLike[str]"] = SHAP_E_HUB_ID,
                        torch_dtype: Optional[torch.dtype] = None, device=None) -> "ShapEGenerator":
        """Load the components from a hub id or a folder in the ``openai/shap-e`` layout
        (``prior/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``, ``shap_e_renderer/``).

        Args:
            path_or_hub_id: hub id (``"openai/shap-e"``) or local folder.
            torch_dtype: dtype of the prior and text encoder; float16 on CUDA, float32 on CPU by
                default. The renderer always stays float32.
            device: defaults to CUDA when available, else CPU.
        Raises:
            WeightsNotFoundError: a hub id whose weights are not cached while offline.
            AssetNotFoundError: a local path that does not exist.
            CheckpointError: a local folder with a missing or broken component.
        """
        from diffusers import HeunDiscreteScheduler, PriorTransformer
        from diffusers.pipelines.shap_e import ShapERenderer
        from transformers import CLIPTextModelWithProjection, CLIPTokenizer

        device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        if torch_dtype is None:
            torch_dtype = torch.float16 if device.type == "cuda" else torch.float32
        source = os.fspath(path_or_hub_id)
        if not os.path.exists(source) and not is_hub_id(source):
            raise AssetNotFoundError(source, "no such folder; pass a folder in the openai/shap-e layout "
                                             f"or the hub id {SHAP_E_HUB_ID!r}")
        with load_errors(source, "Shap-E prior"):
            prior = PriorTransformer.from_pretrained(source, subfolder="prior", **diffusers_dtype(torch_dtype))
        with load_errors(source, "Shap-E text encoder"):
            text_encoder = CLIPTextModelWithProjection.from_pretrained(source, subfolder="text_encoder",
                                                                       dtype=torch_dtype)
        with load_errors(source, "Shap-E tokenizer"):
            tokenizer = CLIPTokenizer.from_pretrained(source, subfolder="tokenizer")
        with load_errors(source, "Shap-E scheduler"):
            scheduler = HeunDiscreteScheduler.from_pretrained(source, subfolder="scheduler")
        with load_errors(source, "Shap-E renderer"):
            renderer = ShapERenderer.from_pretrained(source, subfolder="shap_e_renderer",
                                                     **diffusers_dtype(torch.float32))
        gen = cls(prior, text_encoder, tokenizer, scheduler, renderer, model_id=source)
        return gen.to(device)

    def to(self, device) -> "ShapEGenerator":
        """Move every model to ``device`` (in place); returns ``self``."""
        for model in (self.prior, self.text_encoder, self.renderer):
            model.to(device)
        return self

    @property
    def device(self) -> torch.device:
        """Where sampling runs: the prior's device or, when accelerate's offload hooks manage the
        prior (``SharpIt3DPipeline.enable_model_cpu_offload``), their execution device."""
        for module in self.prior.modules():
            device = getattr(getattr(module, "_hf_hook", None), "execution_device", None)
            if device is not None:
                return torch.device(device)
        return self.prior.device

    @property
    def latent_width(self) -> int:
        """W, the length of one flattened latent (1024 * 1024 for ``openai/shap-e``)."""
        return self.prior.config.num_embeddings * self.prior.config.embedding_dim

    def set_progress_bar_config(self, **kwargs) -> None:
        """Options for the tqdm progress bars of :meth:`sample_latents`, :meth:`invert` and
        :meth:`edit_latents` (e.g. ``disable=True``)."""
        self._progress_kwargs = kwargs

    # -- sampling --------------------------------------------------------------------------
    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        """(B, D) text embeddings as Shap-E uses them: CLIP's projected pooled embedding,
        L2-normalised, times ``sqrt(D)`` (D = 768 for ``openai/shap-e``)."""
        ids = self.tokenizer(list(prompts), padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids.to(self.device)
        embeds = self.text_encoder(ids).text_embeds.float()
        embeds = embeds / embeds.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return embeds * math.sqrt(embeds.shape[-1])

    @torch.no_grad()
    def sample_latents(self, prompts: Union[str, Sequence[str]], guidance_scale: float = 15.0,
                       num_inference_steps: int = 64, generator: Optional[torch.Generator] = None,
                       num_per_prompt: int = 1, seed: Optional[int] = None) -> torch.Tensor:
        """Sample Shap-E latents for ``prompts`` with the official sampler.

        Heun's method on Karras sigmas from 160 to 1e-3, no churn, integer model timesteps, and
        each guidance branch's clean-latent prediction clamped to [-1, 1] before guidance, as
        the official ``shap_e`` code samples (see :mod:`sharpit.coarse.sampling`; the Sharp-It
        author used 128 steps). ``num_inference_steps`` steps cost ``2 * steps - 1`` prior calls;
        with guidance the conditional and unconditional (zero embedding) rows share one call.

        Args:
            prompts: a prompt or a non-empty list of prompts.
            guidance_scale: classifier-free guidance scale; 1 (or 0, as in the official sampler)
                disables guidance.
            num_inference_steps: number of Karras steps (official: 64).
            generator: a ``torch.Generator`` for the initial noise; or pass ``seed``. With
                neither, the global RNG is used.
            num_per_prompt: latents per prompt (consecutive rows).
            seed: alternative to ``generator``; the caller's global RNG is never touched.
        Returns:
            (len(prompts) * num_per_prompt, W) float32 latents on the generator's device.
        """
        prompts = _check_prompts(prompts)
        if int(num_per_prompt) < 1:
            raise InputError(f"num_per_prompt must be >= 1, got {num_per_prompt}")
        _check_sampling_args(guidance_scale, num_inference_steps, generator, seed)
        embeds = self.encode_prompts(prompts).repeat_interleave(int(num_per_prompt), dim=0)
        return self.sample_from_embeddings(embeds, guidance_scale, num_inference_steps, generator=generator,
                                           seed=seed)

    @torch.no_grad()
    def sample_from_embeddings(self, embeds: torch.Tensor, guidance_scale: float = 15.0,
                               num_inference_steps: int = 64, generator: Optional[torch.Generator] = None,
                               seed: Optional[int] = None) -> torch.Tensor:
        """Sample one latent per row of precomputed text embeddings (official sampler, as
        :meth:`sample_latents`).

        Args:
            embeds: (B, D) embeddings in the prior's input scale (:meth:`encode_prompts`:
                unit norm times ``sqrt(D)``); the unconditional branch uses zeros.
        Returns:
            (B, W) float32 latents.
        """
        _check_sampling_args(guidance_scale, num_inference_steps, generator, seed)
        width = self.prior.config.embedding_proj_dim
        if not isinstance(embeds, torch.Tensor) or embeds.ndim != 2 or embeds.shape[1] != width \
                or embeds.shape[0] < 1:
            got = tuple(embeds.shape) if isinstance(embeds, torch.Tensor) else type(embeds).__name__
            raise InputError(f"embeds must be a (B, {width}) tensor of text embeddings, got {got}")
        if seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(int(seed))

        from diffusers.utils.torch_utils import randn_tensor

        dev = self.device
        batch = embeds.shape[0]
        denoiser = self._denoiser(embeds, guidance_scale)
        sigmas = karras_sigmas(int(num_inference_steps), OFFICIAL_SIGMA_MIN, OFFICIAL_SIGMA_MAX)
        timesteps = self._clock.timesteps(sigmas[:-1]).to(dev)
        sigmas = sigmas.to(dev)
        c_in = 1.0 / (sigmas ** 2 + 1) ** 0.5
        latents = randn_tensor(self._latent_shape(batch), generator=generator, device=dev,
                               dtype=torch.float32) * sigmas[0]
        denoise = lambda x, i: denoiser(x * c_in[i], timesteps[i])[0]  # noqa: E731
        return heun_sample(denoise, latents, sigmas, self._progress("Shap-E prior")).reshape(batch, -1)

    def _latent_shape(self, batch: int):
        return (batch, self.prior.config.num_embeddings, self.prior.config.embedding_dim)

    def _progress(self, desc: str):
        from tqdm.auto import tqdm

        return lambda steps: tqdm(steps, desc=desc, **self._progress_kwargs)

    def _denoiser(self, embeds: torch.Tensor, guidance_scale: float):
        """The one prior call every sampler uses (Karras/Heun here, DDPM in :mod:`sharpit.coarse.inversion`).

        Returns ``denoise(x_in, t) -> (x0, variance_values)``: ``x_in`` (B, R, C) float32 is the model
        input in the training diffusion's scale (``sqrt(abar_t) x0 + sqrt(1 - abar_t) eps``; a
        Karras sample divided by ``sqrt(sigma^2 + 1)``), ``t`` a 0-d long tensor, the integer
        training timestep. The prior sees ``x_in`` in its dtype with ``timestep=t`` unscaled (as the
        official ``GaussianDiffusion`` calls it). Its output is the clean latent (first C channels)
        and the "learned_range" variance values in [-1, 1] (last C). With guidance (``guidance_scale``
        not 0 or 1) the conditional and unconditional (zero embedding) rows run in one batch in the
        official order [cond, uncond], EACH clean prediction is clamped to [-1, 1] and then
        ``x0 = uncond + s (cond - uncond)`` (not clamped again; the official ``clip_denoised`` +
        ``karras_sample`` convention). ``variance_values`` are the conditional branch's (official
        ``uncond_guide_model`` keeps each row's own variance and samples from the first half).
        Both outputs are float32 (B, R, C).
        """
        dev, dtype = self.device, self.prior.dtype
        channels = self.prior.config.embedding_dim
        guided = float(guidance_scale) not in (0.0, 1.0)
        cond = embeds.to(device=dev, dtype=torch.float32)
        rows = torch.cat([cond, torch.zeros_like(cond)]) if guided else cond   # official order: cond, uncond
        rows = rows.to(dtype)

        def denoise(x_in: torch.Tensor, t: torch.Tensor):
            model_in = x_in.to(dtype)
            if guided:
                model_in = torch.cat([model_in, model_in])
            pred = self.prior(model_in, timestep=t.expand(model_in.shape[0]),
                              proj_embedding=rows).predicted_image_embedding.float()
            x0 = pred[..., :channels].clamp(-1.0, 1.0)                  # clamp per branch
            variance_values = pred[..., channels:]
            if guided:
                x0_cond, x0_uncond = x0.chunk(2)
                x0 = x0_uncond + float(guidance_scale) * (x0_cond - x0_uncond)
                variance_values = variance_values.chunk(2)[0]
            return x0, variance_values

        return denoise

    # -- editing: edit-friendly DDPM inversion (sharpit.coarse.inversion) -----------------------
    @torch.no_grad()
    def invert(self, latents: torch.Tensor, prompt: Union[str, Sequence[str]],
               num_inference_steps: int = DEFAULT_INVERSION_STEPS, guidance_scale: float = DEFAULT_EDIT_GUIDANCE,
               generator: Optional[torch.Generator] = None, variance: str = "posterior") -> ShapEInversion:
        """Invert latents into the edit-friendly noise space of the prior's DDPM (Huberman-Spiegelglas
        et al., CVPR 2024; see :mod:`sharpit.coarse.inversion` for the algorithm and its settings).

        Costs ``num_inference_steps`` prior calls (CFG rows batched with the latents).

        Args:
            latents: (B, W) or (W,) Shap-E latents (e.g. :meth:`sample_latents` or an encoded mesh).
            prompt: a source prompt describing them, or B prompts (one per row).
            num_inference_steps: N DDPM steps (SPEC section 7: 128), >= 2.
            guidance_scale: classifier-free guidance of the source prompt (SPEC: 12); 0 or 1 disable it.
            generator: draws the N noises of q(x_n | x_0) (on its own device, then moved to the
                prior's; a CPU generator gives the same inversion on any device); None: global RNG.
            variance: "posterior" (the paper's eta = 1) or "learned" (the prior's variance output).
        Returns:
            a :class:`~sharpit.coarse.inversion.ShapEInversion` on the prior's device (noise maps
            (N, B, W), the path x_0 .. x_N, the timesteps, prompts and settings); about 1 GiB per
            ``openai/shap-e`` latent at 128 steps.
        Raises:
            InputError: malformed latents, a prompt count that is neither 1 nor B, bad steps,
                guidance or variance, or a CUDA generator for CPU work.
        """
        latents = check_latents(latents, self.latent_width)
        batch = latents.shape[0]
        prompts = _check_prompts(prompt)
        if len(prompts) == 1:
            prompts = prompts * batch
        elif len(prompts) != batch:
            raise InputError(f"got {len(prompts)} prompts for {batch} latents; pass one prompt or one per latent")
        _check_sampling_args(guidance_scale, num_inference_steps, generator, None)
        check_variance(variance)
        dev = self.device
        if generator is not None and generator.device.type != "cpu" and generator.device.type != dev.type:
            raise InputError(f"the generator is on {generator.device} but the prior runs on {dev}; "
                             "pass a CPU generator or one on the prior's device")
        schedule = RespacedDDPM(self._clock, num_inference_steps)
        denoise = self._denoiser(self.encode_prompts(prompts), guidance_scale)
        x0 = latents.to(device=dev, dtype=torch.float32).reshape(self._latent_shape(batch))
        noise_maps, path = invert_ddpm(denoise, schedule, x0, generator, variance,
                                       self._progress("Shap-E inversion"))
        width = self.latent_width
        return ShapEInversion(noise_maps.reshape(schedule.steps, batch, width),
                              {n: x.reshape(batch, width) for n, x in path.items()}, schedule.timesteps,
                              prompts, float(guidance_scale), schedule.steps, variance, self.model_id)

    @torch.no_grad()
    def edit_latents(self, inversion: ShapEInversion, target_prompt: Union[str, Sequence[str]],
                     strength: float = DEFAULT_EDIT_STRENGTH, guidance_scale: float = DEFAULT_EDIT_GUIDANCE,
                     final_residual: bool = True) -> torch.Tensor:
        """Regenerate inverted latents with a target prompt, reusing the inversion's noise maps.

        Restarts at step ``int(N * strength)`` from the inversion's x_n (SPEC section 7) and runs the
        prior's DDPM down to 0 with the stored z_n. With the source prompt(s), the inversion's
        guidance and ``final_residual=True`` this reproduces the inverted latents to float rounding.

        Args:
            inversion: from :meth:`invert` or :meth:`ShapEInversion.load
                <sharpit.coarse.inversion.ShapEInversion.load>`, made with this prior's latent width.
            target_prompt: one prompt for every latent, B prompts (one per latent), or P prompts for
                an inversion of one latent (P edits of it).
            strength: in [0, 1]; 0 returns the inverted latents unchanged, 1 starts from x_N
                (default :data:`~sharpit.coarse.inversion.DEFAULT_EDIT_STRENGTH`, the paper's code's).
            guidance_scale: classifier-free guidance of the target prompt (SPEC: 12).
            final_residual: add the inversion's last-step residual (see :mod:`sharpit.coarse.inversion`;
                False = the paper's code, which zeroes it).
        Returns:
            (B, W) (or (P, W)) float32 latents on the prior's device.
        Raises:
            InputError: not an inversion, one of another latent width or timestep schedule, a strength
                outside [0, 1] or not kept by a saved subset, a bad prompt count or guidance.
        """
        if not isinstance(inversion, ShapEInversion):
            raise InputError(f"inversion must be a ShapEInversion (from ShapEGenerator.invert or "
                             f"ShapEInversion.load), got {type(inversion).__name__}")
        if inversion.latent_width != self.latent_width:
            raise InputError(f"this inversion holds latents of {inversion.latent_width} values but this Shap-E "
                             f"prior makes {self.latent_width}; invert with the same model you edit with")
        schedule = RespacedDDPM(self._clock, inversion.num_inference_steps)
        if not torch.equal(schedule.timesteps, inversion.timesteps.cpu()):
            raise InputError(f"this inversion's {inversion.num_inference_steps} timesteps are not this prior's "
                             f"{schedule.steps}-step DDPM ({self._clock.num_train_timesteps} training steps, "
                             "Shap-E respacing); invert with the same model you edit with")
        _check_guidance(guidance_scale)
        start = inversion.start_for(strength)
        prompts = _check_prompts(target_prompt)
        batch = inversion.batch_size
        if len(prompts) == 1:
            prompts = prompts * batch
        elif len(prompts) != batch and batch != 1:
            raise InputError(f"got {len(prompts)} target prompts for an inversion of {batch} latents; pass one "
                             "prompt or one per latent")
        dev, width = self.device, self.latent_width
        rows = len(prompts)
        x = inversion.path[start].to(device=dev, dtype=torch.float32).expand(rows, width)
        if start == 0:
            return x.clone()
        maps = inversion.noise_maps[:start].reshape(start, batch, *self._latent_shape(1)[1:])
        denoise = self._denoiser(self.encode_prompts(prompts), guidance_scale)
        out = regenerate_ddpm(denoise, schedule, x.reshape(self._latent_shape(rows)), start, maps,
                              inversion.variance, bool(final_residual), self._progress("Shap-E edit"))
        return out.reshape(rows, width)

    def metadata(self, prompts: Union[str, Sequence[str]], guidance_scale: float = 15.0,
                 num_inference_steps: int = 64, seed: Optional[int] = None,
                 num_per_prompt: int = 1) -> Dict[str, Any]:
        """The metadata to store with latents sampled with these arguments (see
        :func:`~sharpit.coarse.save_latents`): one prompt per latent row."""
        prompts = _check_prompts(prompts)
        return {"prompt": [p for p in prompts for _ in range(int(num_per_prompt))], "seed": seed,
                "guidance_scale": float(guidance_scale), "num_inference_steps": int(num_inference_steps),
                "model_id": self.model_id}

    # -- decoding --------------------------------------------------------------------------
    def _one_latent(self, latents: torch.Tensor) -> torch.Tensor:
        latents = check_latents(latents, self.latent_width)
        if latents.shape[0] != 1:
            raise InputError(f"decode one latent at a time: got a batch of {latents.shape[0]}; "
                             "loop over the rows (latents[i])")
        return latents[0]

    @torch.no_grad()
    def _shap_e_mesh(self, latent: torch.Tensor, grid_size: int, with_color: bool, chunk: int) -> Mesh:
        load_latent_into_mlp(self.renderer, latent)
        sdf, color = stf_fields(self.renderer)
        try:
            return stf_mesh(sdf, color if with_color else None, grid_size, device=self.renderer.device,
                            chunk=chunk)
        except EmptySurfaceError as exc:
            raise EmptySurfaceError(f"this Shap-E latent decodes to an empty object ({exc}); sample it again "
                                    "with another seed or prompt") from exc

    def to_mesh(self, latents: torch.Tensor, grid_size: int = 128, chunk: int = 131072) -> Mesh:
        """Extract the surface of one latent as a vertex-coloured mesh.

        The signed-distance field is queried on a ``grid_size^3`` grid over Shap-E's box in chunks
        of ``chunk`` points, marching cubes (scikit-image) takes its zero level, and vertices get
        the texture field's colour (sRGB in [0, 1]).

        Args:
            latents: (W,) or (1, W).
        Returns:
            The mesh in the sharpit world frame, centred, bounding-sphere radius 0.5.
        Raises:
            EmptySurfaceError: when the field has no surface in the box.
        """
        mesh = self._shap_e_mesh(self._one_latent(latents), int(grid_size), True, chunk)
        return frame_mesh(mesh)[0]

    def framing(self, latents: torch.Tensor, grid_size: int = 128, chunk: int = 131072) -> Similarity:
        """The Shap-E-frame -> sharpit-world similarity :meth:`to_mesh` applies at ``grid_size``."""
        mesh = self._shap_e_mesh(self._one_latent(latents), int(grid_size), False, chunk)
        return frame_mesh(mesh)[1]

    def render_views(self, latents: torch.Tensor, cameras: Optional[CameraBatch] = None,
                     size: int = VIEW_SIZE, mode: Optional[str] = None, grid_size: int = 128,
                     n_coarse_samples: int = 64, n_fine_samples: int = 128, ray_batch_size: int = 4096,
                     background: float = 1.0, supersample: Optional[int] = None):
        """Render one latent from ``cameras`` (default: the six Zero123++ v1.2 views).

        ``mode`` and ``supersample`` default to the shared
        :data:`~sharpit.coarse.DEFAULT_COARSE_RENDER` (mesh, 2x), the setting the pipeline and
        ``training/prepare_pairs.py`` use too (see :mod:`sharpit.coarse.render_options`).

        Args:
            latents: (W,) or (1, W).
            cameras: sharpit-world cameras, for an object of radius 0.5 at the origin.
            size: side of each square view in pixels.
            mode: "mesh" renders :meth:`to_mesh` (unlit vertex colours) with
                :func:`sharpit.render.render_views`; "nerf" volume-renders the latent's NeRF
                through the renderer's ray path with ``n_coarse_samples`` + ``n_fine_samples``
                per ray, over the renderer's background (white for ``openai/shap-e``).
            grid_size: the grid that fixes the framing (and the mesh in "mesh" mode).
            background: grey level of the background in "mesh" mode.
            supersample: anti-aliasing: render at ``supersample * size`` and average each
                ``supersample x supersample`` block (in "nerf" mode that many rays per pixel;
                depth is averaged weighted by opacity); 1 disables it.
        Returns:
            a :class:`sharpit.render.MultiViewRender`: images (N, 3, size, size) in [0, 1],
            alpha, depth (along each viewing axis) and, in "mesh" mode, normals ("nerf" mode has no
            surface normals: zeros).
        Raises:
            InputError: an unknown mode, a bad supersample or size, or a bad latent.
        """
        import torch.nn.functional as F

        from ..render import MultiViewRender, render_views
        from .render_options import DEFAULT_COARSE_RENDER, CoarseRenderOptions

        options = CoarseRenderOptions(mode=DEFAULT_COARSE_RENDER.mode if mode is None else mode,
                                      supersample=DEFAULT_COARSE_RENDER.supersample if supersample is None
                                      else supersample)
        if int(size) < 1:
            raise InputError(f"size must be >= 1, got {size}")
        cameras = cameras if cameras is not None else zero123plus_cameras()
        if options.mode == "mesh":
            mesh = self.to_mesh(latents, grid_size)
            return render_views(mesh.to(self.renderer.device), cameras, size=int(size), background=background,
                                supersample=options.supersample)
        framing = self.framing(latents, grid_size)   # loads the latent into the renderer's MLP
        s = options.supersample
        images, alpha, depth = render_latent_nerf(self.renderer, cameras, framing, int(size) * s, n_coarse_samples,
                                                  n_fine_samples, ray_batch_size)
        if s > 1:
            images, alpha, depth_sum = (F.avg_pool2d(t, s) for t in (images, alpha, depth * alpha))
            depth = torch.where(alpha > 0, depth_sum / alpha.clamp_min(1e-12), torch.zeros_like(depth_sum))
        normals = torch.zeros_like(images)
        return MultiViewRender(images=images, alpha=alpha, depth=depth, normals=normals,
                               cameras=cameras.to(images.device))


def _check_sampling_args(guidance_scale, num_inference_steps, generator, seed) -> None:
    if isinstance(num_inference_steps, bool) or int(num_inference_steps) != num_inference_steps \
            or int(num_inference_steps) < 1:
        raise InputError(f"num_inference_steps must be an integer >= 1, got {num_inference_steps!r}")
    _check_guidance(guidance_scale)
    if generator is not None and seed is not None:
        raise InputError("pass either generator or seed, not both")


def _check_guidance(guidance_scale) -> None:
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)) \
            or not math.isfinite(float(guidance_scale)) or guidance_scale < 0:
        raise InputError(f"guidance_scale must be a finite number >= 0, got {guidance_scale!r}")


def _check_prompts(prompts: Union[str, Sequence[str]]) -> List[str]:
    if isinstance(prompts, str):
        prompts = [prompts]
    if not isinstance(prompts, (list, tuple)):
        raise InputError(f"prompts must be a string or a list of strings, got {type(prompts).__name__}")
    if len(prompts) == 0:
        raise InputError("prompts is empty; pass at least one prompt")
    bad = [i for i, p in enumerate(prompts) if not isinstance(p, str)]
    if bad:
        raise InputError(f"every prompt must be a string; prompt {bad[0]} is {type(prompts[bad[0]]).__name__}")
    return list(prompts)
