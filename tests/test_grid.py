"""The 3x2 grid layout, input coercion and compositing."""

import numpy as np
import pytest
import torch
from PIL import Image

from sharpit import grid as G
from sharpit.errors import InputError


def _numbered_views(c=3, size=8):
    return torch.stack([torch.full((c, size, size), i / 10.0) for i in range(6)])


def test_views_to_grid_layout_is_row_major():
    views = _numbered_views()
    grid = G.views_to_grid(views)
    assert grid.shape == (3, 24, 16)
    for i in range(6):
        r, c = i // 2, i % 2
        tile = grid[:, r * 8:(r + 1) * 8, c * 8:(c + 1) * 8]
        assert torch.all(tile == i / 10.0)


def test_grid_round_trip_tensor_batched_and_pil():
    views = torch.rand(2, 6, 4, 5, 5)
    assert torch.equal(G.grid_to_views(G.views_to_grid(views)), views)
    pil_views = [Image.new("RGB", (320, 320), (i * 40, 0, 0)) for i in range(6)]
    grid = G.views_to_grid(pil_views)
    assert grid.size == (640, 960)
    back = G.grid_to_views(grid)
    assert [v.getpixel((5, 5))[0] for v in back] == [i * 40 for i in range(6)]


def test_full_size_grid_shape():
    views = torch.rand(6, 3, 320, 320)
    assert G.views_to_grid(views).shape == (3, 960, 640)


def test_composite_rgba():
    rgba = torch.zeros(4, 2, 2)
    rgba[0] = 1.0  # red
    rgba[3, 0, 0] = 1.0  # one opaque pixel
    rgba[3, 1, 1] = 0.5
    out = G.composite_rgba(rgba, 1.0)
    assert out.shape == (3, 2, 2)
    assert out[:, 0, 0].tolist() == [1.0, 0.0, 0.0]
    assert out[:, 0, 1].tolist() == [1.0, 1.0, 1.0]
    assert torch.allclose(out[:, 1, 1], torch.tensor([1.0, 0.5, 0.5]))
    grey = G.composite_rgba(rgba, 0.5)
    assert torch.allclose(grey[:, 0, 1], torch.tensor([0.5, 0.5, 0.5]))
    pil = G.composite_rgba(Image.new("RGBA", (4, 4), (0, 0, 255, 0)))
    assert pil.mode == "RGB" and pil.getpixel((0, 0)) == (255, 255, 255)


def test_as_grid_tensor_accepts_pil_numpy_tensor():
    img = Image.new("RGB", (640, 960), (255, 0, 0))
    t = G.as_grid_tensor(img)
    assert t.shape == (1, 3, 960, 640) and float(t[0, 0].min()) == 1.0
    arr = np.zeros((960, 640, 3), dtype=np.uint8)
    assert G.as_grid_tensor(arr).shape == (1, 3, 960, 640)
    assert G.as_grid_tensor(torch.rand(2, 3, 960, 640)).shape == (2, 3, 960, 640)


def test_as_grid_tensor_resizes_3_by_2_with_warning_and_rejects_others():
    with pytest.warns(UserWarning, match="resizing"):
        t = G.as_grid_tensor(torch.rand(3, 480, 320))
    assert t.shape == (1, 3, 960, 640)
    with pytest.raises(InputError, match="3:2"):
        G.as_grid_tensor(torch.rand(3, 640, 640))


@pytest.mark.parametrize("bad, match", [
    (torch.full((3, 960, 640), float("nan")), "NaN"),
    (torch.rand(5, 960, 640), "channels"),
    (torch.rand(3, 960, 640) * 3, r"\[0, 1\]"),
    ("grid.png", "PIL image"),
])
def test_as_grid_tensor_bad_input(bad, match):
    with pytest.raises(InputError, match=match):
        G.as_grid_tensor(bad)


def test_as_views_tensor_from_grid_list_and_tensor():
    views = torch.rand(6, 3, 320, 320)
    from_grid = G.as_views_tensor(G.views_to_grid(views))
    assert torch.allclose(from_grid[0], views)
    from_list = G.as_views_tensor([G.tensor_to_pil(v) for v in views])
    assert from_list.shape == (1, 6, 3, 320, 320)
    with pytest.warns(UserWarning):
        assert G.as_views_tensor(torch.rand(6, 4, 64, 64)).shape == (1, 6, 3, 320, 320)
    with pytest.raises(InputError, match="6 views"):
        G.as_views_tensor([G.tensor_to_pil(v) for v in views[:4]])


def test_batch_of_six_grids_is_grids_not_views():
    grids = torch.rand(6, 3, 960, 640)
    views = G.as_views_tensor(grids)
    assert views.shape == (6, 6, 3, 320, 320)
    for b in range(6):
        assert torch.equal(G.views_to_grid(views[b]), grids[b])
    assert G.as_grid_tensor(grids).shape == (6, 3, 960, 640)


def test_square_4d_tensor_is_one_set_of_six_views():
    views = torch.rand(6, 3, 320, 320)
    out = G.as_views_tensor(views)
    assert out.shape == (1, 6, 3, 320, 320) and torch.equal(out[0], views)


def test_single_grid_in_a_batch_of_one():
    grid = torch.rand(1, 3, 960, 640)
    out = G.as_views_tensor(grid)
    assert out.shape == (1, 6, 3, 320, 320)
    assert torch.equal(G.views_to_grid(out[0]), grid[0])
    with pytest.warns(UserWarning, match="resizing grid"):   # other 3:2 sizes are grids too
        assert G.as_views_tensor(torch.rand(2, 3, 96, 64)).shape == (2, 6, 3, 320, 320)


def test_list_of_six_is_always_views():
    with pytest.raises(InputError, match="square"):
        G.as_views_tensor([torch.rand(3, 960, 640) for _ in range(6)])
    with pytest.raises(InputError, match="same size"):
        G.as_views_tensor([torch.rand(3, 32, 32)] * 5 + [torch.rand(3, 16, 16)])


@pytest.mark.parametrize("shape", [
    (6, 3, 320, 300),      # neither square nor 3:2
    (6, 3, 640, 960),      # a grid on its side
    (2, 3, 320, 320),      # square but not six views
    (1, 3, 320, 320),
    (2, 5, 3, 32, 32),     # five views
    (2, 6, 3, 48, 32),     # non-square views
    (1, 1, 6, 3, 32, 32),  # 6-D
])
def test_as_views_tensor_bad_shapes_name_both_accepted_shapes(shape):
    with pytest.raises(InputError) as info:
        G.as_views_tensor(torch.rand(shape))
    msg = str(info.value)
    if shape[1:2] != (5,):
        assert "(6, C, s, s)" in msg and "(B, C, 3s, 2s)" in msg, msg
    assert str(shape[-2]) in msg


def test_as_grid_tensor_hints_at_views_for_square_images():
    with pytest.raises(InputError, match="views_to_grid"):
        G.as_grid_tensor(torch.rand(6, 3, 320, 320))
