"""Rebuild the small example meshes of the web app's Edit tab (``python examples/assets/make_assets.py``).

Made from sharpit's own test shapes (:mod:`sharpit.testing.meshes`), so they carry no licence of
anyone else's:

* ``rough_chair.glb``  a blocky chair of six boxes, one wood colour per part (glTF, y-up by its spec)
* ``rough_table.obj``  a table of five boxes with vertex colours, written y-up as most exporters do
                       (edit it with up axis "y")
* ``ball.ply``         a sphere without colours (shaded grey in the coarse views), z-up
"""

from __future__ import annotations

from pathlib import Path

import torch

from sharpit.mesh import Mesh
from sharpit.mesh_io import save_mesh
from sharpit.testing.meshes import colored_cube, uv_sphere

HERE = Path(__file__).resolve().parent


def box(centre, size, color) -> Mesh:
    """An axis-aligned box (world frame, +z up) of one colour, from the unit-cube test shape."""
    cube = colored_cube(half_size=0.5)
    vertices = cube.vertices * torch.tensor(size) + torch.tensor(centre)
    return Mesh(vertices, cube.faces, vertex_colors=torch.tensor(color).expand(cube.num_vertices, 3))


def merge(parts) -> Mesh:
    offsets = torch.cumsum(torch.tensor([0] + [p.num_vertices for p in parts[:-1]]), 0)
    return Mesh(torch.cat([p.vertices for p in parts]), torch.cat([p.faces + o for p, o in zip(parts, offsets)]),
                vertex_colors=torch.cat([p.vertex_colors for p in parts]))


def chair() -> Mesh:
    wood, dark = (0.55, 0.35, 0.18), (0.40, 0.24, 0.12)
    legs = [box((x, y, 0.2), (0.06, 0.06, 0.4), dark) for x in (-0.2, 0.2) for y in (-0.2, 0.2)]
    seat = box((0.0, 0.0, 0.42), (0.5, 0.5, 0.05), wood)
    back = box((-0.22, 0.0, 0.72), (0.05, 0.5, 0.55), wood)   # at the back (-x): the chair faces +x
    return merge(legs + [seat, back])


def table() -> Mesh:
    top = box((0.0, 0.0, 0.5), (1.0, 0.6, 0.06), (0.85, 0.85, 0.80))
    legs = [box((x, y, 0.235), (0.06, 0.06, 0.47), (0.25, 0.25, 0.28)) for x in (-0.44, 0.44) for y in (-0.24, 0.24)]
    return merge([top] + legs)


def main() -> None:
    save_mesh(chair(), HERE / "rough_chair.glb")
    save_mesh(table(), HERE / "rough_table.obj", up_axis="y")
    save_mesh(uv_sphere(n_lat=12, n_lon=24, colored=False), HERE / "ball.ply")
    for name in ("rough_chair.glb", "rough_table.obj", "ball.ply"):
        print(HERE / name, (HERE / name).stat().st_size, "bytes")


if __name__ == "__main__":
    main()
