"""The differentiable texture render (sharpit.render.differentiable): same images as the fast
path, exact gradients with respect to the texture, clear errors."""

import pytest
import torch

from sharpit.cameras import orbit_cameras
from sharpit.errors import InputError, MeshError
from sharpit.reconstruct.texture import bake_texture
from sharpit.render import rasterize_texture_coords, render_texture, render_views
from sharpit.testing.meshes import colored_cube, textured_cube, textured_quad, uv_sphere


@pytest.mark.parametrize("supersample", [1, 2])
@pytest.mark.parametrize("which", ["cube", "sphere_pairs"])
def test_images_equal_the_fast_unlit_render(which, supersample):
    mesh = textured_cube() if which == "cube" else bake_texture(uv_sphere(8, 16), texture_size=64, face_budget=None)
    fast = render_views(mesh, size=48, supersample=supersample, background=0.25)
    frags = rasterize_texture_coords(mesh, size=48, supersample=supersample)
    images = render_texture(frags, mesh.texture, background=0.25)
    assert images.shape == (6, 3, 48, 48)
    torch.testing.assert_close(images, fast.images, rtol=0, atol=1e-6)
    torch.testing.assert_close(frags.coverage, fast.alpha, rtol=0, atol=0)


def test_gradcheck_texture_float64():
    mesh = textured_quad()
    cams = orbit_cameras([0.0, 25.0], [0.0, 10.0], 1.9)
    frags = rasterize_texture_coords(mesh, cams, size=6, supersample=2)
    texture = torch.rand(4, 5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: render_texture(frags, t, background=(0.1, 0.2, 0.3)), (texture,))


def test_gradient_reaches_only_texels_that_are_seen():
    mesh = textured_quad()
    cams = orbit_cameras([0.0], [0.0], 1.9)
    frags = rasterize_texture_coords(mesh, cams, size=16)
    texture = torch.full((32, 32, 3), 0.5, requires_grad=True)
    render_texture(frags, texture).sum().backward()
    grad = texture.grad.abs().sum(-1)
    assert float(grad.sum()) == pytest.approx(3 * frags.pix.numel(), rel=1e-5)   # bilinear weights sum to 1
    assert bool((grad > 0).any()) and bool((grad == 0).any())


def test_no_uvs_and_bad_texture_raise_sharpit_errors():
    with pytest.raises(MeshError, match="no UV"):
        rasterize_texture_coords(colored_cube(), size=8)
    frags = rasterize_texture_coords(textured_cube(), size=8)
    with pytest.raises(InputError, match=r"\(H, W, 3\)"):
        render_texture(frags, torch.rand(8, 8))
    with pytest.raises(InputError, match=r"\(H, W, 3\)"):
        render_texture(frags, torch.zeros(8, 8, 3, dtype=torch.int64))
