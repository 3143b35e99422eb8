"""Shap-E's encoder (the "transmitter" encoder of ``openai/shap-e``): any mesh -> a Shap-E latent
that :meth:`sharpit.coarse.ShapEGenerator.to_mesh` decodes.

Released files (``shap_e/models/download.py``): ``transmitter.pt``, a plain state dict with
``encoder.*`` keys (this model) and ``renderer.*`` keys (the NeRF/STF decoder, which diffusers'
``ShapERenderer`` in ``openai/shap-e`` already carries; ignored here), and
``transmitter_config.yaml``. ``encoder.params_proj.*`` (latent -> decoder MLP weights, the
decoder's half; diffusers' ``ShapERenderer.params_proj``) is checked for shape and ignored too.

The released config is not in the ``openai/shap-e`` repository (it is downloaded from
``openaipublic.azureedge.net``). Its ``encoder`` section as vendored by public code
(``isl-org/unifi3d`` ``configs/net_encode/shap_e_ae.yaml``, and a verbatim copy with the released
``latent_bottleneck: clamp_diffusion_noise`` found by code search) is:
``PointCloudPerceiverChannelsEncoder``, ``cross_attention_dataset: pcl_and_multiview_pcl``,
``d_latent 1024, data_ctx 1024, fps_method first, heads 8, init_scale 0.25,
inner_batch_size [16384, 20], input_channels 6, layers 12, max_depth 9.0, max_unrolls 1,
min_unrolls 1, patch_size 8, pointconv_hidden [1024, 1024], pointconv_padding_mode circular,
pointconv_patch_size 8, pointconv_samples 64, pointconv_stride 4, pos_emb nerf, use_depth true,
use_pointconv true, width 1024`` (so ``xattn_layers 1``, ``pointconv_radius 0.5`` and
``image_size 256`` by the class defaults; the notebook renders 256 px views), renderer
``NeRSTFRenderer`` with ``d_hidden 256, n_meta_layers 4`` (1024 latent rows). These are the
defaults below; a folder's own ``transmitter_config.yaml`` always wins, and every value is saved
in ``config.json`` by :meth:`ShapEEncoder.save_pretrained`. The input settings (renders, point
sampling: :class:`~sharpit.coarse.encoder_inputs.EncoderInputSettings`) are fixed in the official
code, not in the YAML; an optional sharpit-only ``sharpit_inputs`` section may override them
(the tiny test layout does; the released file has none).

Layouts :meth:`ShapEEncoder.from_pretrained` reads: (a) the released one (a folder with
``transmitter.pt`` + ``transmitter_config.yaml``; the ``.pt`` through
:func:`sharpit.safe_load.load_checkpoint`, never plain unpickling); (b) sharpit's own
(``config.json`` + ``diffusion_pytorch_model.safetensors``), which
``ShapEEncoder.from_pretrained(released).save_pretrained(dir)`` converts to once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from ..errors import CheckpointError, ConfigError, CorruptFileError, InputError, UnsupportedFormatError
from ..mesh import Mesh
from ..sources import (TRANSMITTER_CONFIG_FILENAME, TRANSMITTER_FILENAME, diffusers_dtype, is_hub_id, load_errors,
                       one_dtype)
from .encoder_inputs import EncoderInputSettings, prepare_encoder_inputs
from .encoder_model import EncoderNetwork, ShapEEncoderInputs

__all__ = ["ShapEEncoder", "encoder_config_from_yaml"]

_PathLike = Union[str, "os.PathLike[str]"]
#: Values of the released config this implementation computes (anything else is refused).
_FIXED = {"name": "PointCloudPerceiverChannelsEncoder", "cross_attention_dataset": "pcl_and_multiview_pcl",
          "fps_method": "first", "pos_emb": "nerf", "use_pointconv": True, "use_depth": True, "input_channels": 6,
          "max_unrolls": 1}
#: Bottlenecks whose inference behaviour is ``tanh`` (their noise is training-only).
_TANH_BOTTLENECKS = ("clamp_noise", "clamp_diffusion_noise")


def encoder_config_from_yaml(tree: dict, where: str = TRANSMITTER_CONFIG_FILENAME) -> dict:
    """:class:`ShapEEncoder` config from a parsed ``transmitter_config.yaml``.

    Raises:
        ConfigError: not a transmitter config, or an encoder variant this implementation does not
            compute (the message names the setting).
    """
    if not isinstance(tree, dict) or tree.get("name") != "Transmitter" or not isinstance(tree.get("encoder"), dict):
        raise ConfigError(f"{where}: expected a Shap-E transmitter config (name: Transmitter, an encoder section)")
    enc = tree["encoder"]
    for key, value in _FIXED.items():
        if enc.get(key, value) != value:
            raise ConfigError(f"{where}: encoder.{key} = {enc.get(key)!r} is not supported (sharpit computes the "
                              f"released encoder, {key} = {value!r})")
    bottleneck = (enc.get("latent_bottleneck") or {"name": "identity"}).get("name")
    if bottleneck not in _TANH_BOTTLENECKS + ("identity",):
        raise ConfigError(f"{where}: encoder.latent_bottleneck {bottleneck!r} is not supported")
    if (enc.get("latent_warp") or {"name": "identity"}).get("name") != "identity":
        raise ConfigError(f"{where}: encoder.latent_warp must be identity")
    inner = enc.get("inner_batch_size")
    if not isinstance(inner, list) or len(inner) != 2:
        raise ConfigError(f"{where}: encoder.inner_batch_size must be [points, views], got {inner!r}")
    extra = tree.get("sharpit_inputs") or {}
    allowed = {"render_factor", "point_cloud_views", "point_cloud_render_size", "random_sample_count",
               "camera_distance", "fov", "ambient", "diffuse", "light_direction"}
    if not isinstance(extra, dict) or set(extra) - allowed:
        raise ConfigError(f"{where}: sharpit_inputs may only set {sorted(allowed)}, got {extra!r}")
    try:
        nerstf = tree["renderer"]["nerstf"]
        latent_ctx = int(nerstf["d_hidden"]) * int(nerstf["n_meta_layers"])
        width = int(enc.get("width", 512))
        return dict(width=width, heads=int(enc.get("heads", 8)), layers=int(enc.get("layers", 12)),
                    xattn_layers=int(enc.get("xattn_layers", 1)), d_latent=int(enc.get("d_latent", 512)),
                    latent_ctx=latent_ctx, data_ctx=int(enc.get("data_ctx", 1)),
                    pointconv_radius=float(enc.get("pointconv_radius", 0.5)),
                    pointconv_samples=int(enc.get("pointconv_samples", 32)),
                    pointconv_hidden=[int(h) for h in enc.get("pointconv_hidden") or [width]],
                    pointconv_patch_size=int(enc.get("pointconv_patch_size", 1)),
                    pointconv_stride=int(enc.get("pointconv_stride", 1)),
                    pointconv_padding_mode=str(enc.get("pointconv_padding_mode", "zeros")),
                    patch_size=int(enc.get("patch_size", 32)), max_depth=float(enc.get("max_depth", 5.0)),
                    tanh_bottleneck=bottleneck != "identity", point_count=int(inner[0]), num_views=int(inner[1]),
                    image_size=int(enc.get("image_size", 256)), **extra)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: incomplete or malformed transmitter config ({type(exc).__name__}: {exc})") from exc


class ShapEEncoder(ModelMixin, ConfigMixin):
    """The released Shap-E encoder (a diffusers ``ModelMixin``, so ``save_pretrained``,
    ``from_pretrained``, ``.to()`` and ``torch_dtype`` work as for every other sharpit model).

    Config (defaults = the released ``transmitter_config.yaml``, see the module docstring):
    the network's sizes (:class:`~sharpit.coarse.encoder_model.EncoderNetwork`), whether the
    bottleneck is ``tanh``, and how inputs are made (:class:`~sharpit.coarse.encoder_inputs.EncoderInputSettings`:
    ``point_count`` and ``num_views`` are the released ``inner_batch_size``).
    """

    config_name = "config.json"

    @register_to_config
    def __init__(self, width: int = 1024, heads: int = 8, layers: int = 12, xattn_layers: int = 1,
                 d_latent: int = 1024, latent_ctx: int = 1024, data_ctx: int = 1024, pointconv_radius: float = 0.5,
                 pointconv_samples: int = 64, pointconv_hidden: Sequence[int] = (1024, 1024),
                 pointconv_patch_size: int = 8, pointconv_stride: int = 4, pointconv_padding_mode: str = "circular",
                 patch_size: int = 8, max_depth: float = 9.0, tanh_bottleneck: bool = True, point_count: int = 16384,
                 num_views: int = 20, image_size: int = 256, render_factor: int = 2, point_cloud_views: int = 40,
                 point_cloud_render_size: int = 512, random_sample_count: int = 2 ** 19, camera_distance: float = 2.0,
                 fov: Optional[float] = None, ambient: float = 0.3, diffuse: float = 0.7,
                 light_direction: Optional[Sequence[float]] = None):
        super().__init__()
        if width % heads or width % 2 or list(pointconv_hidden)[-1:] != [width] or data_ctx > point_count \
                or image_size % patch_size or xattn_layers < 1 or layers <= xattn_layers:
            raise ConfigError("inconsistent Shap-E encoder config: need width divisible by heads and 2, "
                              "pointconv_hidden ending in width, data_ctx <= point_count, image_size divisible by "
                              f"patch_size and layers > xattn_layers >= 1 (got width={width}, heads={heads}, "
                              f"pointconv_hidden={list(pointconv_hidden)}, data_ctx={data_ctx}, point_count={point_count}, "
                              f"image_size={image_size}, patch_size={patch_size}, layers={layers}, "
                              f"xattn_layers={xattn_layers})")
        defaults = EncoderInputSettings()
        self.input_settings = EncoderInputSettings(
            point_count=point_count, num_views=num_views, image_size=image_size, render_factor=render_factor,
            point_cloud_views=point_cloud_views, point_cloud_render_size=point_cloud_render_size,
            random_sample_count=random_sample_count, camera_distance=camera_distance,
            fov=defaults.fov if fov is None else fov, ambient=ambient, diffuse=diffuse,
            light_direction=defaults.light_direction if light_direction is None else tuple(light_direction))
        self.network = EncoderNetwork(width, heads, layers, xattn_layers, d_latent, latent_ctx, data_ctx,
                                      pointconv_radius, pointconv_samples, list(pointconv_hidden),
                                      pointconv_patch_size, pointconv_stride, pointconv_padding_mode, patch_size,
                                      max_depth)
        self.tanh_bottleneck = tanh_bottleneck

    @property
    def latent_width(self) -> int:
        """Length of one latent: ``latent_ctx * d_latent`` (1024 * 1024 released)."""
        return self.config.latent_ctx * self.config.d_latent

    # -- loading ---------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, source: _PathLike, torch_dtype: Optional[torch.dtype] = None, **kwargs) -> "ShapEEncoder":
        """Load from a released folder (``transmitter.pt`` + ``transmitter_config.yaml``), a
        sharpit folder (``config.json`` + safetensors), or a hub id holding either. The weights'
        dtype: ``torch_dtype`` or ``dtype`` (diffusers' newer name), not both.

        Raises:
            InputError: both ``torch_dtype`` and ``dtype``.
            CheckpointError: a wrong-kind or damaged ``transmitter.pt`` (the message says what was
                expected), or mismatched keys/shapes.
            ConfigError: an unsupported transmitter config.
            AssetNotFoundError / WeightsNotFoundError: a missing path / an unreachable hub id.
        """
        torch_dtype = one_dtype(kwargs, torch_dtype)
        name = os.fspath(source)
        folder = Path(name)
        with load_errors(name, "Shap-E encoder"):
            if is_hub_id(name):
                from huggingface_hub import snapshot_download

                folder = Path(snapshot_download(name, allow_patterns=[TRANSMITTER_FILENAME, TRANSMITTER_CONFIG_FILENAME,
                                                                      "config.json", "*.safetensors"]))
            if folder.is_file() and folder.name.endswith(".pt"):
                return cls._from_released(folder, folder.parent / TRANSMITTER_CONFIG_FILENAME, torch_dtype)
            if (folder / TRANSMITTER_FILENAME).is_file():
                return cls._from_released(folder / TRANSMITTER_FILENAME, folder / TRANSMITTER_CONFIG_FILENAME,
                                          torch_dtype)
            if folder.is_dir() and not (folder / cls.config_name).is_file():
                raise CheckpointError(folder, f"is not a Shap-E encoder folder: expected {TRANSMITTER_FILENAME} + "
                                              f"{TRANSMITTER_CONFIG_FILENAME} (released) or config.json + "
                                              "diffusion_pytorch_model.safetensors (ShapEEncoder.save_pretrained)")
            model = super().from_pretrained(str(folder), **diffusers_dtype(torch_dtype), **kwargs)
        return model.eval()

    @classmethod
    def _from_released(cls, weights: Path, config: Path, torch_dtype: Optional[torch.dtype]) -> "ShapEEncoder":
        import yaml

        from ..safe_load import load_checkpoint

        if not config.is_file():
            raise CheckpointError(config, f"missing: the released {TRANSMITTER_FILENAME} needs its "
                                          f"{TRANSMITTER_CONFIG_FILENAME} beside it")
        try:
            tree = yaml.safe_load(config.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise CheckpointError(config, f"is not a readable YAML transmitter config ({exc})") from exc
        model = cls(**encoder_config_from_yaml(tree, str(config)))
        try:
            state = load_checkpoint(weights)
        except (CorruptFileError, UnsupportedFormatError) as exc:
            raise CheckpointError(weights, f"is not a Shap-E transmitter checkpoint ({exc.problem}); expected the "
                                           "released transmitter.pt, a plain state dict of encoder.* and renderer.* "
                                           "tensors") from exc
        model._load_released_state(state, weights)
        return model.to(torch_dtype).eval() if torch_dtype is not None else model.eval()

    def _load_released_state(self, state, path: Path) -> None:
        expected_kind = ("expected the Shap-E transmitter state dict (transmitter.pt: encoder.* and renderer.* "
                         "tensors)")
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointError(path, f"holds a {type(state).__name__}, not a plain state dict; {expected_kind}")
        encoder = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
        if not encoder:
            sample = ", ".join(sorted(state)[:3]) or "none"
            raise CheckpointError(path, f"has no encoder.* keys (first keys: {sample}); {expected_kind}. A prior's "
                                        "checkpoint (text_cond.pt, image_cond.pt) or a decoder cannot encode")
        others = [k for k in state if not k.startswith(("encoder.", "renderer."))]
        if others:
            raise CheckpointError(path, f"has keys outside encoder.*/renderer.* ({', '.join(sorted(others)[:3])}); "
                                        f"{expected_kind}")
        self._check_params_proj({k: v for k, v in encoder.items() if k.startswith("params_proj.")}, path)
        weights = {f"network.{k}": v for k, v in encoder.items() if not k.startswith("params_proj.")}
        own = self.state_dict()
        missing = sorted(set(own) - set(weights))
        unexpected = sorted(set(weights) - set(own))
        if missing or unexpected:
            raise CheckpointError(path, f"encoder keys do not match the config: missing {missing[:4]}, unexpected "
                                        f"{unexpected[:4]} ({len(missing)} and {len(unexpected)} in all)")
        wrong = [f"{k} {tuple(v.shape)} != {tuple(own[k].shape)}" for k, v in weights.items() if v.shape != own[k].shape]
        if wrong:
            raise CheckpointError(path, f"encoder weights have the wrong shapes for the config: {'; '.join(wrong[:3])}")
        self.load_state_dict({k: v.to(own[k].dtype) for k, v in weights.items()})

    def _check_params_proj(self, proj: Dict[str, torch.Tensor], path: Path) -> None:
        """The decoder-side projection must map d_latent to latent_ctx rows in total."""
        rows = 0
        for key, value in proj.items():
            if key.endswith(".proj.weight"):
                if value.ndim != 2 or value.shape[1] != self.config.d_latent:
                    raise CheckpointError(path, f"encoder.{key} has shape {tuple(value.shape)}, expected (rows * "
                                                f"channels, {self.config.d_latent})")
                norm = proj.get(key.replace(".proj.weight", ".norm.weight"))
                channels = int(norm.shape[0]) if norm is not None else None
                if channels is None or value.shape[0] % channels:
                    raise CheckpointError(path, f"encoder.{key}: no matching .norm.weight (use_ln params_proj)")
                rows += value.shape[0] // channels
        if rows != self.config.latent_ctx:
            raise CheckpointError(path, f"encoder.params_proj covers {rows} latent rows, the config's renderer needs "
                                        f"{self.config.latent_ctx}")

    # -- encoding --------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_inputs(self, inputs: ShapEEncoderInputs,
                      generator: Union[None, torch.Generator, List[Optional[torch.Generator]]] = None) -> torch.Tensor:
        """Latents of prepared inputs (:func:`~sharpit.coarse.encoder_inputs.prepare_encoder_inputs`).

        Args:
            inputs: a batch of ``B`` objects with ``point_count`` points and ``num_views`` views of
                ``image_size`` pixels.
            generator: draws the point convolution's shuffles (one generator for all, or one per
                object).
        Returns:
            (B, latent_ctx * d_latent) float32 latents (Shap-E's prior and decoder scale: tanh, in (-1, 1)).
        """
        s = self.input_settings
        b = len(inputs)
        if inputs.points.shape[1:] != (s.point_count, 6) or inputs.views.shape[1:] != (
                s.num_views, 3, s.image_size, s.image_size):
            raise InputError(f"encoder inputs must have {s.point_count} points of 6 values and {s.num_views} views "
                             f"of 3 x {s.image_size} x {s.image_size}, got points {tuple(inputs.points.shape)}, "
                             f"views {tuple(inputs.views.shape)}")
        gens = _generator_list(generator, b)
        latents = self.network(inputs.to(self.device, self.dtype), gens)
        return (torch.tanh(latents) if self.tanh_bottleneck else latents).float()

    @torch.no_grad()
    def encode(self, meshes: Union[Mesh, Sequence[Mesh]],
               generator: Union[None, torch.Generator, List[Optional[torch.Generator]]] = None,
               progress: bool = True) -> torch.Tensor:
        """Encode meshes (sharpit world frame, any size and position) into Shap-E latents.

        Each mesh is rendered and sampled (:func:`~sharpit.coarse.encoder_inputs.prepare_encoder_inputs`)
        and encoded on this model's device, one at a time (the full-size encoder needs about 3 GB
        of activations per object). Random choices come from ``generator``: one generator is
        consumed object by object (inputs, then the point convolution's shuffles); a list gives
        each object its own and makes each result independent of the batch it is in.

        Returns:
            (B, latent_ctx * d_latent) float32 latents that :meth:`ShapEGenerator.to_mesh` decodes.
        Raises:
            InputError: not meshes, or a generator list of the wrong length.
            MeshError: a mesh without faces (a point cloud), too large, or invalid.
        """
        from tqdm.auto import tqdm

        items = [meshes] if isinstance(meshes, Mesh) else list(meshes) if isinstance(meshes, (list, tuple)) else None
        if not items:
            raise InputError(f"encode takes a sharpit.mesh.Mesh or a non-empty list of them, got {type(meshes).__name__}")
        gens = _generator_list(generator, len(items))
        out = []
        for mesh, gen in tqdm(list(zip(items, gens)), desc="encode", disable=not progress or len(items) == 1):
            inputs = prepare_encoder_inputs(mesh, self.input_settings, gen, device=self.device)
            out.append(self.encode_inputs(inputs, gen))
        return torch.cat(out)


def _generator_list(generator, n: int) -> List[Optional[torch.Generator]]:
    if isinstance(generator, (list, tuple)):
        if len(generator) != n:
            raise InputError(f"got {len(generator)} generators for {n} objects; pass one, or one per object")
        return list(generator)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise InputError(f"generator must be a torch.Generator or a list of them, got {type(generator).__name__}")
    return [generator] * n
