"""Chunked grid queries and marching cubes on analytic fields."""

import pytest
import torch

from sharpit.errors import EmptySurfaceError, InputError
from sharpit.isosurface import extract_mesh, marching_cubes, query_grid


def _signed_volume(mesh):
    tri = mesh.vertices.double()[mesh.faces]
    return float((torch.linalg.cross(tri[:, 0], tri[:, 1]) * tri[:, 2]).sum() / 6)


@pytest.mark.parametrize("inside", ["above", "below"])
def test_sphere_has_right_radius_and_outward_faces(inside):
    radius = 0.37
    sign = 1.0 if inside == "above" else -1.0
    mesh = extract_mesh(lambda p: sign * (radius - p.norm(dim=-1)), 48, 0.0, inside=inside,
                        color_fn=lambda p: (p + 1) / 2, chunk=1000)
    r = mesh.vertices.norm(dim=-1)
    assert abs(float(r.mean()) - radius) < 2e-3 and float(r.std()) < 2e-3
    assert abs(_signed_volume(mesh) - 4 / 3 * torch.pi * radius ** 3) < 0.01  # positive: outward
    assert torch.allclose(mesh.vertex_colors, (mesh.vertices + 1) / 2, atol=1e-6)


def test_offset_box_bounds():
    mesh = extract_mesh(lambda p: 0.25 - (p - 1.0).abs().max(dim=-1).values, 41, 0.0, lo=0.0, hi=2.0)
    lo, hi = mesh.bounds()
    assert torch.allclose(lo, torch.full((3,), 0.75), atol=0.03)
    assert torch.allclose(hi, torch.full((3,), 1.25), atol=0.03)


def test_chunking_does_not_change_values():
    f = lambda p: (p ** 2).sum(-1)  # noqa: E731
    assert torch.equal(query_grid(f, 9, chunk=7), query_grid(f, 9, chunk=10 ** 6))


def test_empty_surface_is_a_clear_error():
    with pytest.raises(EmptySurfaceError, match="no surface at level 10"):
        extract_mesh(lambda p: torch.zeros(p.shape[0]), 8, 10.0)


def test_bad_arguments():
    with pytest.raises(InputError):
        query_grid(lambda p: p[:, 0], 1)
    with pytest.raises(InputError):
        marching_cubes(torch.zeros(4, 4, 4), 0.0, inside="sideways")


def test_vertices_on_grid_nodes_are_welded():
    # A quantised field takes the level exactly on many grid nodes; marching cubes then emits such
    # a node once per cell, and unwelded copies would leave seams that stop decimation.
    from sharpit.isosurface import grid_points

    vol = torch.round((0.6 - grid_points(24).norm(dim=-1)) * 4) / 4
    verts, faces = marching_cubes(vol, 0.0)
    assert torch.unique(verts, dim=0).shape[0] == verts.shape[0]
    assert bool(((faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])).all())
    assert int(faces.max()) == verts.shape[0] - 1
