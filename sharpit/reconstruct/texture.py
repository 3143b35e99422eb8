"""Texture-map export: decimate, lay out UVs, bake colours in UV space, dilate seams.

Two UV layouts (:data:`UV_LAYOUTS`):

* ``"pairs"`` (default): every triangle gets its own right triangle in the atlas, two per square
  cell of a regular grid, half a texel from the cell's border and one texel from its partner
  across the diagonal. No search, so a 20k-face mesh is laid out and baked in a fraction of a
  second (xatlas: seconds, ``benchmarks/RESULTS.md``), and each texel's face and barycentric
  coordinates follow in closed form, so baking needs no rasteriser. Every vertex is split per face
  (3F vertices) and the charts are meaningless to paint on.
* ``"xatlas"``: xatlas charts (few seams, artist-friendly), baked by rasterising the UV layout.

Baking a xatlas layout rasterises the UV layout with :func:`sharpit.render.rasterize` (clip coordinates
``(2u - 1, 2v - 1, 0, 1)``: ``v = 1`` is texture row 0, matching :class:`~sharpit.mesh.Mesh`'s
bottom-left UV origin and top-row-first texture), interpolates 3-D positions at the covered
texels, queries colours there and grows the charts outwards by a few texels so bilinear lookups
near seams never read the background.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError, MeshError
from ..isosurface import query_points
from ..mesh import Mesh
from ..options import DEFAULT_FACE_BUDGET, UV_LAYOUTS
from ..render.shading import face_normals

__all__ = ["decimate", "unwrap_uv", "pair_layout", "dilate_texture", "bake_texture", "DEFAULT_FACE_BUDGET",
           "UV_LAYOUTS"]



#: Simplification passes tried to get under the face budget.
_DECIMATION_PASSES = 4
#: Texels the charts are grown by after baking.
DEFAULT_DILATION = 4
#: Texels of padding xatlas leaves between charts.
_CHART_PADDING = 2
#: "pairs" layout: texels between a triangle and its cell's border, and between the two
#: triangles across the cell's diagonal (bilinear look-ups inside a triangle never reach the other).
_PAIR_INSET = 0.5
_PAIR_GAP = 1.5

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


def _pair_grid_side(num_faces: int) -> int:
    """Cells per side of the "pairs" atlas: the smallest square grid with a cell per two faces."""
    return max(1, math.ceil(math.sqrt(math.ceil(num_faces / 2))))


def pair_layout(num_faces: int, texture_size: int):
    """The "pairs" atlas: face ``2i`` and ``2i + 1`` share square cell ``i`` of a ``k x k`` grid.

    Returns:
        ``(uvs, cell, legs)``: (F, 3, 2) float32 UVs in [0, 1] (origin bottom-left) of each face's
        corners, the cell side and the triangles' leg length, both in texels.
    Raises:
        InputError: ``texture_size`` too small for ``num_faces`` (cells under 4 texels).
    """
    k = _pair_grid_side(num_faces)
    cell = texture_size // k
    if cell < 4:
        raise InputError(f"a {texture_size}^2 texture is too small for {num_faces} faces in the 'pairs' layout "
                         f"(cells of {cell} texels); raise texture_size to {4 * k} or lower face_budget")
    legs = cell - 2 * _PAIR_INSET - _PAIR_GAP
    idx = torch.arange(num_faces)
    pair, upper = idx // 2, (idx % 2).bool()
    origin = torch.stack([pair % k, pair // k], -1).float() * cell   # (F, 2) texels, y up
    lower_corners = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]) * legs + _PAIR_INSET
    upper_corners = cell - _PAIR_INSET - torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]) * legs
    corners = torch.where(upper[:, None, None], upper_corners, lower_corners)
    return (origin[:, None] + corners) / texture_size, cell, legs


def _bake_pairs(mesh: Mesh, color_fn: Optional[ColorFn], texture_size: int, chunk: int, projector=None):
    """Texture of the "pairs" layout: per texel centre, its cell, its triangle and barycentric
    coordinates in closed form; colour from ``color_fn`` at the 3-D point (or the interpolated
    vertex colours). Returns ``(uvs (F, 3, 2), texture (T, T, 3), covered (T, T))``."""
    dev, n = mesh.device, mesh.num_faces
    uvs, cell, legs = pair_layout(n, texture_size)
    k = _pair_grid_side(n)
    centres = torch.arange(texture_size, device=dev, dtype=torch.float32) + 0.5
    x, y = centres[None, :].expand(texture_size, -1), centres[:, None].expand(-1, texture_size)   # y up
    cx, cy = (x // cell).long(), (y // cell).long()
    lx, ly = x - cx * cell, y - cy * cell
    in_grid = (cx < k) & (cy < k)
    upper = lx + ly > cell                                         # which side of the cell's diagonal
    a = torch.where(upper, cell - _PAIR_INSET - lx, lx - _PAIR_INSET) / legs
    b = torch.where(upper, cell - _PAIR_INSET - ly, ly - _PAIR_INSET) / legs
    face = (cy * k + cx) * 2 + upper.long()
    covered = in_grid & (a >= 0) & (b >= 0) & (a + b <= 1) & (face < n)
    face, a, b = face[covered], a[covered], b[covered]
    bary = torch.stack([1 - a - b, a, b], -1)                       # weights of the face's corners 0, 1, 2
    corners = mesh.faces[face]                                      # (P, 3)
    texture = torch.ones(texture_size, texture_size, 3, device=dev)
    points = (mesh.vertices[corners] * bary[..., None]).sum(1)
    if color_fn is None:
        values = (mesh.vertex_colors[corners] * bary[..., None]).sum(1)
    else:
        values = query_points(color_fn, points, chunk).float().to(dev)
    if projector is not None:
        normals = face_normals(mesh.vertices, mesh.faces)[face]
        values = projector.blend(points, normals, values.float())
    texture[covered] = values.to(texture.dtype)
    # rows were built with y up; the texture's row 0 is the top (v = 1)
    return uvs.to(dev), texture.flip(0), covered.flip(0)


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
    m = mask[None, None].float()
    # colour channels premultiplied by coverage, then coverage: one 3x3 box sum per pass gives both
    # the neighbours' colour total and their count
    stack = torch.cat([(texture * mask[..., None]).permute(2, 0, 1)[None].float(), m], dim=1)
    for _ in range(iterations):
        sums = F.avg_pool2d(stack, 3, stride=1, padding=1, count_include_pad=True)
        count = sums[:, -1:]
        grow = (stack[:, -1:] == 0) & (count > 0)
        stack = torch.where(grow, torch.cat([sums[:, :-1] / count.clamp_min(1e-12), torch.ones_like(count)], 1),
                            stack)
    out = stack[0, :-1].permute(1, 2, 0)
    covered = stack[0, -1] > 0
    if not bool(covered.all()):
        value = out[covered].mean(0) if fill is None and bool(covered.any()) else torch.full(
            (out.shape[-1],), 1.0 if fill is None else fill, device=out.device)
        out = torch.where(covered[..., None], out, value.to(out.dtype))
    return out.to(texture.dtype)


def bake_texture(mesh: Mesh, color_fn: Optional[ColorFn] = None, texture_size: int = 1024,
                 face_budget: Optional[int] = DEFAULT_FACE_BUDGET, dilation: int = DEFAULT_DILATION,
                 chunk: int = 1 << 18, uv_layout: str = "pairs", views: Optional[torch.Tensor] = None,
                 cameras=None) -> Mesh:
    """A UV-textured copy of ``mesh``.

    Args:
        mesh: the surface (any frame; ``color_fn`` is queried in the same frame).
        color_fn: (P, 3) points -> (P, 3) colours in [0, 1], e.g. the triplane's colour field
            (:meth:`InstantMeshReconstructor.query`). None bakes the mesh's vertex colours
            (interpolated over each face).
        texture_size: side of the square texture in texels.
        face_budget: decimate to this many faces first (None keeps every face).
        dilation: texels the charts are grown by.
        uv_layout: "pairs" (fast, the default) or "xatlas" (few seams, for painting); see the
            module docstring.
        views, cameras: optional (N, 3, H, W) images of the mesh (e.g. the refined views) and
            their cameras (default the Zero123++ v1.2 ones): texels the views see take their
            colours from them (:class:`~sharpit.reconstruct.projection.ViewProjector`), the rest
            keep ``color_fn``'s.
    Returns:
        A :class:`Mesh` with ``uvs`` (V', 2) and ``texture`` (size, size, 3) in [0, 1], no vertex colours.
    """
    from ..render import interpolate, rasterize

    if texture_size < 8:
        raise InputError(f"texture_size must be >= 8, got {texture_size}")
    if color_fn is None and mesh.vertex_colors is None:
        raise MeshError("the mesh has no vertex colours to bake; pass a color_fn", mesh.source)
    if uv_layout not in UV_LAYOUTS:
        raise InputError(f"uv_layout must be one of {UV_LAYOUTS}, got {uv_layout!r}")
    if face_budget is not None:
        mesh = decimate(mesh, face_budget)
    dev = mesh.device
    projector = None
    if views is not None:
        from .projection import ViewProjector

        projector = ViewProjector(mesh, views.to(dev), cameras)
    if uv_layout == "pairs":
        uvs, texture, covered = _bake_pairs(mesh, color_fn, texture_size, chunk, projector)
        texture = dilate_texture(texture.clamp(0, 1), covered, dilation)
        faces = torch.arange(3 * mesh.num_faces, device=dev).reshape(-1, 3)
        return Mesh(mesh.vertices[mesh.faces.reshape(-1)], faces, uvs=uvs.reshape(-1, 2), texture=texture,
                    source=mesh.source).validate()
    vmapping, faces, uvs = unwrap_uv(mesh, texture_size)
    vmapping, faces, uvs = vmapping.to(dev), faces.to(dev), uvs.to(dev)
    verts = mesh.vertices[vmapping]
    clip = torch.cat([uvs * 2 - 1, torch.zeros_like(uvs[:, :1]), torch.ones_like(uvs[:, :1])], dim=-1)
    frags = rasterize(clip[None], faces, texture_size, texture_size)
    mask = frags.mask[0]
    texture = torch.ones(texture_size, texture_size, 3, device=dev)
    points = interpolate(verts, faces, frags)[0][mask]
    if color_fn is None:
        texture = interpolate(mesh.vertex_colors[vmapping], faces, frags)[0]
    else:
        texture[mask] = query_points(color_fn, points, chunk).float().to(dev)
    if projector is not None:
        normals = face_normals(verts, faces)[frags.pix_to_face[0][mask]]
        texture[mask] = projector.blend(points, normals, texture[mask].float()).to(texture.dtype)
    texture = dilate_texture(texture.clamp(0, 1), mask, dilation)
    return Mesh(verts, faces, uvs=uvs, texture=texture, source=mesh.source).validate()
