"""Tests of the PyTorch rasteriser and the multi-view renderer.

Expected pixels come from pinhole maths written here, independently of sharpit.cameras.
"""

import math

import pytest
import torch

from sharpit.cameras import orbit_cameras, zero123plus_cameras
from sharpit.errors import InputError, MeshError
from sharpit.mesh import Mesh
from sharpit.render import (Fragments, MultiViewRender, available_backends, interpolate, rasterize,
                            render_grid, render_views)
from sharpit.render.shading import NEUTRAL_GREY
from sharpit.testing.meshes import (CUBE_FACE_COLORS, colored_cube, textured_cube, textured_quad,
                                    uv_sphere)

V12_AZIMUTHS = (30.0, 90.0, 150.0, 210.0, 270.0, 330.0)
V12_ELEVATIONS = (20.0, -10.0, 20.0, -10.0, 20.0, -10.0)
V12_DISTANCE = 0.5 / math.tan(math.radians(15.0))
SIZE = 320


def pinhole(points, azimuth, elevation, distance, fov=30.0, size=SIZE):
    """World points (P, 3) -> pixel (u right, v down) and depth for an orbit camera looking at
    the origin with world up +z. float64 throughout."""
    a, e = math.radians(azimuth), math.radians(elevation)
    eye = distance * torch.tensor([math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)],
                                  dtype=torch.float64)
    forward = -eye / eye.norm()
    right = torch.linalg.cross(forward, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    right = right / right.norm()
    up = torch.linalg.cross(right, forward)
    d = torch.as_tensor(points, dtype=torch.float64) - eye
    x, y, z = d @ right, d @ up, d @ forward
    f = (size / 2.0) / math.tan(math.radians(fov) / 2.0)
    return torch.stack([size / 2.0 + f * x / z, size / 2.0 - f * y / z], dim=-1), z, eye


def camera_ray(u, v, azimuth, elevation, distance, fov=30.0, size=SIZE):
    """Inverse of :func:`pinhole`: world-space direction through pixel position (u, v)."""
    a, e = math.radians(azimuth), math.radians(elevation)
    eye = distance * torch.tensor([math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)],
                                  dtype=torch.float64)
    forward = -eye / eye.norm()
    right = torch.linalg.cross(forward, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    right = right / right.norm()
    up = torch.linalg.cross(right, forward)
    f = (size / 2.0) / math.tan(math.radians(fov) / 2.0)
    x, y = (u - size / 2.0) / f, -(v - size / 2.0) / f
    return eye, x[..., None] * right + y[..., None] * up + forward


# -- the six v1.2 views of an asymmetric mesh ---------------------------------------------------

@pytest.mark.parametrize("builder", [colored_cube, textured_cube], ids=["vertex_colors", "texture"])
def test_cube_faces_seen_by_each_v12_camera(builder):
    cube = builder()
    half = float(cube.vertices.abs().max())
    result = render_views(cube, zero123plus_cameras(), size=SIZE)
    assert result.images.shape == (6, 3, SIZE, SIZE)
    for view, (az, el) in enumerate(zip(V12_AZIMUTHS, V12_ELEVATIONS)):
        tile = result.images[view]
        for normal, colour in CUBE_FACE_COLORS.items():
            n = torch.tensor(normal, dtype=torch.float64)
            centre = n * half
            uv, _, eye = pinhole(centre[None], az, el, V12_DISTANCE)
            colour = torch.tensor(colour)
            matches = ((tile - colour[:, None, None]).abs().max(0).values < 0.02)
            if float(n @ (eye - centre)) > 1e-6:  # the camera is in front of this face
                col, row = int(uv[0, 0]), int(uv[0, 1])
                assert torch.allclose(tile[:, row, col], colour, atol=0.02), (view, normal)
                # Its area in pixels follows the foreshortening of the face.
                cos = float(n @ (eye - centre) / (eye - centre).norm())
                assert matches.sum() > 0.1 * cos * (2 * half * 597.1 / V12_DISTANCE) ** 2 * 0.5
            else:
                assert int(matches.sum()) == 0, (view, normal)
        assert torch.all(tile[:, 0, 0] == 1.0) and torch.all(tile[:, -1, -1] == 1.0)


def test_point_projects_to_pinhole_pixel():
    torch.manual_seed(0)
    cams = zero123plus_cameras()
    points = torch.rand(2, 3) * 0.5 - 0.25
    for view, (az, el) in enumerate(zip(V12_AZIMUTHS, V12_ELEVATIONS)):
        for p in points:
            uv, depth, eye = pinhole(p[None], az, el, V12_DISTANCE)
            # A small square marker centred at p facing the camera; its coverage centroid (1/4 px
            # samples) must land within 0.15 px of the pinhole projection of p.
            to_cam = (eye - p.double()) / (eye - p.double()).norm()
            side = torch.linalg.cross(to_cam, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
            side = side / side.norm()
            up = torch.linalg.cross(to_cam, side)
            s = 0.03
            corners = torch.stack([p - s * side - s * up, p + s * side - s * up,
                                   p + s * side + s * up, p - s * side + s * up]).float()
            marker = Mesh(corners, torch.tensor([[0, 1, 2], [0, 2, 3]]))
            out = render_views(marker, cams[view], size=SIZE, supersample=4)
            a = out.alpha[0, 0].double()
            rows, cols = torch.meshgrid(torch.arange(SIZE) + 0.5, torch.arange(SIZE) + 0.5, indexing="ij")
            centroid = torch.stack([(a * cols).sum() / a.sum(), (a * rows).sum() / a.sum()])
            assert torch.allclose(centroid, uv[0], atol=0.15), (view, centroid, uv[0])
            assert abs(float(out.depth[0, 0, int(uv[0, 1]), int(uv[0, 0])]) - float(depth[0])) < 5e-3


def test_perspective_correct_interpolation_and_depth():
    # A large quad, strongly tilted to the camera: interpolated world positions must lie exactly
    # where each pixel's ray meets the quad's plane (affine interpolation would be off by ~1e-2).
    verts = torch.tensor([[-0.9, -0.6, -0.3], [0.5, -0.6, 0.4], [0.5, 0.6, 0.4], [-0.9, 0.6, -0.3]])
    quad = Mesh(verts, torch.tensor([[0, 1, 2], [0, 2, 3]]))
    cams = orbit_cameras([0.0], [0.0], V12_DISTANCE)
    near, far = 0.5, 5.0
    clip = torch.einsum("nij,vj->nvi", cams.full_projection(near, far), torch.cat([verts, torch.ones(4, 1)], -1))
    frags = rasterize(clip, quad.faces, SIZE, SIZE)
    pos = interpolate(quad.vertices, quad.faces, frags)[0].double()
    mask = frags.mask[0]
    assert mask.sum() > 5000
    rows, cols = torch.meshgrid(torch.arange(SIZE, dtype=torch.float64) + 0.5,
                                torch.arange(SIZE, dtype=torch.float64) + 0.5, indexing="ij")
    eye, dirs = camera_ray(cols, rows, 0.0, 0.0, V12_DISTANCE)
    v = verts.double()
    normal = torch.linalg.cross(v[1] - v[0], v[3] - v[0])
    t = ((v[0] - eye) @ normal) / (dirs @ normal)
    hit = eye + t[..., None] * dirs
    assert (pos - hit)[mask].abs().max() < 2e-4
    # Depth is the distance along the viewing axis (here the world -x axis from the camera).
    assert (frags.depth[0].double() - (eye[0] - hit[..., 0]))[mask].abs().max() < 2e-4


# -- rasteriser -------------------------------------------------------------------------------

def _fan_with_rim(n=48, radius=0.8, rim=0.04):
    """A disc fanned from its centre (large triangles) with a rim of small triangles sharing the
    fan's outer edges, in NDC (z = 0, w = 1)."""
    angles = torch.arange(n, dtype=torch.float64) * (2 * math.pi / n)
    inner = torch.stack([radius * angles.cos(), radius * angles.sin()], -1)
    outer = torch.stack([(radius + rim) * (angles + math.pi / n).cos(),
                         (radius + rim) * (angles + math.pi / n).sin()], -1)
    xy = torch.cat([torch.zeros(1, 2, dtype=torch.float64), inner, outer])
    i = torch.arange(n)
    j = (i + 1) % n
    fan = torch.stack([torch.zeros_like(i), 1 + i, 1 + j], -1)
    rim_faces = torch.stack([1 + i, 1 + n + i, 1 + j], -1)  # clockwise: both windings must work
    clip = torch.cat([xy, torch.zeros(len(xy), 1, dtype=torch.float64), torch.ones(len(xy), 1, dtype=torch.float64)], -1)
    return clip.float()[None], torch.cat([fan, rim_faces]), xy, n


def _inside(px, py, tri, margin):
    """Pixel centres at least ``margin`` inside triangle ``tri`` (3, 2), either winding."""
    a, b, c = tri
    sign = 1.0 if float((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])) > 0 else -1.0
    ok = torch.ones_like(px, dtype=torch.bool)
    for p, q in ((a, b), (b, c), (c, a)):
        dist = sign * ((q[0] - p[0]) * (py - p[1]) - (q[1] - p[1]) * (px - p[0])) / (q - p).norm()
        ok &= dist > margin
    return ok


def test_rasterize_is_watertight_across_shared_edges():
    clip, faces, xy, n = _fan_with_rim()
    frags = rasterize(clip, faces, 200, 200)
    rows, cols = torch.meshgrid(torch.arange(200, dtype=torch.float64) + 0.5,
                                torch.arange(200, dtype=torch.float64) + 0.5, indexing="ij")
    px, py = cols / 100.0 - 1.0, 1.0 - rows / 100.0
    margin = 0.1 / 100.0  # a tenth of a pixel, in NDC
    inside = torch.zeros_like(px, dtype=torch.bool)
    near = torch.zeros_like(px, dtype=torch.bool)
    for tri in xy[faces]:
        inside |= _inside(px, py, tri, margin)
        near |= _inside(px, py, tri, -margin)
    assert int(inside.sum()) > 20000
    covered = frags.mask[0]
    assert bool(covered[inside].all())  # no cracks, neither between large nor large/small triangles
    assert not bool(covered[~near].any())  # nothing outside the triangles
    assert int((frags.pix_to_face[0] >= n).sum()) > 100  # the small rim triangles are drawn


def test_rasterize_chunking_does_not_change_the_result():
    sphere = uv_sphere(12, 24)
    cams = zero123plus_cameras()
    clip = torch.einsum("nij,vj->nvi", cams.full_projection(0.5, 4.0),
                        torch.cat([sphere.vertices, torch.ones(sphere.num_vertices, 1)], -1))
    full = rasterize(clip, sphere.faces, 64, 64)
    chunked = rasterize(clip, sphere.faces, 64, 64, max_pairs=500)
    assert torch.equal(full.pix_to_face, chunked.pix_to_face)
    assert torch.equal(full.bary, chunked.bary)


def test_rasterize_uv_space_both_windings_and_culling():
    # Texture-baking use: clip = (2u - 1, 2v - 1, 0, 1). One triangle CCW, one CW in uv.
    uv = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    clip = torch.cat([uv * 2 - 1, torch.zeros(4, 1), torch.ones(4, 1)], -1)[None]
    faces = torch.tensor([[0, 1, 2], [0, 3, 2]])  # first CCW, second CW
    frags = rasterize(clip, faces, 16, 16)
    assert bool(frags.mask.all())
    assert torch.allclose(frags.bary.sum(-1), torch.ones(1, 16, 16))
    assert set(frags.pix_to_face.unique().tolist()) == {0, 1}
    culled = rasterize(clip, faces, 16, 16, cull_backfaces=True)
    assert set(culled.pix_to_face.unique().tolist()) == {-1, 0}
    # Interpolated uv reproduces each texel centre; row 0 is the top (v = 1).
    texel = interpolate(uv, faces, frags)[0]
    assert torch.allclose(texel[0, 0], torch.tensor([0.5 / 16, 1 - 0.5 / 16]), atol=1e-6)
    assert torch.allclose(texel[15, 3], torch.tensor([3.5 / 16, 0.5 / 16]), atol=1e-6)


def test_rasterize_keeps_the_nearest_triangle_in_either_order():
    quad = lambda z: torch.tensor([[-0.5, -0.5, z, 1.0], [0.5, -0.5, z, 1.0], [0.5, 0.5, z, 1.0], [-0.5, 0.5, z, 1.0]])  # noqa: E731
    faces = torch.tensor([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]])
    for near_first in (True, False):
        z = (-0.2, 0.3) if near_first else (0.3, -0.2)
        clip = torch.cat([quad(z[0]), quad(z[1])])[None]
        frags = rasterize(clip, faces, 32, 32)
        expected = {0, 1} if near_first else {2, 3}
        assert set(frags.pix_to_face[0, 8:24, 8:24].unique().tolist()) == expected
        assert int((frags.pix_to_face == -1).sum()) == 32 * 32 - 16 * 16


def test_rasterize_drops_triangles_behind_the_camera_and_validates_inputs():
    clip = torch.tensor([[[-0.5, -0.5, 0.0, -1.0], [0.5, -0.5, 0.0, 1.0], [0.0, 0.5, 0.0, 1.0]]])
    assert not rasterize(clip, torch.tensor([[0, 1, 2]]), 8, 8).mask.any()
    with pytest.raises(InputError, match="clip_vertices"):
        rasterize(torch.zeros(3, 4), torch.tensor([[0, 1, 2]]), 8, 8)
    with pytest.raises(InputError, match="face indices"):
        rasterize(clip, torch.tensor([[0, 1, 5]]), 8, 8)
    with pytest.raises(InputError, match="height"):
        rasterize(clip, torch.tensor([[0, 1, 2]]), 0, 8)
    with pytest.raises(InputError, match="faces"):
        rasterize(clip, torch.tensor([[0.0, 1.0, 2.0]]), 8, 8)


# -- renderer ---------------------------------------------------------------------------------

def test_render_result_grid_and_defaults():
    cube = colored_cube()
    result = render_views(cube, size=32)
    assert isinstance(result, MultiViewRender)
    assert result.images.shape == (6, 3, 32, 32) and result.alpha.shape == (6, 1, 32, 32)
    assert result.depth.shape == (6, 1, 32, 32) and result.normals.shape == (6, 3, 32, 32)
    assert torch.allclose(result.cameras.azimuth_deg, torch.tensor(V12_AZIMUTHS))
    grid = result.grid()
    assert grid.shape == (3, 96, 64)
    for i in range(6):
        r, c = divmod(i, 2)
        assert torch.equal(grid[:, r * 32:(r + 1) * 32, c * 32:(c + 1) * 32], result.images[i])
    assert result.grid_image().size == (64, 96)
    image = render_grid(cube)
    assert image.size == (640, 960) and image.mode == "RGB"
    with pytest.raises(InputError, match="6 views"):
        render_views(cube, zero123plus_cameras()[:2], size=8).grid()


def test_depth_normals_alpha_and_background():
    cube = colored_cube()
    half = float(cube.vertices.abs().max())
    cams = orbit_cameras([0.0], [0.0], V12_DISTANCE)
    out = render_views(cube, cams, size=64, background=(0.1, 0.2, 0.3))
    assert torch.allclose(out.images[0, :, 0, 0], torch.tensor([0.1, 0.2, 0.3]))
    assert out.alpha[0, 0, 0, 0] == 0 and out.depth[0, 0, 0, 0] == 0
    assert torch.allclose(out.images[0, :, 32, 32], torch.tensor([1.0, 0.0, 0.0]))  # front face: red
    assert abs(float(out.depth[0, 0, 32, 32]) - (V12_DISTANCE - half)) < 1e-3
    assert torch.allclose(out.normals[0, :, 32, 32], torch.tensor([1.0, 0.0, 0.0]), atol=1e-5)
    assert set(out.alpha.unique().tolist()) == {0.0, 1.0}


def test_supersampling_antialiases_edges():
    cube = colored_cube()
    cams = zero123plus_cameras()[0]
    hard = render_views(cube, cams, size=64)
    soft = render_views(cube, cams, size=64, supersample=3)
    fractional = ((soft.alpha > 0) & (soft.alpha < 1)).sum()
    assert fractional > 50
    assert abs(float(soft.alpha.mean() - hard.alpha.mean())) < 0.01
    assert float(soft.images.min()) >= 0 and float(soft.images.max()) <= 1


def test_automatic_backface_culling_never_changes_the_image():
    sphere = uv_sphere(16, 32)
    cams = zero123plus_cameras()
    full = render_views(sphere, cams, size=64, cull_backfaces=False)
    auto = render_views(sphere, cams, size=64)  # closed and outward: culled, same image
    assert torch.equal(full.images, auto.images) and torch.equal(full.depth, auto.depth)
    # An open mesh (the lower half of the sphere) must not be culled: its inside is visible.
    lower = sphere.faces[sphere.vertices[sphere.faces].mean(1)[:, 2] < 0]
    bowl = Mesh(sphere.vertices, lower, vertex_colors=sphere.vertex_colors)
    full = render_views(bowl, cams, size=64, cull_backfaces=False)
    auto = render_views(bowl, cams, size=64)
    forced = render_views(bowl, cams, size=64, cull_backfaces=True)
    assert torch.equal(full.images, auto.images)
    assert float(full.alpha.sum()) > float(forced.alpha.sum()) + 100


def test_lambertian_shading_and_untextured_grey():
    cube = colored_cube()
    plain = Mesh(cube.vertices, cube.faces)
    # Camera at azimuth 0, elevation 30: the front face (+x) is lit more directly than the top.
    cams = orbit_cameras([0.0], [30.0], V12_DISTANCE)
    out = render_views(plain, cams, size=64, shading="lambertian")
    unlit = render_views(plain, cams, size=64)
    uv_front, _, _ = pinhole(torch.tensor([[0.29, 0.0, 0.0]]), 0.0, 30.0, V12_DISTANCE, size=64)
    uv_top, _, _ = pinhole(torch.tensor([[0.0, 0.0, 0.29]]), 0.0, 30.0, V12_DISTANCE, size=64)
    front = out.images[0, :, int(uv_front[0, 1]), int(uv_front[0, 0])]
    top = out.images[0, :, int(uv_top[0, 1]), int(uv_top[0, 0])]
    assert torch.allclose(unlit.images[0, :, int(uv_top[0, 1]), int(uv_top[0, 0])], torch.full((3,), NEUTRAL_GREY))
    assert float(front[0]) > float(top[0]) + 0.1
    assert float(front.max()) <= NEUTRAL_GREY + 1e-6


def test_texture_orientation_on_a_quad():
    quad = textured_quad()
    out = render_views(quad, orbit_cameras([0.0], [0.0], V12_DISTANCE), size=64)
    img = out.images[0]
    # Seen from the front, u runs left to right and v bottom to top: the texture looks upright.
    expect = {(20, 20): (1.0, 0.0, 0.0), (20, 44): (0.0, 1.0, 0.0), (44, 20): (0.0, 0.0, 1.0),
              (44, 44): (1.0, 1.0, 1.0)}
    for (row, col), colour in expect.items():
        assert torch.allclose(img[:, row, col], torch.tensor(colour), atol=1e-4), (row, col)


def test_render_views_rejects_bad_arguments():
    cube = colored_cube()
    with pytest.raises(InputError, match="shading"):
        render_views(cube, shading="phong")
    with pytest.raises(InputError, match="size"):
        render_views(cube, size=0)
    with pytest.raises(InputError, match="supersample"):
        render_views(cube, supersample=0)
    with pytest.raises(InputError, match="background"):
        render_views(cube, background=(1.0, 0.0))
    with pytest.raises(InputError, match="backend"):
        render_views(cube, backend="opengl")
    with pytest.raises(InputError, match="Mesh"):
        render_views("cube.glb")
    bad = Mesh(cube.vertices.clone(), cube.faces)
    bad.vertices[0, 0] = float("nan")
    with pytest.raises(MeshError, match="NaN"):
        render_views(bad)
    if "pytorch3d" not in available_backends():
        with pytest.raises(InputError, match="pytorch3d"):
            render_views(cube, backend="pytorch3d")


def test_torch_backend_is_the_default_even_when_pytorch3d_imports(monkeypatch):
    """pytorch3d is opt-in: neither the default nor "auto" switches to it because it imports."""
    import inspect
    import sys
    import types

    from sharpit.render import DEFAULT_BACKEND, renderer
    from sharpit.render.rasterizer import rasterize as torch_rasterize

    assert DEFAULT_BACKEND == "torch"
    assert inspect.signature(render_views).parameters["backend"].default == "torch"

    def never(*args, **kwargs):
        raise AssertionError("the pytorch3d backend must not be used unless asked for")

    fake = types.ModuleType("sharpit.render.pytorch3d_backend")
    fake.rasterize_pytorch3d = never
    monkeypatch.setitem(sys.modules, "sharpit.render.pytorch3d_backend", fake)
    monkeypatch.setattr(renderer, "_pytorch3d_importable", lambda: True)
    assert renderer._rasterizer("torch") is torch_rasterize
    assert renderer._rasterizer("auto") is torch_rasterize
    assert renderer._rasterizer("pytorch3d") is never          # still available on request
    cube = colored_cube()
    default = render_views(cube, size=32)
    auto = render_views(cube, size=32, backend="auto")
    assert torch.equal(default.images, auto.images) and float(default.alpha.max()) == 1.0
    with pytest.raises(AssertionError, match="asked for"):
        render_views(cube, size=32, backend="pytorch3d")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    sphere = uv_sphere(24, 48)
    cpu = render_views(sphere, size=96, backend="torch")
    gpu = render_views(sphere.to("cuda"), size=96, backend="torch")
    assert torch.equal(cpu.alpha, gpu.alpha.cpu())
    assert (cpu.images - gpu.images.cpu()).abs().max() < 1e-4


@pytest.mark.skipif("pytorch3d" not in available_backends(), reason="pytorch3d is not installed")
def test_pytorch3d_backend_matches_torch_backend():
    sphere = uv_sphere(24, 48)
    a = render_views(sphere, size=96, backend="torch")
    b = render_views(sphere, size=96, backend="pytorch3d")
    assert (a.alpha != b.alpha).float().mean() < 0.002
    both = (a.alpha * b.alpha).bool().expand_as(a.images)
    assert (a.images - b.images).abs()[both].mean() < 1e-3
    assert (a.depth - b.depth).abs()[both[:, :1]].max() < 1e-3


def test_fragments_mask_property():
    frags = Fragments(torch.tensor([[[-1, 0]]]), torch.zeros(1, 1, 2, 3), torch.zeros(1, 1, 2))
    assert frags.mask.tolist() == [[[False, True]]]
