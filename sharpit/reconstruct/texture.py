"""Texture-map export: decimate, UV-unwrap with xatlas, bake colours in UV space, dilate seams.

Baking rasterises the UV layout with :func:`sharpit.render.rasterize` (clip coordinates
``(2u - 1, 2v - 1, 0, 1)``: ``v = 1`` is texture row 0, matching :class:`~sharpit.mesh.Mesh`'s
bottom-left UV origin and top-row-first texture), interpolates 3-D positions at the covered
texels, queries colours there and grows the charts outwards by a few texels so bilinear lookups
near seams never read the background.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError, MeshError
from ..isosurface import query_points
from ..mesh import Mesh
from ..options import DEFAULT_FACE_BUDGET

__all__ = ["decimate", "unwrap_uv", "dilate_texture", "bake_texture", "DEFAULT_FACE_BUDGET"]

#: Simplification passes tried to get under the face budget.
_DECIMATION_PASSES = 4
#: Texels the charts are grown by after baking.
DEFAULT_DILATION = 4
#: Texels of padding xatlas leaves between charts.
_CHART_PADDING = 2

ColorFn = Callable[[torch.Tensor], torch.Tensor]


def decimate(mesh: Mesh, face_budget: int = DEFAULT_FACE_BUDGET) -> Mesh:
    """Quadric-error decimation (``fast_simplification``) to at most ``face_budget`` faces
    (up to a few percent more when the simplifier cannot collapse further).

    Vertex colours are carried over from the nearest original vertex; UVs and textures are
    dropped (unwrap again). Meshes already within budget are returned unchanged.
    """
    if face_budget < 4:
        raise InputError(f"face_budget must be >= 4, got {face_budget}")
    mesh.validate()
    if mesh.num_faces <= face_budget:
        return mesh
    import fast_simplification

    v = mesh.vertices.detach().cpu().numpy().astype(np.float64)
    f = mesh.faces.detach().cpu().numpy().astype(np.int64)
    pts, faces = v, f
    for _ in range(_DECIMATION_PASSES):  # one pass can stop short of its target on small meshes
        if faces.shape[0] <= face_budget:
            break
        pts, faces = fast_simplification.simplify(pts, faces, target_reduction=1.0 - face_budget / faces.shape[0])
    colors = None
    if mesh.vertex_colors is not None:
        from scipy.spatial import cKDTree

        _, nearest = cKDTree(v).query(pts)
        colors = mesh.vertex_colors.detach().cpu()[torch.from_numpy(nearest)]
    out = Mesh(torch.from_numpy(pts).float(), torch.from_numpy(faces.astype(np.int64)),
               vertex_colors=colors, source=mesh.source)
    return out.to(mesh.device).validate()


def unwrap_uv(mesh: Mesh, texture_size: int = 1024):
    """xatlas charts packed for a ``texture_size`` square map.

    Returns:
        ``(vmapping, faces, uvs)``: (V',) int64 index of each new vertex into ``mesh.vertices``
        (vertices on seams are split), (F, 3) int64 faces over the new vertices, (V', 2) float32
        UVs in [0, 1] with the origin at the bottom-left.
    """
    import xatlas

    atlas = xatlas.Atlas()
    atlas.add_mesh(mesh.vertices.detach().cpu().numpy().astype(np.float32),
                   mesh.faces.detach().cpu().numpy().astype(np.uint32))
    pack = xatlas.PackOptions()
    pack.resolution = texture_size
    pack.padding = _CHART_PADDING
    atlas.generate(pack_options=pack)
    vmapping, indices, uvs = atlas.get_mesh(0)
    return (torch.from_numpy(vmapping.astype(np.int64)), torch.from_numpy(indices.astype(np.int64)),
            torch.from_numpy(uvs.astype(np.float32)))


def dilate_texture(texture: torch.Tensor, mask: torch.Tensor, iterations: int = DEFAULT_DILATION,
                   fill: Optional[float] = None) -> torch.Tensor:
    """Grow the covered texels outwards.

    Args:
        texture: (H, W, C) values, meaningful where ``mask``.
        mask: (H, W) bool, covered texels.
        iterations: each pass gives uncovered texels next to covered ones the mean of their
            covered 8-neighbours.
        fill: value for texels still uncovered afterwards (default: the mean covered colour).
    Returns:
        (H, W, C) texture.
    """
    if texture.ndim != 3 or mask.shape != texture.shape[:2]:
        raise InputError(f"need texture (H, W, C) and mask (H, W), got {tuple(texture.shape)}, {tuple(mask.shape)}")
    tex = (texture * mask[..., None]).permute(2, 0, 1)[None].float()
    m = mask[None, None].float()
    kernel = torch.ones(1, 1, 3, 3, device=tex.device)
    for _ in range(iterations):
        total = F.conv2d(tex, kernel.expand(tex.shape[1], 1, 3, 3), padding=1, groups=tex.shape[1])
        count = F.conv2d(m, kernel, padding=1)
        grow = (m == 0) & (count > 0)
        tex = torch.where(grow, total / count.clamp_min(1), tex)
        m = torch.where(grow, torch.ones_like(m), m)
    out = tex[0].permute(1, 2, 0)
    covered = m[0, 0] > 0
    if not bool(covered.all()):
        value = out[covered].mean(0) if fill is None and bool(covered.any()) else torch.full(
            (out.shape[-1],), 1.0 if fill is None else fill, device=out.device)
        out = torch.where(covered[..., None], out, value.to(out.dtype))
    return out.to(texture.dtype)


def bake_texture(mesh: Mesh, color_fn: Optional[ColorFn] = None, texture_size: int = 1024,
                 face_budget: Optional[int] = DEFAULT_FACE_BUDGET, dilation: int = DEFAULT_DILATION,
                 chunk: int = 1 << 18) -> Mesh:
    """A UV-textured copy of ``mesh``.

    Args:
        mesh: the surface (any frame; ``color_fn`` is queried in the same frame).
        color_fn: (P, 3) points -> (P, 3) colours in [0, 1], e.g. the triplane's colour field
            (:meth:`InstantMeshReconstructor.query`). None bakes the mesh's vertex colours
            (interpolated over each face).
        texture_size: side of the square texture in texels.
        face_budget: decimate to this many faces first (None keeps every face).
        dilation: texels the charts are grown by.
    Returns:
        A :class:`Mesh` with ``uvs`` (V', 2) and ``texture`` (size, size, 3) in [0, 1], no vertex colours.
    """
    from ..render import interpolate, rasterize

    if texture_size < 8:
        raise InputError(f"texture_size must be >= 8, got {texture_size}")
    if color_fn is None and mesh.vertex_colors is None:
        raise MeshError("the mesh has no vertex colours to bake; pass a color_fn", mesh.source)
    if face_budget is not None:
        mesh = decimate(mesh, face_budget)
    dev = mesh.device
    vmapping, faces, uvs = unwrap_uv(mesh, texture_size)
    vmapping, faces, uvs = vmapping.to(dev), faces.to(dev), uvs.to(dev)
    verts = mesh.vertices[vmapping]
    clip = torch.cat([uvs * 2 - 1, torch.zeros_like(uvs[:, :1]), torch.ones_like(uvs[:, :1])], dim=-1)
    frags = rasterize(clip[None], faces, texture_size, texture_size)
    mask = frags.mask[0]
    texture = torch.ones(texture_size, texture_size, 3, device=dev)
    if color_fn is None:
        texture = interpolate(mesh.vertex_colors[vmapping], faces, frags)[0]
    else:
        points = interpolate(verts, faces, frags)[0][mask]
        texture[mask] = query_points(color_fn, points, chunk).float().to(dev)
    texture = dilate_texture(texture.clamp(0, 1), mask, dilation)
    return Mesh(verts, faces, uvs=uvs, texture=texture, source=mesh.source).validate()
