"""Marching cubes in PyTorch, vectorised over all cells, on the volume's device (CUDA or CPU).

The triangle table is derived here, at import, from one rule rather than typed in:

* a cell's corner ``c`` (bit 0: +x, bit 1: +y, bit 2: +z) is *inside* when its value exceeds the
  level; an edge joining an inside and an outside corner carries a surface vertex;
* on each of the cube's six faces, walked counter-clockwise seen from outside the cube, every run
  of inside corners is cut off by one segment, from the crossing where the walk enters the run to
  the crossing where it leaves it. On an ambiguous face (inside and outside corners alternating)
  this separates the two inside corners; the rule depends only on the face's own four corners, so
  the two cells sharing a face always agree and the surface is closed (no cracks);
* each crossing is the end of one face's segment and the start of its neighbour face's, so the
  segments form closed, consistently directed loops; each loop is fanned into triangles from a
  vertex whose chords stay off the cube's faces (so every edge is shared by exactly two
  triangles), wound counter-clockwise seen from the outside of the object (normals point out).

Vertices are identified by the grid edge they lie on, so the mesh comes out welded; where the
field equals the level exactly at a grid node several edges put a vertex on that node, and those
are merged too. Cases with tunnels through a cell's interior are not resolved (as in classic
marching cubes), so the triangulation can differ from scikit-image's Lewiner variant in ambiguous
cells while the surface is the same to within a cell.
"""

from __future__ import annotations

from functools import lru_cache
from typing import List, Tuple

import torch

__all__ = ["marching_cubes_torch", "CUBE_EDGES", "triangle_table"]

#: The 12 edges of a cell as (corner, corner) pairs, ordered by axis then by the lower corner.
CUBE_EDGES: Tuple[Tuple[int, int], ...] = tuple(
    (c, c | (1 << axis)) for axis in range(3) for c in range(8) if not c & (1 << axis))

#: The six faces of a cell as four corners in counter-clockwise order seen from outside the cell.
_FACES = (
    (0, 4, 6, 2), (1, 3, 7, 5),   # x = 0 (normal -x), x = 1 (normal +x)
    (0, 1, 5, 4), (2, 6, 7, 3),   # y = 0, y = 1
    (0, 2, 3, 1), (4, 5, 7, 6),   # z = 0, z = 1
)


def _edge_index(a: int, b: int) -> int:
    return CUBE_EDGES.index((min(a, b), max(a, b)))


def _loops(case: int) -> List[List[int]]:
    """The directed surface loops (lists of edge indices) of one corner configuration."""
    inside = [bool(case >> c & 1) for c in range(8)]
    nxt = {}
    for face in _FACES:
        # crossings along the counter-clockwise walk: (position, edge, entering-inside?)
        crossings = [(i, _edge_index(face[i], face[(i + 1) % 4]), inside[face[(i + 1) % 4]])
                     for i in range(4) if inside[face[i]] != inside[face[(i + 1) % 4]]]
        for k, (_, edge, entering) in enumerate(crossings):
            if entering:   # the run of inside corners that starts here ends at the next crossing
                nxt[edge] = crossings[(k + 1) % len(crossings)][1]
    loops, seen = [], set()
    for start in sorted(nxt):
        if start in seen:
            continue
        loop, edge = [], start
        while edge not in seen:
            seen.add(edge)
            loop.append(edge)
            edge = nxt[edge]
        loops.append(loop)
    return loops


def _fan_stays_inside(loop: List[int]) -> bool:
    """Whether fanning ``loop`` from its first vertex draws no chord along a cube face. A chord
    between two crossings on one (ambiguous) face would also be drawn, or crossed, by the cell on
    the other side of that face, making the edge non-manifold; every loop has a start that avoids
    it (checked for all 256 cases at import)."""
    faces = [{f for f, corners in enumerate(_FACES) if a in corners and b in corners}
             for a, b in (CUBE_EDGES[e] for e in loop)]
    return not any(faces[0] & faces[i] for i in range(2, len(loop) - 1))


@lru_cache(maxsize=None)
def triangle_table() -> Tuple[torch.Tensor, torch.Tensor]:
    """``(table, counts)``: (256, T, 3) int64 edge indices per case (-1 padded) and (256,) triangle
    counts, wound so that normals point from inside (values above the level) to outside."""
    per_case = []
    for case in range(256):
        tris = []
        for loop in _loops(case):
            s = next(s for s in range(len(loop)) if _fan_stays_inside(loop[s:] + loop[:s]))
            loop = loop[s:] + loop[:s]
            tris += [(loop[0], loop[i], loop[i + 1]) for i in range(1, len(loop) - 1)]
        per_case.append(tris)
    width = max(len(t) for t in per_case)
    table = torch.full((256, width, 3), -1, dtype=torch.long)
    for case, tris in enumerate(per_case):
        if tris:
            table[case, :len(tris)] = torch.tensor(tris)
    return table, torch.tensor([len(t) for t in per_case])


def marching_cubes_torch(volume: torch.Tensor, level: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """The ``level`` iso-surface of an (R0, R1, R2) [x, y, z] volume, on its device.

    Args:
        volume: the sampled field; "inside" is where it exceeds ``level``. Must be finite.
        level: the iso-value.
    Returns:
        ``(vertices, faces)``: (V, 3) float32 in grid-index coordinates ([0, R - 1] per axis) and
        (F, 3) int64, counter-clockwise seen from outside (the lower-valued side); both on
        ``volume.device``. Empty tensors when the level is never crossed.
    """
    table, counts = (t.to(volume.device) for t in triangle_table())
    vol = volume.float()
    r0, r1, r2 = vol.shape
    inside = vol > level
    case = torch.zeros((r0 - 1, r1 - 1, r2 - 1), dtype=torch.long, device=vol.device)
    for c in range(8):
        dx, dy, dz = c & 1, c >> 1 & 1, c >> 2 & 1
        case |= inside[dx:r0 - 1 + dx, dy:r1 - 1 + dy, dz:r2 - 1 + dz].long() << c
    cells = torch.nonzero((case != 0) & (case != 255))
    if cells.shape[0] == 0:
        empty = torch.zeros((0, 3), device=vol.device)
        return empty, empty.long()
    cell_case = case[cells[:, 0], cells[:, 1], cells[:, 2]]
    tris = table[cell_case]                                   # (N, T, 3) local edges
    valid = torch.arange(table.shape[1], device=vol.device)[None] < counts[cell_case][:, None]
    cell_of_tri = cells[:, None, :].expand(-1, table.shape[1], -1)[valid]   # (F, 3)
    local = tris[valid]                                       # (F, 3)
    # global edge id: axis * R^3-ish block + the edge's lower grid node
    lower = torch.tensor([a for a, _ in CUBE_EDGES], device=vol.device)     # (12,) each edge's lower corner
    offsets = torch.stack([lower & 1, lower >> 1 & 1, lower >> 2 & 1], -1)   # (12, 3)
    axis = torch.arange(12, device=vol.device) // 4                         # CUBE_EDGES is ordered by axis
    nodes = cell_of_tri[:, None, :] + offsets[local]          # (F, 3 vertices, 3) lower node of each edge
    node_id = (nodes[..., 0] * r1 + nodes[..., 1]) * r2 + nodes[..., 2]
    edge_id = axis[local] * (r0 * r1 * r2) + node_id          # (F, 3)
    unique, faces = torch.unique(edge_id.reshape(-1), return_inverse=True)
    faces = faces.reshape(-1, 3)
    e_axis = unique // (r0 * r1 * r2)
    e_node = unique % (r0 * r1 * r2)
    p0 = torch.stack([e_node // (r1 * r2), e_node // r2 % r1, e_node % r2], -1)
    p1 = p0 + torch.nn.functional.one_hot(e_axis, 3)
    v0 = vol[p0[:, 0], p0[:, 1], p0[:, 2]]
    v1 = vol[p1[:, 0], p1[:, 1], p1[:, 2]]
    t = ((level - v0) / (v1 - v0)).clamp(0, 1)
    verts = p0.float() + t[:, None] * (p1 - p0).float()
    if bool(((t == 0) | (t == 1)).any()):                    # vertices on grid nodes: weld, drop collapsed
        verts, inverse = torch.unique(verts, dim=0, return_inverse=True)
        faces = inverse[faces]
        keep = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])
        faces = faces[keep]
    return verts, faces
