"""Configurations and conventions of the InstantMesh-compatible reconstructor: the one place for
its variants, image statistics, mesh threshold, sampling counts and frame scale.

Frames
    The reconstructor's *triplane frame* is InstantMesh's world: right-handed, +z up, cameras at
    ``r * (cos e cos a, cos e sin a, sin e)`` with ``r = INSTANTMESH_CAMERA_RADIUS`` (4.0) and the
    object inside ``[-1, 1]^3``. Its axes are sharpit's world axes (see :mod:`sharpit.cameras`);
    only the scale differs. A v1.2 object of radius 0.5 seen from ``default_distance()`` (1.866)
    looks the same as one of radius ``0.5 * 4 / 1.866`` seen from 4, so

        ``x_sharpit = TRIPLANE_TO_SHARPIT_SCALE * x_triplane``

    with ``TRIPLANE_TO_SHARPIT_SCALE = default_distance() / INSTANTMESH_CAMERA_RADIUS`` (0.4665).
"""

from __future__ import annotations

from typing import Any, Dict

from ..cameras import INSTANTMESH_CAMERA_RADIUS, default_distance
from ..errors import ConfigError
from ..sources import INSTANTMESH_HUB_ID

__all__ = [
    "VARIANTS",
    "variant_config",
    "DINO_IMAGE_MEAN",
    "DINO_IMAGE_STD",
    "DINO_MODEL_ID",
    "TRIPLANE_TO_SHARPIT_SCALE",
    "TRIPLANE_BOUND",
    "BOX_WARP",
    "MESH_THRESHOLD",
    "MESH_RESOLUTION",
    "DENSITY_SHIFT",
    "RGB_PADDING",
    "CHECKPOINT_PREFIX",
    "IGNORED_KEY_SUBSTRINGS",
    "HUB_REPO",
    "HUB_FILENAMES",
]

#: Channel statistics of the ``facebook/dino-vitb16`` image processor (ImageNet's). Images in
#: [0, 1] are normalised as ``(x - mean) / std`` before the ViT (no resize, no rescale).
DINO_IMAGE_MEAN = (0.485, 0.456, 0.406)
DINO_IMAGE_STD = (0.229, 0.224, 0.225)
#: Hugging Face id of the ViT whose weights start training from scratch.
DINO_MODEL_ID = "facebook/dino-vitb16"

#: Scale from the triplane frame to the sharpit world frame at the v1.2 object scale (0.4665).
TRIPLANE_TO_SHARPIT_SCALE = default_distance() / INSTANTMESH_CAMERA_RADIUS
#: The triplane covers ``[-TRIPLANE_BOUND, TRIPLANE_BOUND]^3`` (triplane frame).
TRIPLANE_BOUND = 1.0
#: EG3D ``box_warp``: plane coordinates are ``point * 2 / BOX_WARP``.
BOX_WARP = 2.0
#: Iso-level of the activated density used for marching cubes, and the default grid size.
MESH_THRESHOLD = 10.0
MESH_RESOLUTION = 256
#: Density activation ``softplus(raw - DENSITY_SHIFT)`` (InstantMesh's clamp_mode "softplus").
DENSITY_SHIFT = 1.0
#: Colour activation ``sigmoid(x) * (1 + 2 * RGB_PADDING) - RGB_PADDING`` (range [-0.001, 1.001]).
RGB_PADDING = 0.001

#: Released Lightning checkpoints keep the model under this prefix in ``state_dict``.
CHECKPOINT_PREFIX = "lrm_generator."
#: Entries whose name contains one of these are ignored when loading (InstantMesh's demo does so).
IGNORED_KEY_SUBSTRINGS = ("source_camera",)
HUB_REPO = INSTANTMESH_HUB_ID
HUB_FILENAMES = {"base": "instant_nerf_base.ckpt", "large": "instant_nerf_large.ckpt"}

_VIT_B16 = dict(
    encoder_feat_dim=768,
    encoder_layers=12,
    encoder_heads=12,
    encoder_mlp_dim=3072,
    encoder_patch_size=16,
    encoder_pos_grid=14,  # DINO's 224 px / 16 = 14 stored position embeddings per side
    camera_dim=16,
)

#: Hyper-parameters of the released NeRF reconstructors (InstantMesh configs/instant-nerf-*.yaml).
VARIANTS: Dict[str, Dict[str, Any]] = {
    "base": dict(_VIT_B16, transformer_dim=1024, transformer_layers=12, transformer_heads=16,
                 triplane_low_res=32, triplane_high_res=64, triplane_dim=40,
                 decoder_hidden_dim=64, decoder_layers=4, rendering_samples_per_ray=96),
    "large": dict(_VIT_B16, transformer_dim=1024, transformer_layers=16, transformer_heads=16,
                  triplane_low_res=32, triplane_high_res=64, triplane_dim=80,
                  decoder_hidden_dim=64, decoder_layers=4, rendering_samples_per_ray=128),
}


def variant_config(variant: str) -> Dict[str, Any]:
    """A copy of the keyword arguments of :class:`InstantMeshReconstructor` for ``variant``
    ("base" or "large")."""
    if variant not in VARIANTS:
        raise ConfigError(f"unknown reconstructor variant {variant!r}; expected one of {sorted(VARIANTS)}")
    return dict(VARIANTS[variant])
