"""Marching cubes in PyTorch (sharpit.marching): closed, manifold, outward, the same surface as
scikit-image, and usable as the whole chain's extractor."""

from collections import Counter

import pytest
import torch

from sharpit import isosurface
from sharpit.errors import EmptySurfaceError
from sharpit.marching import _loops, marching_cubes_torch, triangle_table


def _edges(faces):
    return Counter(map(tuple, torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).tolist()))


def assert_closed_manifold(faces):
    directed = _edges(faces)
    assert max(directed.values()) == 1                              # no edge used twice in one direction
    assert all((b, a) in directed for a, b in directed)             # every edge has its twin: closed


def signed_volume(v, f):
    a, b, c = v[f[:, 0]].double(), v[f[:, 1]].double(), v[f[:, 2]].double()
    return float((a * torch.cross(b, c, dim=1)).sum() / 6)


def test_table_covers_every_case():
    from sharpit.marching import CUBE_EDGES

    table, counts = triangle_table()
    assert counts[0] == counts[255] == 0 and counts[1] == 1 and int(counts.max()) == table.shape[1]
    for case in range(1, 255):    # every crossing edge is on exactly one loop, every loop a polygon
        crossing = {i for i, (a, b) in enumerate(CUBE_EDGES) if (case >> a & 1) != (case >> b & 1)}
        loops = _loops(case)
        assert sorted(e for loop in loops for e in loop) == sorted(crossing)
        assert min(map(len, loops)) >= 3
        assert int(counts[case]) == sum(len(loop) - 2 for loop in loops)


@pytest.mark.parametrize("seed", range(3))
def test_noise_fields_give_closed_manifold_surfaces(seed):
    vol = torch.randn(18, 18, 18, generator=torch.Generator().manual_seed(seed))
    vol[[0, -1]] = vol[:, [0, -1]] = vol[:, :, [0, -1]] = -1.0      # closed inside the box
    verts, faces = marching_cubes_torch(vol, 0.0)
    assert faces.shape[0] > 1000
    assert_closed_manifold(faces)
    assert signed_volume(verts, faces) > 0                          # normals point outward


def test_same_surface_as_scikit_image():
    grid = isosurface.grid_points(48)
    vol = 0.6 - grid.norm(dim=-1) + 0.05 * torch.sin(8 * grid[..., 0])
    v_sk, f_sk = isosurface.marching_cubes(vol, 0.0, method="skimage")
    v_t, f_t = isosurface.marching_cubes(vol, 0.0, method="torch")
    assert v_t.shape == v_sk.shape and f_t.shape == f_sk.shape      # no ambiguous cells on this field
    nearest = torch.cdist(v_t, v_sk).min(1).values
    assert float(nearest.max()) < 0.01 * 2 / 47                    # the same vertices, to 1 % of a cell
    assert signed_volume(v_t, f_t) == pytest.approx(signed_volume(v_sk, f_sk), rel=1e-4)
    below_t = isosurface.marching_cubes(-vol, 0.0, inside="below", method="torch")
    assert torch.equal(below_t[1], f_t)


def test_grid_node_exactly_on_the_level_is_welded():
    vol = torch.full((10, 10, 10), -1.0)
    vol[3:7, 3:7, 3:7] = 0.0                                        # a shell exactly at the level
    vol[4:6, 4:6, 4:6] = 1.0
    verts, faces = marching_cubes_torch(vol, 0.0)
    assert torch.unique(verts, dim=0).shape[0] == verts.shape[0]
    assert_closed_manifold(faces)


def test_errors_and_empty():
    with pytest.raises(EmptySurfaceError):
        isosurface.marching_cubes(torch.zeros(8, 8, 8), 0.5, method="torch")
    with pytest.raises(ValueError, match="method must be one of"):
        isosurface.marching_cubes(torch.zeros(8, 8, 8), 0.5, method="cuda")


def test_whole_chain_with_the_torch_extractor(tmp_path, monkeypatch):
    """What a CUDA run does (method "auto" -> "torch"), exercised here on the CPU."""
    from sharpit import SharpIt3DPipeline

    monkeypatch.setitem(isosurface.AUTO_METHOD, "cpu", "torch")
    pipe = SharpIt3DPipeline.from_tiny(tmp_path / "tiny")
    pipe.set_progress_bar_config(disable=True)
    result = pipe("a chair", seed=0, coarse_steps=2, refine_steps=2, coarse_grid_size=24, mesh_resolution=32)
    for mesh in (result.mesh, result.coarse_mesh):
        assert mesh.num_faces > 0 and mesh.vertex_colors is not None
        directed = _edges(mesh.faces)
        assert all((b, a) in directed for a, b in directed)        # closed
