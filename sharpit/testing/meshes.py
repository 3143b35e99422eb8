"""Small synthetic meshes with known geometry and colours, for tests, examples and benchmarks.

All meshes are in the sharpit world frame (+z up, front +x), wound counter-clockwise seen from
outside, and sized to fit a sphere of radius 0.5 at the origin (the v1.2 scale) unless a
function says otherwise.
"""

from __future__ import annotations

import math
from typing import Dict, Sequence, Tuple

import torch

from ..mesh import Mesh

__all__ = ["CUBE_FACE_COLORS", "colored_cube", "textured_cube", "quadrant_texture", "textured_quad",
           "uv_sphere"]

#: Colour of each face of :func:`colored_cube`, keyed by its outward normal.
CUBE_FACE_COLORS: Dict[Tuple[int, int, int], Tuple[float, float, float]] = {
    (1, 0, 0): (1.0, 0.0, 0.0),    # +x, front: red
    (-1, 0, 0): (0.0, 1.0, 1.0),   # -x, back: cyan
    (0, 1, 0): (0.0, 1.0, 0.0),    # +y: green
    (0, -1, 0): (1.0, 0.0, 1.0),   # -y: magenta
    (0, 0, 1): (0.0, 0.0, 1.0),    # +z, top: blue
    (0, 0, -1): (1.0, 1.0, 0.0),   # -z, bottom: yellow
}

_DEFAULT_HALF = 0.5 / math.sqrt(3.0)


def _cube_faces(half: float):
    """Per face: (normal, 4 corners counter-clockwise seen from outside) of an axis-aligned cube."""
    out = []
    for normal in CUBE_FACE_COLORS:
        axis = next(i for i in range(3) if normal[i] != 0)
        sign = normal[axis]
        u = torch.zeros(3)
        v = torch.zeros(3)
        u[(axis + 1) % 3] = 1.0
        v[(axis + 2) % 3] = 1.0
        if sign < 0:
            u, v = v, u
        centre = torch.tensor(normal, dtype=torch.float32) * half
        corners = [centre + half * (a * u + b * v) for a, b in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
        out.append((normal, torch.stack(corners)))
    return out


def colored_cube(half_size: float = _DEFAULT_HALF) -> Mesh:
    """An axis-aligned cube centred at the origin, each face a solid colour of
    :data:`CUBE_FACE_COLORS` (24 vertices, 12 triangles; default bounding radius 0.5)."""
    verts, faces, colors = [], [], []
    for k, (normal, corners) in enumerate(_cube_faces(half_size)):
        verts.append(corners)
        faces += [[4 * k, 4 * k + 1, 4 * k + 2], [4 * k, 4 * k + 2, 4 * k + 3]]
        colors.append(torch.tensor(CUBE_FACE_COLORS[normal]).expand(4, 3))
    return Mesh(torch.cat(verts), torch.tensor(faces), vertex_colors=torch.cat(colors))


def textured_cube(half_size: float = _DEFAULT_HALF, cell: int = 32) -> Mesh:
    """:func:`colored_cube` with its colours in a texture instead: a 3x2 atlas of ``cell``-pixel
    solid cells (face ``k`` in column ``k % 3``, row ``k // 3``), each face mapped to the inner
    part of its cell."""
    texture = torch.zeros(2 * cell, 3 * cell, 3)
    verts, faces, uvs = [], [], []
    margin = 0.25
    for k, (normal, corners) in enumerate(_cube_faces(half_size)):
        col, row = k % 3, k // 3
        texture[row * cell:(row + 1) * cell, col * cell:(col + 1) * cell] = torch.tensor(CUBE_FACE_COLORS[normal])
        u0, u1 = (col + margin) / 3.0, (col + 1 - margin) / 3.0
        # uv origin is bottom-left while texture row 0 is the top: row r spans v in [1 - (r+1)/2, 1 - r/2].
        v0, v1 = 1.0 - (row + 1 - margin) / 2.0, 1.0 - (row + margin) / 2.0
        uvs.append(torch.tensor([[u0, v0], [u1, v0], [u1, v1], [u0, v1]]))
        verts.append(corners)
        faces += [[4 * k, 4 * k + 1, 4 * k + 2], [4 * k, 4 * k + 2, 4 * k + 3]]
    return Mesh(torch.cat(verts), torch.tensor(faces), uvs=torch.cat(uvs), texture=texture)


def quadrant_texture(size: int = 64, colors: Sequence[Sequence[float]] = (
        (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (1.0, 1.0, 1.0))) -> torch.Tensor:
    """(size, size, 3) texture in four solid quadrants: top-left, top-right, bottom-left,
    bottom-right (default red, green, blue, white; row 0 at the top)."""
    t = torch.zeros(size, size, 3)
    h = size // 2
    t[:h, :h], t[:h, h:], t[h:, :h], t[h:, h:] = (torch.tensor(c, dtype=torch.float32) for c in colors)
    return t


def textured_quad(half_size: float = 0.35, texture: torch.Tensor = None) -> Mesh:
    """A square in the plane x = 0 facing +x (the azimuth-0 camera), textured with
    :func:`quadrant_texture` so that, seen from the front, the texture appears upright:
    ``u`` runs along +y (image right) and ``v`` along +z (image up)."""
    texture = quadrant_texture() if texture is None else texture
    s = half_size
    verts = torch.tensor([[0.0, -s, -s], [0.0, s, -s], [0.0, s, s], [0.0, -s, s]])
    uvs = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    return Mesh(verts, torch.tensor([[0, 1, 2], [0, 2, 3]]), uvs=uvs, texture=texture)


def uv_sphere(n_lat: int = 16, n_lon: int = 32, radius: float = 0.5, colored: bool = True) -> Mesh:
    """A latitude-longitude sphere of ``2 * n_lon * (n_lat - 1)`` triangles.

    Args:
        n_lat: latitude bands (>= 2); n_lon: longitude segments (>= 3).
        radius: sphere radius.
        colored: give vertices the colour ``0.5 * (normal + 1)``.
    """
    if n_lat < 2 or n_lon < 3:
        raise ValueError(f"need n_lat >= 2 and n_lon >= 3, got {n_lat}, {n_lon}")
    theta = torch.arange(1, n_lat, dtype=torch.float64) * (math.pi / n_lat)  # polar angle of the rings
    phi = torch.arange(n_lon, dtype=torch.float64) * (2.0 * math.pi / n_lon)
    t, p = torch.meshgrid(theta, phi, indexing="ij")
    ring = torch.stack([t.sin() * p.cos(), t.sin() * p.sin(), t.cos()], dim=-1).reshape(-1, 3)
    unit = torch.cat([torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64), ring,
                      torch.tensor([[0.0, 0.0, -1.0]], dtype=torch.float64)])
    top, bottom = 0, unit.shape[0] - 1
    j = torch.arange(n_lon)
    jn = (j + 1) % n_lon
    idx = lambda r, c: 1 + r * n_lon + c  # noqa: E731
    faces = [torch.stack([torch.full_like(j, top), idx(0, j), idx(0, jn)], dim=-1)]
    for r in range(n_lat - 2):
        a, b, c, d = idx(r, j), idx(r, jn), idx(r + 1, j), idx(r + 1, jn)
        faces += [torch.stack([a, c, d], dim=-1), torch.stack([a, d, b], dim=-1)]
    last = n_lat - 2
    faces.append(torch.stack([idx(last, j), torch.full_like(j, bottom), idx(last, jn)], dim=-1))
    colors = (unit * 0.5 + 0.5).float() if colored else None
    return Mesh((unit * radius).float(), torch.cat(faces), vertex_colors=colors)
