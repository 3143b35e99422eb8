"""Rendering meshes to the Zero123++ views and grid.

``render_views`` / ``render_grid`` render a :class:`~sharpit.mesh.Mesh` (default: the six v1.2
cameras); ``rasterize`` / ``interpolate`` are the low-level rasteriser, also usable in UV space
for texture baking (clip vertices ``(2u - 1, 2v - 1, 0, 1)``); ``rasterize_texture_coords`` and
``render_texture`` render a fixed mesh's texture differentiably (:mod:`sharpit.render.differentiable`).
The rasteriser backend is ``"torch"`` unless ``backend="pytorch3d"`` is passed (see :mod:`sharpit.render.renderer`).
"""

from .differentiable import TextureFragments, rasterize_texture_coords, render_texture
from .rasterizer import DEFAULT_MAX_PAIRS, Fragments, interpolate, rasterize
from .renderer import (BACKENDS, DEFAULT_BACKEND, SHADING_MODES, MultiViewRender, available_backends,
                       render_grid, render_views)
from .shading import face_normals, sample_texture, vertex_normals

__all__ = [
    "render_views",
    "render_grid",
    "MultiViewRender",
    "rasterize",
    "interpolate",
    "Fragments",
    "available_backends",
    "BACKENDS",
    "DEFAULT_BACKEND",
    "SHADING_MODES",
    "DEFAULT_MAX_PAIRS",
    "face_normals",
    "vertex_normals",
    "sample_texture",
    "TextureFragments",
    "rasterize_texture_coords",
    "render_texture",
]
