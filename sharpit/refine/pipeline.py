"""SharpItRefinePipeline: refine a coarse 3x2 multi-view grid into a sharp, view-consistent one."""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DConditionModel
from diffusers.models.attention_processor import XFormersAttnProcessor
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from ..errors import ConfigError, InputError
from ..grid import GRID_COLS, GRID_HEIGHT, GRID_ROWS, GRID_WIDTH, as_grid_tensor, grid_to_views, tensor_to_pil
from ..warn import warn
from .conditioning import (NULL_PROMPT, check_condition_latent_space, check_null_condition, decode_latents,
                           encode_posterior, encode_prompt, encode_target_latents, null_condition_latents,
                           null_condition_posterior, sample_condition_latents, vae_posterior)
from .denoise import conditioned_unet_forward, resolve_conditioning_mode
from .loading import SharpItLoadingMixin
from .reference_attention import disable_reference_attention

__all__ = ["SharpItRefinePipeline", "SharpItRefinePipelineOutput", "coerce_condition", "coerce_condition_images",
           "DEFAULT_NULL_CONDITION", "ZERO123PLUS_BACKGROUND"]

#: Names of the first release, kept for one release: importing them warns (FutureWarning).
DEPRECATED_NAMES = {"SharpItPipeline": "SharpItRefinePipeline",
                    "SharpItPipelineOutput": "SharpItRefinePipelineOutput"}


def __getattr__(name: str):
    """``SharpItPipeline`` and ``SharpItPipelineOutput``: deprecated aliases of the refiner's classes
    (renamed so that the refiner is not confused with :class:`~sharpit.pipeline.SharpIt3DPipeline`)."""
    if name in DEPRECATED_NAMES:
        new = DEPRECATED_NAMES[name]
        warn(f"sharpit: {name} was renamed {new} (the multi-view refiner; the whole text-to-mesh chain is "
             f"SharpIt3DPipeline); the old name will be removed in the next release", FutureWarning)
        return globals()[new]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

_OUTPUT_TYPES = ("pil", "pt", "np", "latent")

#: The null condition a pipeline gets when none is given, by conditioning mode (see
#: :data:`~sharpit.refine.conditioning.NULL_CONDITION_PIXELS` for the official sources):
#:
#: * ``"reference"`` -> ``"grey"``: a 4-channel reference-attention UNet is Zero123++ (or a fine-tune
#:   of it), whose own pipeline guides against the latent of a mid-grey image
#:   (``diffusers-support/pipeline.py``, ``Zero123PlusPipeline.__call__``);
#: * ``"concat"`` -> ``"black"``: Sharp-It's training code is unpublished; the only public recipe
#:   that fine-tunes a Zero123++ grid model on white-background renders, InstantMesh's
#:   (``zero123plus/model.py``, ``MVDiffusion.training_step``), trains its unconditional branch on
#:   the latent of a black image, and guidance should use what the model was trained with.
DEFAULT_NULL_CONDITION = {"reference": "grey", "concat": "black"}
#: Background grey (0-255) of an RGBA single condition image, as Zero123++'s ``to_rgb_image``
#: (``diffusers-support/pipeline.py``) composites it.
ZERO123PLUS_BACKGROUND = 127


@dataclass
class SharpItRefinePipelineOutput(BaseOutput):
    """Output of :class:`SharpItRefinePipeline`.

    Attributes:
        images: per ``output_type``: ``"pil"`` a list of B 640x960 RGB grids; ``"pt"`` a
            (B, 3, 960, 640) float tensor in [0, 1]; ``"np"`` a (B, 960, 640, 3) float32 array in
            [0, 1]; ``"latent"`` the (B, 4, 120, 80) Zero123++-scaled latents.
        views: the six views of each grid (row-major, view i at row i // 2, column i % 2): a list of
            B lists of six 320x320 PIL images, a (B, 6, 3, 320, 320) tensor, a (B, 6, 320, 320, 3)
            array, or (B, 6, 4, 40, 40) latent tiles.
    """

    images: Union[List[Image.Image], torch.Tensor, np.ndarray]
    views: Union[List[List[Image.Image]], torch.Tensor, np.ndarray]


def coerce_condition(condition) -> torch.Tensor:
    """Coarse grid(s) -> (B, 3, 960, 640) float32 in [0, 1], white background.

    Accepts a PIL image, an (H, W, C) array, a (C, H, W) / (B, C, H, W) tensor, a renderer result
    with ``.grid()`` (``sharpit.render.MultiViewRender``), or a list of those. 3:2 grids of other
    sizes are resized with a warning; other shapes, channel counts and NaNs raise ``InputError``.
    """
    if isinstance(condition, (list, tuple)):
        if not condition:
            raise InputError("condition is an empty list; pass at least one 3x2 grid")
        return torch.cat([coerce_condition(c) for c in condition])
    if callable(getattr(condition, "grid", None)):
        condition = condition.grid()
    return as_grid_tensor(condition, background=1.0)


def _is_grid(item) -> bool:
    """True when ``item`` is a 3:2 grid (or a renderer result), False for any other image."""
    if callable(getattr(item, "grid", None)):
        return True
    if isinstance(item, Image.Image):
        w, h = item.size
    elif isinstance(item, (np.ndarray, torch.Tensor)) and item.ndim >= 2:
        h, w = (item.shape[0], item.shape[1]) if isinstance(item, np.ndarray) else item.shape[-2:]
    else:
        return True  # not an image: coerce_condition names the problem
    return h * GRID_COLS == w * GRID_ROWS


def _zero123plus_rgb(image: Image.Image) -> Image.Image:
    """RGB as Zero123++'s ``to_rgb_image``: RGBA is pasted through its alpha onto grey 127."""
    if image.mode not in ("RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.getbands() or "transparency" in image.info else "RGB")
    if image.mode == "RGB":
        return image
    rgb = Image.new("RGB", image.size, (ZERO123PLUS_BACKGROUND,) * 3)
    rgb.paste(image, mask=image.getchannel("A"))
    return rgb


def coerce_condition_images(images) -> List[Image.Image]:
    """Single condition image(s) -> RGB PIL images (RGBA composited on Zero123++'s grey 127).

    Accepts PIL images, (H, W, C) arrays (uint8, or float in [0, 1]), (C, H, W) / (B, C, H, W)
    tensors in [0, 1] with 3 or 4 channels, or a list of those.
    """
    if isinstance(images, (list, tuple)):
        if not images:
            raise InputError("condition is an empty list; pass at least one image")
        return [im for item in images for im in coerce_condition_images(item)]
    if isinstance(images, Image.Image):
        return [_zero123plus_rgb(images)]
    if isinstance(images, np.ndarray):
        if images.ndim != 3:
            raise InputError(f"expected an (H, W, C) image array, got shape {images.shape}")
        if images.dtype == np.uint8:
            return [_zero123plus_rgb(Image.fromarray(images))]
        images = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).permute(2, 0, 1)
    if not isinstance(images, torch.Tensor) or images.ndim not in (3, 4) or images.shape[-3] not in (3, 4):
        raise InputError("a condition image must be a PIL image, an (H, W, C) array or a (C, H, W) / "
                         "(B, C, H, W) tensor with 3 or 4 channels")
    if not bool(torch.isfinite(images).all()):
        raise InputError("condition image contains NaN or inf values")
    return [_zero123plus_rgb(tensor_to_pil(im)) for im in (images if images.ndim == 4 else images[None])]


class SharpItRefinePipeline(SharpItLoadingMixin, DiffusionPipeline):
    r"""Multi-view refiner of Sharp-It: coarse 3x2 grid + prompt -> refined 3x2 grid; also stock Zero123++.

    Components: ``vae`` (AutoencoderKL), ``text_encoder`` (CLIPTextModel), ``tokenizer``
    (CLIPTokenizer), ``unet`` (UNet2DConditionModel, v-prediction), ``scheduler``
    (EulerAncestralDiscreteScheduler, ``timestep_spacing="trailing"``), and the optional
    Zero123++ image-conditioning components ``vision_encoder`` (CLIPVisionModelWithProjection),
    ``feature_extractor_clip`` and ``feature_extractor_vae`` (CLIPImageProcessor). Pipelines without
    them (every Sharp-It pipeline) save and load as usual (``_optional_components``).

    Saved settings (``register_to_config``, written to ``model_index.json``):

    * ``conditioning_mode``: ``"concat"`` (UNet with 8 input channels: [noisy, condition]),
      ``"reference"`` (4-channel UNet, Zero123++ reference attention) or None to infer it from the UNet;
    * ``null_condition``: the constant image whose latent is the unconditional condition,
      ``"black"`` or ``"grey"`` (:data:`~sharpit.refine.conditioning.NULL_CONDITION_PIXELS`); None
      picks :data:`DEFAULT_NULL_CONDITION` for the mode (grey for Zero123++-style reference UNets,
      black for concat UNets, see there why);
    * ``condition_latent_space``: ``"raw"`` (default) or ``"scaled"``
      (:data:`~sharpit.refine.conditioning.CONDITION_LATENT_SPACES`); reference mode is ``"raw"``
      only, as in Zero123++;
    * ``ramping_coefficients``: with a ``vision_encoder``, the 77 per-token weights of the CLIP
      image embedding added to the conditional prompt row (Zero123++'s ``model_index.json``).

    With a ``vision_encoder`` the conditional prompt row becomes, as in Zero123++
    (``diffusers-support/pipeline.py``, ``Zero123PlusPipeline.__call__``),
    ``text_embeds + image_embeds[:, None, :] * ramping_coefficients[:, None]``, where
    ``image_embeds`` is ``vision_encoder(feature_extractor_clip(condition image)).image_embeds``;
    the unconditional row stays the plain negative prompt.
    """

    model_cpu_offload_seq = "text_encoder->vision_encoder->unet->vae"
    _optional_components = ["vision_encoder", "feature_extractor_clip", "feature_extractor_vae"]
    _callback_tensor_inputs = ["latents", "prompt_embeds", "condition_latents"]

    def __init__(self, vae: AutoencoderKL, text_encoder, tokenizer, unet: UNet2DConditionModel, scheduler,
                 vision_encoder=None, feature_extractor_clip=None, feature_extractor_vae=None,
                 conditioning_mode: Optional[str] = None, null_condition: Optional[str] = None,
                 condition_latent_space: str = "raw", ramping_coefficients: Optional[Sequence[float]] = None):
        super().__init__()
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                              scheduler=scheduler, vision_encoder=vision_encoder,
                              feature_extractor_clip=feature_extractor_clip,
                              feature_extractor_vae=feature_extractor_vae)
        mode = resolve_conditioning_mode(unet.config.in_channels, vae.config.latent_channels, conditioning_mode)
        null_condition = check_null_condition(DEFAULT_NULL_CONDITION[mode] if null_condition is None
                                              else null_condition)
        if check_condition_latent_space(condition_latent_space) != "raw" and mode == "reference":
            raise ConfigError(f"condition_latent_space={condition_latent_space!r} is for concat mode; Zero123++'s "
                              "reference attention noises the raw VAE sample (use 'raw')")
        ramping_coefficients = self._check_global_embedding(vision_encoder, feature_extractor_clip,
                                                            ramping_coefficients, text_encoder, tokenizer)
        self.register_to_config(conditioning_mode=conditioning_mode, null_condition=null_condition,
                                condition_latent_space=condition_latent_space,
                                ramping_coefficients=ramping_coefficients)
        self._attention_backend = "sdpa"
        self._attention_resolved = False
        self._null_posteriors: Dict[tuple, tuple] = {}

    @staticmethod
    def _check_global_embedding(vision_encoder, feature_extractor_clip, ramping, text_encoder,
                                tokenizer) -> Optional[List[float]]:
        if vision_encoder is None and feature_extractor_clip is None and ramping is None:
            return None
        if vision_encoder is None or feature_extractor_clip is None or ramping is None:
            raise ConfigError("the CLIP global embedding needs vision_encoder, feature_extractor_clip and "
                              "ramping_coefficients together (or none of them)")
        ramping = [float(r) for r in ramping]
        if len(ramping) != tokenizer.model_max_length:
            raise ConfigError(f"ramping_coefficients must have one value per prompt token "
                              f"({tokenizer.model_max_length}), got {len(ramping)}")
        if vision_encoder.config.projection_dim != text_encoder.config.hidden_size:
            raise ConfigError(f"the vision encoder projects to {vision_encoder.config.projection_dim} features but "
                              f"the text encoder's embeddings have {text_encoder.config.hidden_size}")
        return ramping

    # ---------------------------------------------------------------- configuration
    @property
    def conditioning_mode(self) -> str:
        """The resolved mode, ``"concat"`` or ``"reference"``."""
        return resolve_conditioning_mode(self.unet.config.in_channels, self.vae.config.latent_channels,
                                         self.config.conditioning_mode)

    def set_attention_backend(self, backend: str = "sdpa") -> None:
        """``"sdpa"`` (PyTorch scaled-dot-product attention with diffusers' default processors: the
        default, as fast as xformers in PyTorch >= 2 and in the core install), ``"xformers"`` (CUDA
        only), or ``"auto"``: xformers when importable and the UNet runs on CUDA, else SDPA."""
        if backend not in ("auto", "sdpa", "xformers"):
            raise ConfigError(f"attention backend must be 'auto', 'sdpa' or 'xformers', got {backend!r}")
        self._attention_backend = backend
        self._attention_resolved = False

    def _apply_attention_backend(self, device: torch.device) -> None:
        if self._attention_resolved:
            return
        backend = self._attention_backend
        if backend == "auto":
            try:
                import xformers.ops  # noqa: F401
                backend = "xformers" if device.type == "cuda" else "sdpa"
            except ImportError:
                backend = "sdpa"
        disable_reference_attention(self.unet)
        if backend == "xformers":
            if device.type != "cuda":
                raise ConfigError("xformers attention needs CUDA tensors; use the 'sdpa' backend on this device")
            self.enable_xformers_memory_efficient_attention()
        elif any(isinstance(p, XFormersAttnProcessor) for p in self.unet.attn_processors.values()):
            self.disable_xformers_memory_efficient_attention()
        self._attention_resolved = True

    def enable_vae_slicing(self) -> None:
        """Encode/decode the batch one image at a time (lower peak memory)."""
        self.vae.enable_slicing()

    def disable_vae_slicing(self) -> None:
        self.vae.disable_slicing()

    def enable_vae_tiling(self) -> None:
        """Encode/decode in overlapping tiles (lower peak memory for the 960x640 grid)."""
        self.vae.enable_tiling()

    def disable_vae_tiling(self) -> None:
        self.vae.disable_tiling()

    def optimize_unet(self, channels_last: bool = True, compile: bool = False,
                      compile_mode: Optional[str] = None) -> None:
        """Use channels_last memory format and/or ``torch.compile`` the UNet in place (``nn.Module.compile``)."""
        if channels_last:
            self.unet.to(memory_format=torch.channels_last)
        if compile:
            self.unet.compile(mode=compile_mode, fullgraph=False)

    # ---------------------------------------------------------------- building blocks
    def encode_prompt(self, prompt: Union[str, Sequence[str]], device: Optional[torch.device] = None,
                      ) -> torch.Tensor:
        """(B, 77, D) CLIP embeddings of ``prompt`` (see :func:`sharpit.refine.encode_prompt`)."""
        return encode_prompt(self.tokenizer, self.text_encoder, prompt,
                             device or self._execution_device)

    def null_condition_posterior(self, latent_size: Sequence[int], device: Optional[torch.device] = None,
                                 ) -> torch.Tensor:
        """(1, 2C, h, w) posterior of the ``null_condition`` image for latents of ``latent_size`` (h, w).

        Encoded once per (setting, size, device, VAE dtype) and cached (the VAE is frozen);
        see :func:`~sharpit.refine.conditioning.null_condition_posterior`.
        """
        device = torch.device(device) if device is not None else self._execution_device
        size = tuple(int(v) for v in latent_size)
        key = (self.config.null_condition, size, str(device), self.vae.dtype)
        hit = self._null_posteriors.get(key)
        if hit is None or hit[0]() is not self.vae:
            hit = (weakref.ref(self.vae), null_condition_posterior(self.vae, self.config.null_condition, size, device))
            self._null_posteriors[key] = hit
        return hit[1]

    def null_condition_latents(self, batch: int, latent_size: Sequence[int], generator=None,
                               device: Optional[torch.device] = None) -> torch.Tensor:
        """(batch, C, h, w) unconditional condition latents: fresh samples of the cached null posterior."""
        return null_condition_latents(self.null_condition_posterior(latent_size, device), batch, generator,
                                      self.config.condition_latent_space, self.vae.config.scaling_factor)

    def prepare_condition_latents(self, condition: Union[torch.Tensor, List[Image.Image]], generator=None,
                                  guidance: bool = False) -> torch.Tensor:
        """Condition latents in the ``condition_latent_space`` setting.

        Args:
            condition: (B, 3, H, W) grids in [0, 1] (-> (B, C, H/8, W/8)), or B RGB PIL condition
                images, preprocessed by ``feature_extractor_vae`` as Zero123++ does (512x512 -> 64x64).
            generator: for the posterior samples (the condition's, then the null condition's).
            guidance: prepend the unconditional latents (:meth:`null_condition_latents`), giving
                ``[null, condition]`` with 2B rows, the order of the batched CFG call.
        """
        device = self._execution_device
        if isinstance(condition, torch.Tensor):
            posterior = encode_posterior(self.vae, condition, device)
        else:
            if self.feature_extractor_vae is None:
                raise InputError("single condition images need the feature_extractor_vae of Zero123++ "
                                 "(SharpItRefinePipeline.from_zero123plus(..., global_embedding=True)); pass 3x2 grids")
            vae_input = self.feature_extractor_vae(images=condition, return_tensors="pt").pixel_values
            posterior = vae_posterior(self.vae, vae_input, device)
        cond = sample_condition_latents(posterior, generator, self.config.condition_latent_space,
                                        self.vae.config.scaling_factor)
        if not guidance:
            return cond
        null = self.null_condition_latents(cond.shape[0], cond.shape[-2:], generator, device)
        return torch.cat([null.to(cond), cond])

    def encode_image_embeds(self, images: List[Image.Image], device: Optional[torch.device] = None) -> torch.Tensor:
        """(B, D) CLIP image embeddings of RGB PIL images: ``vision_encoder(feature_extractor_clip(images)).image_embeds``."""
        if self.vision_encoder is None:
            raise ConfigError("this pipeline has no vision_encoder (no CLIP global embedding)")
        pixels = self.feature_extractor_clip(images=images, return_tensors="pt").pixel_values
        pixels = pixels.to(device=device or self._execution_device, dtype=self.vision_encoder.dtype)
        return self.vision_encoder(pixels).image_embeds

    def add_global_embedding(self, prompt_embeds: torch.Tensor, image_embeds: torch.Tensor) -> torch.Tensor:
        """Zero123++'s ramped global embedding: ``prompt_embeds + image_embeds[:, None] * ramp[:, None]``.

        ``prompt_embeds`` (B, 77, D), ``image_embeds`` (B, D); ``ramp`` is the ``ramping_coefficients``
        setting (77 values), as ``Zero123PlusPipeline.__call__`` (``diffusers-support/pipeline.py``).
        """
        ramp = image_embeds.new_tensor(self.config.ramping_coefficients)[:, None]
        return prompt_embeds + image_embeds[:, None, :] * ramp

    def predict(self, model_input: torch.Tensor, timestep, prompt_embeds: torch.Tensor,
                condition_latents: torch.Tensor, generator=None) -> torch.Tensor:
        """One conditioned UNet call (two passes in reference mode, with fresh reference noise).

        Shapes: ``model_input`` and ``condition_latents`` (N, 4, h, w), ``prompt_embeds`` (N, 77, D).
        """
        noise = None
        if self.conditioning_mode == "reference":
            noise = randn_tensor(condition_latents.shape, generator=generator, device=condition_latents.device,
                                 dtype=condition_latents.dtype)
        return conditioned_unet_forward(self.unet, model_input, timestep, prompt_embeds, condition_latents,
                                        self.conditioning_mode, scheduler=self.scheduler, reference_noise=noise)

    def labelled_progress_bar(self, total: int, label: str):
        """diffusers' progress bar over ``total`` steps, labelled ``label`` unless the user's
        :meth:`set_progress_bar_config` gives a ``desc`` (theirs wins)."""
        bar = self.progress_bar(total=total)
        if "desc" not in getattr(self, "_progress_bar_config", {}):
            bar.set_description(label)
        return bar

    def denoise_step(self, latents: torch.Tensor, timestep, prompt_embeds: torch.Tensor,
                     condition_latents: torch.Tensor, guidance_scale: float, generator=None) -> torch.Tensor:
        """One scheduler step: (B, 4, h, w) latents at ``timestep`` -> latents at the next timestep.

        With ``guidance_scale > 1``, ``prompt_embeds`` and ``condition_latents`` hold 2B rows,
        ``[unconditional, conditional]``, and the UNet runs once on the doubled batch.
        """
        do_cfg = guidance_scale > 1.0
        model_input = torch.cat([latents, latents]) if do_cfg else latents
        model_input = self.scheduler.scale_model_input(model_input, timestep)
        pred = self.predict(model_input, timestep, prompt_embeds, condition_latents, generator)
        if do_cfg:
            uncond, cond = pred.chunk(2)
            pred = uncond + guidance_scale * (cond - uncond)
        return self.scheduler.step(pred, timestep, latents, generator=generator, return_dict=False)[0]

    def _timesteps(self, num_inference_steps: int, strength: float, device) -> torch.Tensor:
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        steps = min(int(num_inference_steps * strength), num_inference_steps)
        if steps < 1:
            raise InputError(f"strength={strength} with num_inference_steps={num_inference_steps} leaves no "
                             "denoising step; raise strength or num_inference_steps")
        start = (num_inference_steps - steps) * self.scheduler.order
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(start)
        return self.scheduler.timesteps[start:]

    @staticmethod
    def _check_args(num_inference_steps, guidance_scale, strength, output_type, generator, seed):
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) \
                or num_inference_steps < 1:
            raise InputError(f"num_inference_steps must be an integer >= 1, got {num_inference_steps!r}")
        if not isinstance(strength, (int, float)) or not 0.0 < strength <= 1.0:
            raise InputError(f"strength must lie in (0, 1] (1 = start from pure noise), got {strength!r}")
        if not isinstance(guidance_scale, (int, float)) or not math.isfinite(guidance_scale):
            raise InputError(f"guidance_scale must be a finite number, got {guidance_scale!r}")
        if output_type not in _OUTPUT_TYPES:
            raise InputError(f"output_type must be one of {_OUTPUT_TYPES}, got {output_type!r}")
        if generator is not None and seed is not None:
            raise InputError("pass either generator or seed, not both")

    @staticmethod
    def _prompt_list(prompt, batch: int, what: str) -> List[str]:
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not all(isinstance(p, str) for p in prompts):
            raise InputError(f"{what} must be a string or a list of strings")
        if len(prompts) == 1:
            prompts = prompts * batch
        if len(prompts) != batch:
            raise InputError(f"got {len(prompts)} {what}s for {batch} condition grids; pass one or {batch}")
        return prompts

    # ---------------------------------------------------------------- call
    def _split_condition(self, condition) -> Tuple[Optional[torch.Tensor], Optional[List[Image.Image]]]:
        """``(grids, None)`` for 3:2 grid(s), ``(None, images)`` for single condition image(s)."""
        items = condition if isinstance(condition, (list, tuple)) else [condition]
        single = [not _is_grid(item) for item in items]
        if not any(single):
            return coerce_condition(condition), None
        if not all(single):
            raise InputError("condition mixes 3:2 grids and single images; pass one kind")
        if self.feature_extractor_vae is None or self.conditioning_mode != "reference":
            raise InputError("condition must be a 3x2 grid (height:width = 3:2, e.g. 960x640); single condition "
                             "images need stock Zero123++ (reference mode with its feature extractors: "
                             "SharpItRefinePipeline.from_zero123plus(base, unet=None))")
        return None, coerce_condition_images(condition)

    @torch.no_grad()
    def __call__(
        self,
        condition,
        prompt: Union[str, List[str]] = NULL_PROMPT,
        negative_prompt: Optional[Union[str, List[str]]] = None,
        num_inference_steps: int = 75,
        guidance_scale: float = 4.0,
        strength: float = 1.0,
        init_grid=None,
        generator: Optional[torch.Generator] = None,
        seed: Optional[int] = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Optional[Callable[["SharpItRefinePipeline", int, torch.Tensor, Dict], Dict]] = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
    ):
        r"""Refine coarse grid(s), or run stock Zero123++ on condition image(s).

        Args:
            condition: the coarse 3x2 grid(s): PIL (640x960), array, (3|4, 960, 640) or (B, C, 960, 640)
                tensor in [0, 1], a ``MultiViewRender``, or a list of those; alpha is composited on
                white. In stock Zero123++ mode (reference mode with ``feature_extractor_vae``) also
                single condition image(s) of any other aspect (PIL, (H, W, C) array or (C, H, W)
                tensor; alpha on grey 127), preprocessed exactly as Zero123++ does.
            prompt: text prompt(s), one or one per condition.
            negative_prompt: prompt(s) of the unconditional branch ("" by default); that branch also
                gets the null condition latent (the ``null_condition`` setting) and no image embedding.
            num_inference_steps: scheduler steps (75 as in Sharp-It).
            guidance_scale: classifier-free guidance scale; ``<= 1`` disables CFG (one UNet batch per step).
            strength: in (0, 1]; 1 starts from pure noise, smaller values start from a grid noised to
                that level (SDEdit) and run ``int(num_inference_steps * strength)`` steps.
            init_grid: the 3x2 grid(s) SDEdit starts from when ``strength < 1``; default the condition
                grid. With a single condition image it is required for ``strength < 1`` (the paper's
                "Zero123++ + SDEdit" baseline: ``pipe(front_view, init_grid=coarse_grid, strength=0.6)``).
            generator / seed: randomness (``seed`` seeds a generator on the execution device), drawn in this order: condition posterior sample(s), null
                condition sample(s), initial noise, SDEdit init posterior sample, then per step the
                reference noise (reference mode) and the ancestral noise (Zero123++'s order).
            output_type: ``"pil"``, ``"pt"``, ``"np"`` or ``"latent"`` (see :class:`SharpItRefinePipelineOutput`).
            callback_on_step_end: ``f(pipe, step, timestep, tensors) -> dict`` after each step; the
                returned dict may replace the tensors named in ``callback_on_step_end_tensor_inputs``.
        Returns:
            :class:`SharpItRefinePipelineOutput`, or ``(images, views)`` when ``return_dict`` is False.
        """
        self._check_args(num_inference_steps, guidance_scale, strength, output_type, generator, seed)
        unknown = set(callback_on_step_end_tensor_inputs) - set(self._callback_tensor_inputs)
        if unknown:
            raise InputError(f"callback tensor inputs must be among {self._callback_tensor_inputs}, got {sorted(unknown)}")
        if seed is not None:   # a generator on the execution device: noise is drawn where it is used
            generator = torch.Generator(self._execution_device).manual_seed(int(seed))
        pixels, images = self._split_condition(condition)
        batch = pixels.shape[0] if pixels is not None else len(images)
        init = coerce_condition(init_grid) if init_grid is not None else pixels
        if init is not None and init.shape[0] != batch:
            raise InputError(f"got {init.shape[0]} init grids for {batch} conditions; pass one per condition")
        if init is None and strength < 1.0:
            raise InputError("strength < 1 starts from a grid: pass init_grid= with a single condition image")
        prompts = self._prompt_list(prompt, batch, "prompt")
        negatives = self._prompt_list(NULL_PROMPT if negative_prompt is None else negative_prompt, batch,
                                      "negative prompt")
        device = self._execution_device
        self._apply_attention_backend(device)
        do_cfg = guidance_scale > 1.0
        dtype = self.unet.dtype

        prompt_embeds = self.encode_prompt(prompts if not do_cfg else negatives + prompts, device)
        if self.vision_encoder is not None:
            clip_images = images if images is not None else [tensor_to_pil(g) for g in pixels]
            image_embeds = self.encode_image_embeds(clip_images, device)
            uncond, cond = prompt_embeds[:-batch], prompt_embeds[-batch:]
            prompt_embeds = torch.cat([uncond, self.add_global_embedding(cond, image_embeds.to(cond))])
        prompt_embeds = prompt_embeds.to(device=device, dtype=dtype)
        condition_latents = self.prepare_condition_latents(pixels if pixels is not None else images, generator,
                                                           guidance=do_cfg)
        condition_latents = condition_latents.to(device=device, dtype=dtype)

        timesteps = self._timesteps(num_inference_steps, strength, device)
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        height, width = tuple(init.shape[-2:]) if init is not None else (GRID_HEIGHT, GRID_WIDTH)
        shape = (batch, self.vae.config.latent_channels, height // factor, width // factor)
        noise = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        if strength < 1.0:
            start = encode_target_latents(self.vae, init, generator, device).to(device=device, dtype=dtype)
            latents = self.scheduler.add_noise(start, noise, timesteps[:1].repeat(batch))
        else:
            latents = noise * self.scheduler.init_noise_sigma

        with self.labelled_progress_bar(len(timesteps), "Sharp-It refiner") as progress:
            for i, t in enumerate(timesteps):
                latents = self.denoise_step(latents, t, prompt_embeds, condition_latents, guidance_scale, generator)
                if callback_on_step_end is not None:
                    local = {"latents": latents, "prompt_embeds": prompt_embeds,
                             "condition_latents": condition_latents}
                    out = callback_on_step_end(
                        self, i, t, {k: local[k] for k in callback_on_step_end_tensor_inputs}) or {}
                    latents = out.get("latents", latents)
                    prompt_embeds = out.get("prompt_embeds", prompt_embeds)
                    condition_latents = out.get("condition_latents", condition_latents)
                progress.update()

        images, views = self._postprocess(latents, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return images, views
        return SharpItRefinePipelineOutput(images=images, views=views)

    def _postprocess(self, latents: torch.Tensor, output_type: str):
        if output_type == "latent":
            return latents, grid_to_views(latents)
        grids = decode_latents(self.vae, latents, self._execution_device)
        if not bool(torch.isfinite(grids).all()):
            warn("the decoded grid contains NaN/inf values (fp16 overflow?); try bfloat16 or float32")
        views = grid_to_views(grids)
        if output_type == "pt":
            return grids, views
        if output_type == "np":
            return grids.permute(0, 2, 3, 1).cpu().numpy(), views.permute(0, 1, 3, 4, 2).cpu().numpy()
        grids = grids.cpu()
        return [tensor_to_pil(g) for g in grids], [[tensor_to_pil(v) for v in vs] for vs in views.cpu()]
