"""The rasteriser's fast paths give the same pixels as its plain ones.

The fixed-footprint (stamp) path, the per-candidate path, float32 and float64 edge functions,
views rendered in parallel threads, deferred normals and the sort-based closed-mesh test are
each compared with the slower, simpler computation they stand in for.
"""

import math

import pytest
import torch

from sharpit.cameras import orbit_cameras, zero123plus_cameras
from sharpit.mesh import Mesh
from sharpit.render import rasterize, render_views
from sharpit.render import rasterizer as raster_module
from sharpit.render import renderer as renderer_module
from sharpit.render.renderer import Deferred, MultiViewRender
from sharpit.testing.meshes import colored_cube, textured_cube, uv_sphere


def _clip(mesh, cams):
    near, far = renderer_module._depth_range(mesh.vertices, cams)
    v = mesh.vertices
    return torch.einsum("nij,vj->nvi", cams.full_projection(near, far), torch.cat([v, torch.ones_like(v[:, :1])], -1))


def _soup(seed=0, n=400, scale=0.3):
    """Overlapping random triangles of mixed sizes and windings, some off-screen."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(n, 1, 4, generator=g) * torch.tensor([2.6, 2.6, 1.6, 0.0]) - torch.tensor([1.3, 1.3, 0.8, -1.0])
    sizes = torch.rand(n, 1, 1, generator=g) ** 3 * scale
    clip = centres + torch.randn(n, 3, 4, generator=g) * sizes * torch.tensor([1.0, 1.0, 0.3, 0.05])
    return clip.reshape(1, 3 * n, 4), torch.arange(3 * n).view(n, 3)


def _cases():
    sphere = uv_sphere(40, 80)
    cams = zero123plus_cameras()
    clip, faces = _soup()
    return [(_clip(sphere, cams), sphere.faces, 96, 96), (_clip(colored_cube(), cams), colored_cube().faces, 64, 80),
            (clip, faces, 72, 60)]


def _same(a, b, bary_atol=0.0):
    assert torch.equal(a.pix_to_face, b.pix_to_face)
    assert torch.allclose(a.bary, b.bary, rtol=0, atol=bary_atol)
    assert torch.allclose(a.depth, b.depth, rtol=1e-6, atol=0)


@pytest.mark.parametrize("cull", [False, True])
def test_stamp_path_matches_the_per_candidate_path(monkeypatch, cull):
    for clip, faces, h, w in _cases():
        fast = rasterize(clip, faces, h, w, cull_backfaces=cull)
        monkeypatch.setattr(raster_module, "_STAMP_SIDES", (1,))  # (almost) everything per candidate
        plain = rasterize(clip, faces, h, w, cull_backfaces=cull, max_pairs=1000)
        monkeypatch.undo()
        _same(fast, plain)
        assert int(fast.mask.sum()) > 0


def test_float32_edge_functions_match_float64(monkeypatch):
    for clip, faces, h, w in _cases():
        fast = rasterize(clip, faces, h, w)
        monkeypatch.setattr(raster_module, "_SMALL_EXTENT_PX", 0)  # every triangle in float64
        exact = rasterize(clip, faces, h, w)
        monkeypatch.undo()
        # The same coverage; depth is evaluated in float32 or float64 (as before), so where two
        # triangles tie (a shared edge) either may win.
        assert torch.equal(fast.mask, exact.mask)
        same = fast.pix_to_face == exact.pix_to_face
        assert int((~same).sum()) <= 0.001 * int(fast.mask.sum())
        assert torch.allclose(fast.depth, exact.depth, rtol=1e-6, atol=0)
        assert torch.allclose(fast.bary[same], exact.bary[same], rtol=0, atol=1e-6)


def test_barycentrics_are_a_partition_of_unity_and_non_negative():
    for clip, faces, h, w in _cases():
        frags = rasterize(clip, faces, h, w)
        covered = frags.mask
        assert bool((frags.bary >= 0).all())
        assert torch.allclose(frags.bary.sum(-1)[covered], torch.ones(int(covered.sum())), atol=1e-6)


def test_views_in_parallel_threads_give_the_same_render(monkeypatch):
    sphere = uv_sphere(24, 48)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.setattr(renderer_module, "_PARALLEL_MIN_PIXELS", 1)
        assert len(renderer_module._view_chunks(6, 64 * 64, torch.device("cpu"))) == 2
        split = render_views(sphere, size=64, shading="lambertian")
        monkeypatch.setattr(renderer_module, "_PARALLEL_MIN_PIXELS", 1 << 40)
        whole = render_views(sphere, size=64, shading="lambertian")
    finally:
        torch.set_num_threads(threads)
    for name in ("images", "alpha", "depth", "normals"):
        assert torch.equal(getattr(split, name), getattr(whole, name)), name


@pytest.mark.parametrize("builder", [uv_sphere, colored_cube, textured_cube])
def test_deferred_normals_equal_the_ones_shading_needs(builder):
    mesh = builder()
    cams = orbit_cameras([15.0, 100.0, 250.0], [10.0, -20.0, 40.0], 2.0)
    for supersample in (1, 2):
        unlit = render_views(mesh, cams, size=48, supersample=supersample)
        assert isinstance(unlit.__dict__["_normals"], Deferred)   # not computed yet
        lit = render_views(mesh, cams, size=48, supersample=supersample, shading="lambertian")
        assert torch.equal(unlit.normals, lit.normals)
        assert not isinstance(unlit.__dict__["_normals"], Deferred)
        covered = lit.alpha[:, 0] == 1
        assert torch.allclose(lit.normals.norm(dim=1)[covered], torch.ones(int(covered.sum())), atol=1e-5)
        assert bool((lit.normals.abs().sum(1)[lit.alpha[:, 0] == 0] == 0).all())


def test_multiview_render_takes_plain_or_deferred_normals():
    one = torch.zeros(1, 3, 2, 2)
    calls = []
    lazy = MultiViewRender(one, one[:, :1], one[:, :1], Deferred(lambda: calls.append(1) or one + 1), None)
    assert calls == []
    assert torch.equal(lazy.normals, one + 1) and torch.equal(lazy.normals, one + 1) and calls == [1]
    plain = MultiViewRender(images=one, alpha=one[:, :1], depth=one[:, :1], normals=one, cameras=None)
    assert plain.normals is one


def _safe_to_cull_by_definition(vertices, faces, cameras):
    """The closed-mesh test spelled out: every directed edge once, its reverse present."""
    lo, hi = vertices.min(0).values, vertices.max(0).values
    centre = (lo + hi) / 2
    if not bool(((cameras.position - centre).norm(dim=-1) > (vertices - centre).norm(dim=-1).max()).all()):
        return False
    edges = [(int(f[i]), int(f[(i + 1) % 3])) for f in faces for i in range(3)]
    if len(set(edges)) != len(edges) or any((b, a) not in set(edges) for a, b in edges):
        return False
    tri = vertices.double()[faces.long()]
    return float((tri[:, 0] * torch.linalg.cross(tri[:, 1], tri[:, 2])).sum()) > 0


def test_closed_mesh_test_matches_its_definition():
    cams = zero123plus_cameras()
    g = torch.Generator().manual_seed(1)
    sphere = uv_sphere(5, 7)
    v, f = sphere.vertices, sphere.faces
    meshes = [(v, f), (v, f.flip(1)), (v, f[1:]), (v, torch.cat([f, f[:1]])), (v, torch.cat([f, f])),
              (v, torch.cat([f[:1].flip(1), f[1:]])), (v, torch.cat([f, torch.tensor([[0, 0, 1]])])),
              (v, torch.cat([f, torch.tensor([[3, 3, 3]])])), (v, f[torch.randperm(len(f), generator=g)]),
              (v, f.roll(1, 1)), (v, f.int()), (colored_cube().vertices, colored_cube().faces),
              (torch.cat([v, v + 0.2]) * 0.5, torch.cat([f, f + len(v)]))]
    for _ in range(30):
        n = int(torch.randint(4, 30, (1,), generator=g))
        meshes.append((torch.randn(n, 3, generator=g) * 0.2, torch.randint(0, n, (int(torch.randint(1, 40, (1,), generator=g)), 3),
                                                                             generator=g)))
    for vertices, faces in meshes:
        assert renderer_module._safe_to_cull(vertices, faces, cams) == _safe_to_cull_by_definition(vertices, faces, cams)
    assert renderer_module._safe_to_cull(v, f, cams)
    big = uv_sphere(60, 240)
    v, f = big.vertices, big.faces
    swapped = f.clone()
    swapped[5000] = swapped[5000].flip(0)
    for faces, closed in ((f, True), (f.flip(1), False), (f[:-1], False), (swapped, False),
                          (torch.cat([f, f[:1]]), False)):
        assert renderer_module._safe_to_cull(v, faces, cams) == closed


def test_open_mesh_seen_inside_renders_like_without_culling():
    sphere = uv_sphere(16, 32)
    bowl = Mesh(sphere.vertices, sphere.faces[sphere.vertices[sphere.faces].mean(1)[:, 2] < 0],
                vertex_colors=sphere.vertex_colors)
    cams = orbit_cameras([0.0, 120.0], [60.0, 45.0], 1.6)
    auto, plain = render_views(bowl, cams, size=64), render_views(bowl, cams, size=64, cull_backfaces=False)
    assert torch.equal(auto.images, plain.images)
    assert math.isclose(float(auto.alpha.mean()), float(plain.alpha.mean()))
