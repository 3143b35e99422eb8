"""The Blender target renderer (Cycles through ``bpy``): vertex colours reach the image and
curved surfaces are smooth-shaded. Skipped where ``bpy`` (the optional ``blender`` extra, ~370 MB,
Python 3.11) is not installed."""

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("bpy")

from sharpit.grid import GRID_COLS, GRID_ROWS  # noqa: E402
from sharpit.mesh import Mesh  # noqa: E402
from sharpit.testing.meshes import uv_sphere  # noqa: E402
from training.renderers import BlenderTargetRenderer, SharpItTargetRenderer  # noqa: E402

TILE = 64
SAMPLES = 16
RED, BLUE = torch.tensor([0.9, 0.1, 0.1]), torch.tensor([0.1, 0.1, 0.9])
#: 99th percentile of |second difference| of luminance inside one-colour regions. Measured at 64 px,
#: 16 samples, "studio" lighting (Blender 5.0): smooth shading 0.012-0.016, flat shading 0.054-0.058.
FACET_LIMIT = 0.03


def _views(grid: torch.Tensor) -> torch.Tensor:
    """(3, 3t, 2t) grid -> (6, 3, t, t) views, row-major."""
    t = grid.shape[-1] // GRID_COLS
    return grid.reshape(3, GRID_ROWS, t, GRID_COLS, t).permute(1, 3, 0, 2, 4).reshape(-1, 3, t, t)


def _erode(mask: torch.Tensor, px: int = 2) -> torch.Tensor:
    return -F.max_pool2d(-F.pad(mask.float(), (px,) * 4), 2 * px + 1, 1) > 0.5


def _colour_masks(views: torch.Tensor, margin: float):
    red = views[:, 0] - views[:, 2] > margin
    blue = views[:, 2] - views[:, 0] > margin
    return red, blue


def facet_steps(views: torch.Tensor) -> float:
    """How faceted the shading looks: flat-shaded faces are constant, so luminance jumps at their
    edges and its second difference spikes; smooth shading varies gently. Only pixel triples
    well inside one colour region count (silhouettes and the red/blue border are excluded)."""
    lum = views.mean(1)
    red, blue = _colour_masks(views, 0.2)
    inside = (_erode(red[:, None]) | _erode(blue[:, None]))[:, 0].float()
    steps = []
    for dim in (1, 2):
        n = lum.shape[dim]
        d1 = lum.narrow(dim, 1, n - 1) - lum.narrow(dim, 0, n - 1)
        d2 = (d1.narrow(dim, 1, n - 2) - d1.narrow(dim, 0, n - 2)).abs()
        keep = inside.narrow(dim, 0, n - 2) * inside.narrow(dim, 1, n - 2) * inside.narrow(dim, 2, n - 2)
        steps.append(float(d2[keep > 0].quantile(0.99)))
    return max(steps)


@pytest.fixture(scope="module")
def sphere() -> Mesh:
    """A coarse sphere (22.5 degree facets, where flat shading shows), red where x > 0 (the front,
    facing azimuth 0), blue behind."""
    ball = uv_sphere(8, 16)
    colours = torch.where((ball.vertices[:, 0] > 0)[:, None], RED, BLUE)
    return Mesh(ball.vertices, ball.faces, vertex_colors=colours)


@pytest.fixture(scope="module")
def blender_views(sphere) -> torch.Tensor:
    grid = BlenderTargetRenderer(("studio",), samples=SAMPLES)(sphere, TILE, "sphere")
    assert grid.shape == (3, GRID_ROWS * TILE, GRID_COLS * TILE)
    return _views(grid)


def test_vertex_colours_come_through_where_the_faces_are(sphere, blender_views):
    reference = _views(SharpItTargetRenderer("unlit", supersample=1)(sphere, TILE, "sphere"))
    ref_red, ref_blue = _colour_masks(reference, 0.5)
    red, blue = _colour_masks(blender_views, 0.2)
    assert ref_red.sum() > 1000 and ref_blue.sum() > 1000   # both halves in view
    assert (red & ref_red).sum() / ref_red.sum() > 0.95
    assert (blue & ref_blue).sum() / ref_blue.sum() > 0.95
    empty = _erode((reference.min(1).values > 0.999)[:, None])[:, 0]   # well outside the silhouette
    assert empty.any() and float(blender_views.permute(0, 2, 3, 1)[empty].min()) > 0.99   # white background


def test_shading_is_smooth(blender_views):
    assert facet_steps(blender_views) < FACET_LIMIT


def test_the_smoothness_check_sees_flat_shading(sphere, monkeypatch):
    """Negative control: the same sphere flat-shaded fails :func:`facet_steps`."""
    build = BlenderTargetRenderer._blender_mesh

    def flat(bpy, mesh):
        data = build(bpy, mesh)
        data.shade_flat()
        return data

    monkeypatch.setattr(BlenderTargetRenderer, "_blender_mesh", staticmethod(flat))
    views = _views(BlenderTargetRenderer(("studio",), samples=SAMPLES)(sphere, TILE, "sphere"))
    assert facet_steps(views) > FACET_LIMIT
