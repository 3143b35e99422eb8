"""The optimised quantity: a UV texture of a fixed mesh.

The texels themselves are optimised (Adam), and projected back onto [0, 1] after every step
(:func:`project_texture`). A sigmoid parameterisation was tried first and dropped: saturated
colours (logit +-6.9 at 1e-3 from the ends) barely move at usual learning rates.

A mesh that already has UVs and a texture keeps its layout; one without is laid out in the
``"pairs"`` atlas of :mod:`sharpit.reconstruct.texture` (every face its own right triangle,
closed-form, no xatlas), with its vertex colours baked in, or the neutral grey of
:mod:`sharpit.colors` when it has none.
"""

from __future__ import annotations

import torch

from ..colors import NEUTRAL_GREY
from ..errors import MeshError
from ..mesh import Mesh

__all__ = ["uv_textured_mesh", "project_texture"]


def uv_textured_mesh(mesh: Mesh, texture_size: int = 1024) -> Mesh:
    """``mesh`` itself when it has a texture, else a copy laid out in the "pairs" atlas.

    Args:
        mesh: any valid mesh (sharpit world frame).
        texture_size: side of the new texture (unused when the mesh has one).
    Returns:
        A :class:`Mesh` with ``uvs`` and a (T, T, 3) ``texture`` in [0, 1] (no faces are merged
        or dropped: ``face_budget=None``).
    Raises:
        MeshError: the mesh is invalid; InputError: ``texture_size`` too small for its faces in
        the "pairs" atlas (the message names the size needed).
    """
    from ..reconstruct.texture import bake_texture

    if not isinstance(mesh, Mesh):
        raise MeshError(f"expected a sharpit.mesh.Mesh, got {type(mesh).__name__}")
    mesh.validate()
    if mesh.has_texture:
        return mesh
    color_fn = None
    if mesh.vertex_colors is None:
        color_fn = lambda points: torch.full((points.shape[0], 3), NEUTRAL_GREY, device=points.device)  # noqa: E731
    return bake_texture(mesh, color_fn, texture_size=texture_size, face_budget=None, uv_layout="pairs")


@torch.no_grad()
def project_texture(texture: torch.Tensor) -> torch.Tensor:
    """Clamp the (H, W, 3) texels to [0, 1] in place (the projection step after each update); returns it."""
    return texture.clamp_(0.0, 1.0)
