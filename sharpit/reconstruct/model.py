"""The InstantMesh-compatible reconstructor: six views -> triplanes -> mesh.

Shapes and frames
    ``views`` (B, 6, 3, 320, 320) in [0, 1] on white; ``cameras`` (B, 6, 16) InstantMesh vectors
    in the triplane frame (:mod:`sharpit.reconstruct.inputs` builds them from sharpit cameras);
    planes (B, 3, C, 64, 64). Meshes and cameras at the public API are in the sharpit world frame
    at the v1.2 scale; the conversion is the single constant ``TRIPLANE_TO_SHARPIT_SCALE``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Union

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.utils import BaseOutput
from diffusers.utils.accelerate_utils import apply_forward_hook

from .. import isosurface
from ..cameras import CameraBatch, turntable_cameras
from ..errors import CheckpointError, InputError
from ..grid import as_views_tensor
from ..mesh import Mesh, Similarity
from .checkpoint import (classic_vit_names, compare_keys, guess_variant, read_state_dict, read_vit_weights,
                         resolve_checkpoint)
from .config import (DINO_MODEL_ID, HUB_REPO, MESH_RESOLUTION, MESH_THRESHOLD, TRIPLANE_BOUND,
                     TRIPLANE_TO_SHARPIT_SCALE, variant_config)
from .encoder import CameraModulatedEncoder
from .inputs import camera_vectors, cameras_to_triplane_frame, prepare_views
from .transformer import TriplaneTransformer
from .triplane import TriplaneSynthesizer
from .texture import DEFAULT_FACE_BUDGET
from .volume import DEFAULT_POINT_BUDGET, render_rays

__all__ = ["InstantMeshReconstructor", "ReconstructorOutput", "TRIPLANE_TO_SHARPIT"]

#: Similarity taking triplane-frame points to the sharpit world frame.
TRIPLANE_TO_SHARPIT = Similarity(torch.eye(3, dtype=torch.float64), TRIPLANE_TO_SHARPIT_SCALE,
                                 torch.zeros(3, dtype=torch.float64))


@dataclass
class ReconstructorOutput(BaseOutput):
    """Output of :meth:`InstantMeshReconstructor.forward`.

    Attributes:
        planes: (B, 3, C, 64, 64) triplanes (triplane frame; plane layout in
            :mod:`sharpit.reconstruct.triplane`).
    """

    planes: torch.Tensor


class InstantMeshReconstructor(ModelMixin, ConfigMixin):
    """Camera-modulated DINO encoder + triplane transformer + NeRF triplane decoder, with the
    parameter names of InstantMesh's ``InstantNeRF`` (released checkpoints load unchanged).

    Build a released variant with :meth:`from_variant` or :meth:`from_instantmesh_checkpoint`;
    the constructor's defaults are the ``large`` variant.
    """

    config_name = "config.json"

    @register_to_config
    def __init__(self, encoder_feat_dim: int = 768, encoder_layers: int = 12, encoder_heads: int = 12,
                 encoder_mlp_dim: int = 3072, encoder_patch_size: int = 16, encoder_pos_grid: int = 14,
                 camera_dim: int = 16, transformer_dim: int = 1024, transformer_layers: int = 16,
                 transformer_heads: int = 16, triplane_low_res: int = 32, triplane_high_res: int = 64,
                 triplane_dim: int = 80, decoder_hidden_dim: int = 64, decoder_layers: int = 4,
                 rendering_samples_per_ray: int = 128):
        super().__init__()
        self.encoder = CameraModulatedEncoder(encoder_feat_dim, encoder_layers, encoder_heads, encoder_mlp_dim,
                                              encoder_patch_size, encoder_pos_grid, camera_dim)
        self.transformer = TriplaneTransformer(transformer_dim, encoder_feat_dim, transformer_layers,
                                               transformer_heads, triplane_low_res, triplane_high_res,
                                               triplane_dim)
        self.synthesizer = TriplaneSynthesizer(triplane_dim, decoder_hidden_dim, decoder_layers)

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_variant(cls, variant: str = "large", **overrides) -> "InstantMeshReconstructor":
        """A randomly initialised model of a released variant ("base" or "large")."""
        return cls(**{**variant_config(variant), **overrides})

    @classmethod
    def from_instantmesh_checkpoint(cls, path: "os.PathLike[str] | str" = HUB_REPO, variant: str = "large",
                                    filename: Optional[str] = None, device=None,
                                    torch_dtype: Optional[torch.dtype] = None,
                                    low_cpu_mem_usage: bool = True) -> "InstantMeshReconstructor":
        """Load a released InstantMesh NeRF checkpoint unchanged.

        Args:
            path: the ``.ckpt`` file, a folder holding it, or a hub id (``TencentARC/InstantMesh``,
                the default; the file is ``instant_nerf_{variant}.ckpt`` unless ``filename``).
            variant: "base" or "large"; must match the file.
            device, torch_dtype: where and in which dtype to put the model.
            low_cpu_mem_usage: build the model on the ``meta`` device and adopt the loaded
                tensors (no random initialisation, one copy of the weights in memory).
        Returns:
            The model in eval mode. Convert once with ``save_pretrained(dir)`` (safetensors) and
            later load with ``from_pretrained(dir)``.
        Raises:
            CorruptFileError: a damaged file, or not a PyTorch checkpoint.
            UnsupportedFormatError: a legacy (PyTorch < 1.6) file holding more than tensors.
                Lightning files with hyper-parameters, callbacks or optimizer state load: their
                foreign objects become inert placeholders (:mod:`sharpit.safe_load`).
            CheckpointError: wrong variant or mismatched keys (names the file and the variant it
                looks like).
            WeightsNotFoundError: a hub id that is not cached and cannot be downloaded.
        """
        config = variant_config(variant)
        file = resolve_checkpoint(path, variant, filename)
        state_dict = read_state_dict(file)
        if low_cpu_mem_usage:
            with torch.device("meta"):
                model = cls(**config)
        else:
            model = cls(**config)
        expected = {k: v.shape for k, v in model.state_dict().items()}
        report = compare_keys(expected, state_dict)
        if not report.ok:
            guess = guess_variant(state_dict)
            if guess == "mesh":
                hint = ("it looks like a FlexiCubes InstantMesh checkpoint (instant_mesh_*.ckpt); sharpit "
                        "loads the NeRF reconstructors instant_nerf_base.ckpt / instant_nerf_large.ckpt")
            elif guess is not None and guess != variant:
                hint = f"it looks like the '{guess}' variant; pass variant={guess!r}"
            else:
                hint = "the file does not match any released InstantMesh NeRF variant"
            raise CheckpointError(file, f"does not fit the '{variant}' reconstructor: {hint} "
                                        f"({report.summary()})")
        model.load_state_dict(state_dict, strict=True, assign=low_cpu_mem_usage)
        if torch_dtype is not None:
            model = model.to(torch_dtype)
        if device is not None:
            model = model.to(device)
        return model.eval()

    def init_encoder_from_dino(self, model_or_path=DINO_MODEL_ID) -> "InstantMeshReconstructor":
        """Copy DINO ViT weights into the encoder (for training from scratch); the adaLN
        modulation stays zero, so the camera has no effect until trained.

        Args:
            model_or_path: a ``transformers.ViTModel`` (any transformers version's names), or a
                hub id / local folder holding ``model.safetensors`` or ``pytorch_model.bin``
                (``facebook/dino-vitb16`` by default).
        Returns:
            ``self``.
        Raises:
            WeightsNotFoundError: the weights are not available locally and cannot be downloaded.
            CheckpointError: the ViT's shapes do not fit this encoder.
        """
        if isinstance(model_or_path, torch.nn.Module):
            vit = classic_vit_names(model_or_path.state_dict())
            source = getattr(model_or_path, "name_or_path", None) or None
        else:
            vit, source = read_vit_weights(model_or_path)
        target = self.encoder.model
        expected = {k: v.shape for k, v in target.state_dict().items() if ".adaLN_modulation." not in k}
        report = compare_keys(expected, vit)
        if not report.ok:
            raise CheckpointError(source, f"this ViT does not fit the encoder: {report.summary()}")
        with torch.no_grad():
            for name, tensor in target.state_dict().items():
                if name in vit:
                    tensor.copy_(vit[name])
        return self

    # -- networks -------------------------------------------------------------------------
    def forward(self, images: torch.Tensor, cameras: torch.Tensor, return_dict: bool = True):
        """Views to triplanes.

        Args:
            images: (B, V, 3, H, W) views in [0, 1] (white background; H = W = 320 for the
                released models).
            cameras: (B, V, 16) InstantMesh camera vectors in the triplane frame.
        Returns:
            :class:`ReconstructorOutput` (or a tuple with ``return_dict=False``).
        """
        if images.ndim != 5 or cameras.ndim != 3 or cameras.shape[:2] != images.shape[:2]:
            raise InputError(f"expected images (B, V, 3, H, W) and cameras (B, V, 16), got "
                             f"{tuple(images.shape)} and {tuple(cameras.shape)}")
        b, v = images.shape[:2]
        tokens = self.encoder(images.flatten(0, 1), cameras.flatten(0, 1))
        planes = self.transformer(tokens.reshape(b, -1, tokens.shape[-1]))
        return ReconstructorOutput(planes=planes) if return_dict else (planes,)

    @torch.no_grad()
    @apply_forward_hook
    def encode_views(self, views, cameras: Optional[Union[CameraBatch, torch.Tensor]] = None) -> torch.Tensor:
        """Any accepted views (see :func:`~sharpit.reconstruct.inputs.prepare_views`) and cameras
        (sharpit-frame :class:`CameraBatch`, default the v1.2 cameras) -> (B, 3, C, 64, 64) planes."""
        images = prepare_views(views).to(self.device)
        vec = camera_vectors(cameras, images.shape[0], self.device)
        return self(images.to(self.dtype), vec.to(self.dtype)).planes

    @torch.no_grad()
    @apply_forward_hook
    def query(self, planes: torch.Tensor, points: torch.Tensor):
        """Density and colour at sharpit-frame points.

        Args:
            planes: (1, 3, C, H, W). points: (P, 3) sharpit world coordinates.
        Returns:
            ``(density, rgb)``: (P,) float32 activated density (triplane units, the mesh level is
            10) and (P, 3) float32 colours.
        """
        density, rgb = self.synthesizer(planes, (points / TRIPLANE_TO_SHARPIT_SCALE)[None])
        return density[0].float(), rgb[0].float()

    # -- meshes ---------------------------------------------------------------------------
    @torch.no_grad()
    @apply_forward_hook
    def extract_mesh(self, planes: torch.Tensor, resolution: int = MESH_RESOLUTION,
                     threshold: float = MESH_THRESHOLD, chunk: int = 1 << 18) -> Mesh:
        """Marching cubes on the density over the triplane box, with vertex colours.

        Args:
            planes: (1, 3, C, H, W) one object's triplanes.
            resolution: grid points per axis over ``[-1, 1]^3`` (triplane frame).
            threshold: density iso-level (InstantMesh: 10).
            chunk: points per decoder call (bounds memory).
        Returns:
            A vertex-coloured :class:`Mesh` in the sharpit world frame (v1.2 scale).
        Raises:
            EmptySurfaceError: no density crosses ``threshold``.
        """
        if planes.ndim != 5 or planes.shape[0] != 1:
            raise InputError(f"extract_mesh takes one object's planes (1, 3, C, H, W), got {tuple(planes.shape)}")
        field = lambda p: self.synthesizer(planes, p[None])[0][0].float()  # noqa: E731
        color = lambda p: self.synthesizer(planes, p[None])[1][0].float()  # noqa: E731
        mesh = isosurface.extract_mesh(field, resolution, threshold, -TRIPLANE_BOUND, TRIPLANE_BOUND,
                                       inside="above", color_fn=color, device=planes.device, chunk=chunk)
        return mesh.transformed(TRIPLANE_TO_SHARPIT)

    @torch.no_grad()
    @apply_forward_hook
    def reconstruct(self, views, cameras: Optional[Union[CameraBatch, torch.Tensor]] = None,
                    resolution: int = MESH_RESOLUTION, threshold: float = MESH_THRESHOLD,
                    texture: bool = False, texture_size: int = 1024,
                    face_budget: int = DEFAULT_FACE_BUDGET, uv_layout: str = "pairs",
                    texture_source: str = "views") -> Mesh:
        """Six refined views of one object -> mesh in the sharpit world frame.

        Args:
            views: the 3x2 grid or six views (PIL, array or tensor; see
                :func:`~sharpit.reconstruct.inputs.prepare_views`).
            cameras: sharpit-frame cameras of the views; default the Zero123++ v1.2 cameras.
            resolution, threshold: marching-cubes grid and density level.
            texture: bake a UV texture (decimate to ``face_budget``, lay out UVs as ``uv_layout``,
                ``texture_size``^2 map; :func:`~sharpit.reconstruct.bake_texture`) instead of
                returning vertex colours; with ``texture_source="views"`` texels the views see are
                coloured from them (:class:`~sharpit.reconstruct.projection.ViewProjector`), the
                rest from the colour field ("field": the colour field everywhere).
        """
        planes = self.encode_views(views, cameras)
        if planes.shape[0] != 1:
            raise InputError(f"reconstruct takes the views of one object, got {planes.shape[0]}; "
                             f"call it once per object")
        mesh = self.extract_mesh(planes, resolution, threshold)
        if not texture:
            return mesh
        from .texture import bake_texture

        if texture_source not in ("views", "field"):
            raise InputError(f"texture_source must be 'views' or 'field', got {texture_source!r}")
        projected = {}
        if texture_source == "views":
            if isinstance(cameras, torch.Tensor):
                raise InputError("texture_source='views' projects the views with sharpit-frame cameras (a "
                                 "CameraBatch); with InstantMesh camera vectors use texture_source='field'")
            projected = dict(views=as_views_tensor(views)[0].to(self.device), cameras=cameras)
        return bake_texture(mesh, lambda p: self.query(planes, p)[1], texture_size=texture_size,
                            face_budget=face_budget, uv_layout=uv_layout, **projected)

    # -- rendering ------------------------------------------------------------------------
    @torch.no_grad()
    @apply_forward_hook
    def render_novel_views(self, views=None, planes: Optional[torch.Tensor] = None,
                           cameras: Optional[CameraBatch] = None, size: int = 320,
                           view_cameras: Optional[Union[CameraBatch, torch.Tensor]] = None,
                           generator: Optional[torch.Generator] = None,
                           point_budget: int = DEFAULT_POINT_BUDGET) -> torch.Tensor:
        """Volume-render the triplane NeRF (coarse + importance samples, white background).

        Args:
            views: the input views (encoded first), or ``planes`` (1, 3, C, H, W) directly.
            cameras: sharpit-frame render cameras; default a 60-frame turntable at elevation 20.
            size: square image side in pixels.
            view_cameras: cameras of ``views`` (default the v1.2 cameras).
            generator: for the stochastic samples.
        Returns:
            (N, 3, size, size) float32 images in [0, 1] (on the model's device).
        """
        if (views is None) == (planes is None):
            raise InputError("pass exactly one of views or planes")
        if planes is None:
            planes = self.encode_views(views, view_cameras)
        if planes.ndim != 5 or planes.shape[0] != 1:
            raise InputError(f"render_novel_views renders one object, got planes {tuple(planes.shape)}")
        cams = cameras_to_triplane_frame(cameras if cameras is not None else turntable_cameras())
        origins, dirs = cams.to(planes.device).rays(size)
        n = self.config.rendering_samples_per_ray // 2
        rgb, _, _ = render_rays(self.synthesizer, planes, origins.reshape(-1, 3), dirs.reshape(-1, 3), n, n,
                                generator=generator, point_budget=point_budget)
        return rgb.view(len(cams), size, size, 3).permute(0, 3, 1, 2)
