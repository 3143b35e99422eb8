"""Reconstruction to meshes: analytic triplanes, end to end, texture baking, novel views, video."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sharpit.cameras import orbit_cameras, turntable_cameras
from sharpit.errors import EmptySurfaceError, InputError, MeshError, OutputExistsError, UnsupportedFormatError
from sharpit.mesh import Mesh
from sharpit.reconstruct import TRIPLANE_TO_SHARPIT_SCALE, bake_texture, decimate, dilate_texture, write_video
from sharpit.testing.reconstruct import tiny_reconstructor

RADIUS = 0.8  # sphere radius in the triplane frame
SOFTPLUS_INV_10 = 10.0 + math.log(-math.expm1(-10.0))  # softplus(x) = 10


def _sphere_model(plane_res: int = 64, samples: int = 16, steep: float = 100.0):
    """A tiny reconstructor whose decoder, on hand-made planes, gives density 10 exactly where
    x^2 + y^2 + z^2 = RADIUS^2 (triplane frame), falling steeply to ~0 outside, and red = sigmoid(x).

    Planes (layout of sharpit.reconstruct.triplane): plane 0 channel 0 = x^2 - 1 (x = column),
    plane 1 channel 0 = z^2 - 1 (z = row), plane 2 channel 0 = y^2 - 1 (y = row), plane 0
    channel 1 = x. (The -1 keeps the zero padding outside the box consistent with |coord| = 1.)
    """
    model = tiny_reconstructor(rendering_samples_per_ray=samples)
    c = 8  # triplane_dim of the tiny config
    centres = (torch.arange(plane_res) + 0.5) / plane_res * 2 - 1  # texel centres, align_corners=False
    planes = torch.zeros(1, 3, c, plane_res, plane_res)
    planes[0, 0, 0] = (centres ** 2 - 1)[None, :]
    planes[0, 1, 0] = (centres ** 2 - 1)[:, None]
    planes[0, 2, 0] = (centres ** 2 - 1)[:, None]
    planes[0, 0, 1] = centres[None, :]
    net = model.synthesizer.decoder.net
    with torch.no_grad():
        for layer in net:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.zero_()
                layer.bias.zero_()
        # hidden 0 = relu(steep * (3 - r^2)) >= 0, hidden 1 = relu(x + 1)
        for idx in (0, c, 2 * c):
            net[0].weight[0, idx] = -steep
        net[0].weight[1, 1] = 1.0
        net[0].bias[1] = 1.0
        for k in (2, 4):
            net[k].weight[0, 0] = net[k].weight[1, 1] = 1.0
        # raw = hidden0 + b so that softplus(raw - 1) = 10 at r = RADIUS; red logit = hidden1 - 1 = x
        net[6].weight[0, 0] = 1.0
        net[6].bias[0] = SOFTPLUS_INV_10 + 1.0 - steep * (3.0 - RADIUS ** 2)
        net[6].weight[1, 1] = 1.0
        net[6].bias[1] = -1.0
    return model, planes


def test_sphere_density_gives_the_right_radius_in_the_sharpit_frame():
    model, planes = _sphere_model()
    mesh = model.extract_mesh(planes, resolution=64)
    radii = mesh.vertices.norm(dim=-1)
    expected = RADIUS * TRIPLANE_TO_SHARPIT_SCALE  # 0.373 at the v1.2 scale
    assert radii.mean().item() == pytest.approx(expected, rel=0.01)
    assert (radii - expected).abs().max().item() < 0.02 * expected + 2 * TRIPLANE_TO_SHARPIT_SCALE / 63
    # outward normals: triangles counter-clockwise seen from outside
    tri = mesh.vertices[mesh.faces]
    normals = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    assert ((normals * tri.mean(1)).sum(-1) > 0).float().mean() > 0.99
    # vertex colours come from the triplane at the vertex (triplane x = sharpit x / scale)
    x_tri = mesh.vertices[:, 0] / TRIPLANE_TO_SHARPIT_SCALE
    red = torch.sigmoid(x_tri) * 1.002 - 0.001
    assert torch.allclose(mesh.vertex_colors[:, 0], red, atol=2e-3)
    assert torch.allclose(mesh.vertex_colors[:, 1], torch.full_like(red, 0.5), atol=1e-6)


def test_empty_density_raises_empty_surface_error():
    model, planes = _sphere_model()
    with pytest.raises(EmptySurfaceError):
        model.extract_mesh(planes, resolution=16, threshold=1e6)


def test_volume_rendering_silhouette_matches_the_sphere():
    model, planes = _sphere_model(samples=128, steep=3000.0)  # a hard surface: no soft halo
    size = 64
    cam = orbit_cameras([0.0], [0.0], 1.866, 30.0)
    img = model.render_novel_views(planes=planes, cameras=cam, size=size,
                                   generator=torch.Generator().manual_seed(0))[0]
    assert img.shape == (3, size, size)
    assert torch.allclose(img[:, 0, 0], torch.ones(3))  # background is white
    centre = img[:, size // 2, size // 2]
    assert centre[1].item() == pytest.approx(0.5, abs=0.01)  # green is 0.5 on the surface
    # silhouette half-width along the centre row, in pixels
    r = RADIUS * TRIPLANE_TO_SHARPIT_SCALE
    half = 0.5 / math.tan(math.radians(15)) * size * math.tan(math.asin(r / 1.866))
    covered = (img[1, size // 2] < 0.75).sum().item()
    assert covered == pytest.approx(2 * half, abs=3)


def test_reconstruct_end_to_end_from_a_grid_image():
    model = tiny_reconstructor(seed=1)
    arr = np.full((960, 640, 3), 255, np.uint8)
    for i in range(6):
        r, c = i // 2, i % 2
        arr[r * 320 + 100:r * 320 + 220, c * 320 + 110:c * 320 + 210] = (200, 60, 40)
    grid = Image.fromarray(arr)
    planes = model.encode_views(grid)
    assert planes.shape == (1, 3, 8, 16, 16)
    density = model.query(planes, torch.rand(4096, 3) - 0.5)[0]
    level = density.median().item()  # random weights: pick a level the field crosses
    mesh = model.reconstruct(grid, resolution=24, threshold=level)
    assert mesh.num_faces > 0 and mesh.vertex_colors is not None
    assert mesh.vertices.abs().max().item() <= TRIPLANE_TO_SHARPIT_SCALE + 1e-5
    assert float(mesh.vertex_colors.min()) >= 0 and float(mesh.vertex_colors.max()) <= 1


def test_bad_views_are_reported():
    model = tiny_reconstructor()
    with pytest.raises(InputError, match="6 views"):
        model.reconstruct([torch.ones(3, 320, 320)] * 5)
    nan = torch.ones(6, 3, 320, 320)
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        model.encode_views(nan)
    with pytest.warns(UserWarning, match="resizing views"):
        assert model.encode_views(torch.ones(6, 3, 160, 160)).shape[0] == 1
    with pytest.warns(UserWarning, match="does not look white") as caught:
        model.encode_views(torch.full((6, 3, 320, 320), 0.5))
    # attributed to this line, not to sharpit or to torch's no_grad wrapper (sharpit.warn)
    assert {w.filename for w in caught.list} == {__file__}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.encode_views(torch.ones(6, 3, 320, 320))
    with pytest.raises(InputError, match="one object"):
        model.reconstruct(torch.ones(2, 6, 3, 320, 320))


# -- texture baking -----------------------------------------------------------------------------

def _icosphere(subdivisions: int, radius: float = 0.4) -> Mesh:
    import trimesh

    s = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    return Mesh(torch.from_numpy(s.vertices).float(), torch.from_numpy(s.faces).long())


def _colour(p: torch.Tensor) -> torch.Tensor:
    return (p * 1.2 + 0.5).clamp(0, 1)


def _sample_surface(mesh: Mesh, n: int, gen: torch.Generator):
    face = torch.randint(0, mesh.num_faces, (n,), generator=gen)
    w = torch.rand(n, 3, generator=gen)
    w = w / w.sum(-1, keepdim=True)
    idx = mesh.faces[face]
    return (mesh.vertices[idx] * w[..., None]).sum(1), (mesh.uvs[idx] * w[..., None]).sum(1)


@pytest.mark.parametrize("layout", ["pairs", "xatlas"])
@pytest.mark.parametrize("source", ["color_fn", "vertex_colors"])
def test_texture_baking_reproduces_known_colours(source, layout):
    from sharpit.render import sample_texture

    mesh = _icosphere(3)
    if source == "vertex_colors":
        mesh = Mesh(mesh.vertices, mesh.faces, vertex_colors=_colour(mesh.vertices))
        baked = bake_texture(mesh, None, texture_size=256, face_budget=None, uv_layout=layout)
    else:
        baked = bake_texture(mesh, _colour, texture_size=256, face_budget=None, uv_layout=layout)
    assert baked.has_texture and baked.texture.shape == (256, 256, 3) and baked.vertex_colors is None
    assert baked.num_faces == mesh.num_faces
    points, uv = _sample_surface(baked, 2000, torch.Generator().manual_seed(0))
    err = (sample_texture(baked.texture, uv) - _colour(points)).abs()
    assert err.mean().item() < 0.01
    assert torch.quantile(err.max(-1).values, 0.99).item() < 0.06


def test_pairs_layout_renders_like_the_vertex_coloured_mesh():
    """No visible seams: the textured mesh renders as the vertex-coloured one (six views, PSNR)."""
    from sharpit.reconstruct.texture import pair_layout
    from sharpit.render import render_views

    mesh = _icosphere(4)                                             # 5120 faces
    mesh = Mesh(mesh.vertices, mesh.faces, vertex_colors=_colour(mesh.vertices))
    baked = bake_texture(mesh, None, texture_size=512, face_budget=None, uv_layout="pairs")
    assert baked.num_vertices == 3 * mesh.num_faces
    ref, img = (render_views(m, size=160, supersample=2).images for m in (mesh, baked))
    psnr = 10 * torch.log10(1 / ((ref - img) ** 2).mean())
    assert psnr > 35
    uvs, cell, legs = pair_layout(mesh.num_faces, 512)
    texels = uvs * 512
    assert float(texels.min()) >= 0.5 and float(texels.max()) <= 512 - 0.5 and legs >= 1
    cells = (texels.mean(1) // cell).long()                       # two faces per cell, each in its own
    assert int(torch.unique(cells[:, 0] * 10000 + cells[:, 1], return_counts=True)[1].max()) == 2
    with pytest.raises(InputError, match="too small"):
        pair_layout(100000, 256)
    with pytest.raises(InputError, match="uv_layout"):
        bake_texture(mesh, None, texture_size=64, uv_layout="cube")


def test_decimation_respects_the_budget_and_keeps_colours():
    mesh = _icosphere(4)
    mesh = Mesh(mesh.vertices, mesh.faces, vertex_colors=_colour(mesh.vertices))
    small = decimate(mesh, 1000)
    assert 800 <= small.num_faces <= 1000
    assert torch.allclose(small.vertex_colors, _colour(small.vertices), atol=0.08)
    assert decimate(small, 5000) is small
    baked = bake_texture(mesh, _colour, texture_size=64, face_budget=500)
    assert baked.num_faces <= 500
    with pytest.raises(MeshError, match="no vertex colours"):
        bake_texture(_icosphere(1), None, texture_size=64)


def test_dilation_fills_the_background_from_the_charts():
    tex = torch.zeros(8, 8, 3)
    mask = torch.zeros(8, 8, dtype=torch.bool)
    tex[2:4, 2:4] = torch.tensor([0.2, 0.4, 0.6])
    mask[2:4, 2:4] = True
    out = dilate_texture(tex, mask, iterations=1)
    assert torch.allclose(out[1, 1], torch.tensor([0.2, 0.4, 0.6]))
    assert torch.allclose(out[7, 7], torch.tensor([0.2, 0.4, 0.6]))  # unreached texels get the mean


def test_reconstruct_with_texture_returns_a_textured_mesh():
    model = tiny_reconstructor(seed=1)
    views = torch.ones(6, 3, 320, 320)
    views[:, :, 110:210, 110:210] = 0.4
    planes = model.encode_views(views)
    level = model.query(planes, torch.rand(4096, 3) - 0.5)[0].median().item()
    mesh = model.reconstruct(views, resolution=20, threshold=level, texture=True, texture_size=64, face_budget=300)
    assert mesh.has_texture and mesh.num_faces <= 300


# -- videos -------------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".gif", ".mp4"])
def test_turntable_video_is_written_atomically(tmp_path, suffix):
    model, planes = _sphere_model()
    frames = model.render_novel_views(planes=planes, cameras=turntable_cameras(4), size=32)
    assert frames.shape == (4, 3, 32, 32)
    path = write_video(frames, tmp_path / f"spin{suffix}", fps=8)
    assert path.stat().st_size > 0 and sorted(p.name for p in tmp_path.iterdir()) == [f"spin{suffix}"]
    if suffix == ".gif":
        with Image.open(path) as im:
            assert im.n_frames == 4 and im.size == (32, 32)
    with pytest.raises(OutputExistsError):
        write_video(frames, path)
    write_video(frames, path, overwrite=True)
    with pytest.raises(UnsupportedFormatError):
        write_video(frames, tmp_path / "spin.avi")
    with pytest.raises(InputError, match="pass exactly one"):
        model.render_novel_views()


def test_texture_from_the_views_is_closer_to_the_truth_at_novel_views():
    """What ``texture_source="views"`` buys (benchmarks/bench_texture.py, smaller here)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_texture import texture_sources

    rows = {source: quality for source, _, quality in texture_sources(torch.device("cpu"), texture_size=256)}
    assert rows["views"] > rows["field"] + 2.0, rows
