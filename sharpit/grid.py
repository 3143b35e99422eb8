"""The Zero123++ 3x2 multi-view grid: tiling, untiling, input coercion and compositing.

Layout: six square tiles of ``VIEW_SIZE`` (320) pixels, 3 rows x 2 columns, row-major, so
view ``i`` sits at row ``i // 2`` and column ``i % 2``. The grid image is 640 wide and 960 high.
Tensors are channels-first with values in [0, 1] unless a docstring says otherwise.

Which tensors are grids and which are views (:func:`as_views_tensor`, :func:`as_grid_tensor`):

- ``(C, H, W)`` is one grid and ``(B, 6, C, s, s)`` is B sets of six views.
- A 4-D ``(N, C, H, W)`` tensor is decided by its image shape alone, never by ``N``:
  ``H:W = 3:2`` (3 rows x 2 columns of square tiles, e.g. 960x640) is a batch of ``N`` grids,
  whatever ``N`` is (``(6, 3, 960, 640)`` is six grids); square ``H == W`` is one set of six
  views and needs ``N == 6`` (``(6, 3, 320, 320)``). Any other shape is an
  :class:`~sharpit.errors.InputError` naming both accepted shapes.
- A list or tuple is always six views, one image each (square, all the same size).
"""

from __future__ import annotations

from typing import List, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .cameras import VIEW_SIZE
from .errors import InputError
from .warn import warn

__all__ = [
    "GRID_ROWS",
    "GRID_COLS",
    "NUM_VIEWS",
    "GRID_HEIGHT",
    "GRID_WIDTH",
    "views_to_grid",
    "grid_to_views",
    "composite_rgba",
    "as_grid_tensor",
    "as_views_tensor",
    "pil_to_tensor",
    "tensor_to_pil",
]

GRID_ROWS = 3
GRID_COLS = 2
NUM_VIEWS = GRID_ROWS * GRID_COLS
GRID_HEIGHT = GRID_ROWS * VIEW_SIZE  # 960
GRID_WIDTH = GRID_COLS * VIEW_SIZE  # 640

ImageLike = Union[Image.Image, np.ndarray, torch.Tensor]


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL image -> (C, H, W) float32 in [0, 1]. Palette/grey images become RGB; RGBA keeps alpha."""
    if image.mode not in ("RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.getbands() or "transparency" in image.info else "RGB")
    arr = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def tensor_to_pil(image: torch.Tensor) -> Image.Image:
    """(C, H, W) tensor in [0, 1] with C in {1, 3, 4} -> PIL image (values clamped, rounded)."""
    if image.ndim != 3 or image.shape[0] not in (1, 3, 4):
        raise InputError(f"expected a (C, H, W) tensor with 1, 3 or 4 channels, got {tuple(image.shape)}")
    arr = (image.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8).cpu()
    arr = arr.permute(1, 2, 0).numpy()
    if arr.shape[-1] == 1:
        return Image.fromarray(arr[..., 0], mode="L")
    return Image.fromarray(arr)


def views_to_grid(views):
    """Tile six views into the 3x2 grid.

    Args:
        views: a (6, C, h, w) or (B, 6, C, h, w) tensor, or a sequence of six PIL images of one size.
    Returns:
        (C, 3h, 2w) or (B, C, 3h, 2w) tensor, or a PIL image (2w wide, 3h high).
    """
    if isinstance(views, torch.Tensor):
        if views.ndim not in (4, 5) or views.shape[-4] != NUM_VIEWS:
            raise InputError(f"expected views of shape (6, C, h, w) or (B, 6, C, h, w), got {tuple(views.shape)}")
        c, h, w = views.shape[-3:]
        lead = views.shape[:-4]
        v = views.reshape(*lead, GRID_ROWS, GRID_COLS, c, h, w)
        v = v.movedim(-3, -5)  # (..., C, rows, cols, h, w)
        v = v.movedim(-2, -3)  # (..., C, rows, h, cols, w)
        return v.reshape(*lead, c, GRID_ROWS * h, GRID_COLS * w)
    views = list(views)
    if len(views) != NUM_VIEWS or not all(isinstance(v, Image.Image) for v in views):
        raise InputError("expected six PIL images or a tensor of six views")
    size = views[0].size
    if any(v.size != size for v in views):
        raise InputError(f"all six views must have the same size, got {[v.size for v in views]}")
    w, h = size
    grid = Image.new(views[0].mode, (GRID_COLS * w, GRID_ROWS * h))
    for i, v in enumerate(views):
        grid.paste(v, ((i % GRID_COLS) * w, (i // GRID_COLS) * h))
    return grid


def grid_to_views(grid):
    """Split a 3x2 grid back into six views (inverse of :func:`views_to_grid`).

    Args:
        grid: (C, H, W) or (B, C, H, W) tensor with H divisible by 3 and W by 2, or a PIL image.
    Returns:
        (6, C, H/3, W/2) or (B, 6, C, H/3, W/2) tensor, or a list of six PIL images.
    """
    if isinstance(grid, torch.Tensor):
        if grid.ndim not in (3, 4):
            raise InputError(f"expected a grid of shape (C, H, W) or (B, C, H, W), got {tuple(grid.shape)}")
        c, hh, ww = grid.shape[-3:]
        if hh % GRID_ROWS or ww % GRID_COLS:
            raise InputError(f"grid height must divide by 3 and width by 2, got {hh}x{ww}")
        h, w = hh // GRID_ROWS, ww // GRID_COLS
        lead = grid.shape[:-3]
        g = grid.reshape(*lead, c, GRID_ROWS, h, GRID_COLS, w)
        g = g.movedim(-2, -3)  # (..., C, rows, cols, h, w)
        g = g.movedim(-5, -3)  # (..., rows, cols, C, h, w)
        return g.reshape(*lead, NUM_VIEWS, c, h, w)
    if not isinstance(grid, Image.Image):
        raise InputError(f"expected a tensor or PIL image grid, got {type(grid).__name__}")
    ww, hh = grid.size
    if hh % GRID_ROWS or ww % GRID_COLS:
        raise InputError(f"grid height must divide by 3 and width by 2, got {hh}x{ww}")
    h, w = hh // GRID_ROWS, ww // GRID_COLS
    return [grid.crop(((i % GRID_COLS) * w, (i // GRID_COLS) * h,
                       (i % GRID_COLS + 1) * w, (i // GRID_COLS + 1) * h)) for i in range(NUM_VIEWS)]


def composite_rgba(image, background: Union[float, Sequence[float]] = 1.0):
    """Composite straight-alpha RGBA onto a solid background.

    Args:
        image: (..., 4, H, W) tensor in [0, 1], or a PIL image (any mode; non-RGBA is converted).
        background: grey level or RGB triple in [0, 1]; white (1.0) for Sharp-It/InstantMesh.
    Returns:
        (..., 3, H, W) tensor, or an RGB PIL image. Three-channel input is returned unchanged.
    """
    if isinstance(image, Image.Image):
        return tensor_to_pil(composite_rgba(pil_to_tensor(image.convert("RGBA")), background))
    if image.shape[-3] == 3:
        return image
    if image.shape[-3] != 4:
        raise InputError(f"expected 3 or 4 channels, got {image.shape[-3]}")
    bg = torch.as_tensor(background, dtype=image.dtype, device=image.device).flatten()
    if bg.numel() not in (1, 3):
        raise InputError("background must be a grey level or an RGB triple")
    bg = bg.expand(3).view(3, 1, 1)
    rgb, alpha = image[..., :3, :, :], image[..., 3:, :, :]
    return rgb * alpha + bg * (1.0 - alpha)


def _to_tensor(image: ImageLike, background) -> torch.Tensor:
    """Any image-like input -> (B, 3, H, W) float32 in [0, 1] (alpha composited)."""
    if isinstance(image, Image.Image):
        t = pil_to_tensor(image)[None]
    elif isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 2:
            arr = arr[..., None]
        if arr.ndim != 3:
            raise InputError(f"expected an (H, W, C) array, got shape {arr.shape}")
        if arr.dtype == np.uint8:
            arr = arr.astype(np.float32) / 255.0
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).permute(2, 0, 1)[None]
    elif isinstance(image, torch.Tensor):
        t = image
        if t.dtype == torch.uint8:
            t = t.float() / 255.0
        if t.ndim == 3:
            t = t[None]
        if t.ndim != 4:
            raise InputError(f"expected a (C, H, W) or (B, C, H, W) tensor, got {tuple(image.shape)}")
        t = t.float()
    else:
        raise InputError(f"expected a PIL image, numpy array or tensor, got {type(image).__name__}")
    if t.shape[1] == 1:
        t = t.expand(-1, 3, -1, -1)
    if t.shape[1] not in (3, 4):
        raise InputError(f"expected 1, 3 or 4 channels, got {t.shape[1]} (images are channels-first)")
    if not bool(torch.isfinite(t).all()):
        raise InputError("image contains NaN or inf values")
    if float(t.min()) < -1e-3 or float(t.max()) > 1.0 + 1e-3:
        raise InputError(f"image values must lie in [0, 1], got [{float(t.min()):.3g}, {float(t.max()):.3g}]")
    return composite_rgba(t.clamp(0, 1), background)


def as_grid_tensor(grid: ImageLike, background: float = 1.0, size: int = VIEW_SIZE) -> torch.Tensor:
    """Coerce a 3x2 grid (PIL, (H, W, C) array, (C, H, W) or (B, C, H, W) tensor) to a
    (B, 3, 3*size, 2*size) float32 tensor in [0, 1]. A 4-D tensor is always a batch of grids here,
    (6, 3, 960, 640) included.

    A 3:2 grid of another resolution is resized (bilinear, antialiased) with a warning; any other
    aspect ratio is an :class:`~sharpit.errors.InputError`.
    """
    t = _to_tensor(grid, background)
    h, w = t.shape[-2:]
    if h * GRID_COLS != w * GRID_ROWS:
        hint = "; square images are views: tile them with views_to_grid" if h == w else ""
        raise InputError(
            f"a grid must be 3 views high and 2 wide (height:width = 3:2, e.g. 960x640); got {h}x{w}{hint}")
    if (h, w) != (GRID_ROWS * size, GRID_COLS * size):
        warn(f"resizing grid from {h}x{w} to {GRID_ROWS * size}x{GRID_COLS * size}")
        t = F.interpolate(t, size=(GRID_ROWS * size, GRID_COLS * size), mode="bilinear",
                          align_corners=False, antialias=True).clamp(0, 1)
    return t


_ACCEPTED_SHAPES = ("six square views (6, C, s, s) or (B, 6, C, s, s), e.g. (6, 3, 320, 320), or "
                    "grids of 3x2 square tiles (C, 3s, 2s) or (B, C, 3s, 2s), e.g. (B, 3, 960, 640)")


def as_views_tensor(views: Union[ImageLike, List[ImageLike]], background: float = 1.0,
                    size: int = VIEW_SIZE) -> torch.Tensor:
    """Coerce six views to a (B, 6, 3, size, size) float32 tensor in [0, 1].

    Accepts a grid or a batch of grids (see :func:`as_grid_tensor`), a list of six square images,
    or a (6, C, s, s) / (B, 6, C, s, s) tensor of views. A 4-D tensor is a batch of grids when
    its height:width is 3:2 and six views when it is square (see the module docstring), so
    ``(6, 3, 960, 640)`` gives six sets of views. Square views of another size are resized with a
    warning.

    Raises:
        InputError: for any other shape (the message names both accepted shapes), the wrong number
            of views, non-square views, or bad values (see :func:`as_grid_tensor`).
    """
    if isinstance(views, (list, tuple)):
        if len(views) != NUM_VIEWS:
            raise InputError(f"expected {NUM_VIEWS} views, got {len(views)}")
        tensors = [_to_tensor(v, background)[0] for v in views]
        if any(t.shape != tensors[0].shape for t in tensors):
            raise InputError(f"all six views must have the same size, got {[tuple(t.shape[-2:]) for t in tensors]}")
        views = torch.stack(tensors)[None]
    if isinstance(views, torch.Tensor) and views.ndim == 4:
        n, h, w = views.shape[0], views.shape[-2], views.shape[-1]
        if h == w:
            if n != NUM_VIEWS:
                raise InputError(f"a 4-D tensor of square images is one set of {NUM_VIEWS} views, got {n} "
                                 f"images of {h}x{w}; expected {_ACCEPTED_SHAPES}")
            views = views[None]
        elif h * GRID_COLS != w * GRID_ROWS:
            raise InputError(f"images of {h}x{w} are neither square views nor 3:2 grids; expected "
                             f"{_ACCEPTED_SHAPES}; got {tuple(views.shape)}")
    if isinstance(views, torch.Tensor) and views.ndim == 5:
        if views.shape[1] != NUM_VIEWS:
            raise InputError(f"expected {NUM_VIEWS} views, got {views.shape[1]} (shape {tuple(views.shape)})")
        b = views.shape[0]
        flat = _to_tensor(views.flatten(0, 1), background)
        h, w = flat.shape[-2:]
        if h != w:
            raise InputError(f"views must be square, got {h}x{w}; expected {_ACCEPTED_SHAPES}")
        if h != size:
            warn(f"resizing views from {h}x{w} to {size}x{size}")
            flat = F.interpolate(flat, size=(size, size), mode="bilinear", align_corners=False,
                                 antialias=True).clamp(0, 1)
        return flat.reshape(b, NUM_VIEWS, 3, size, size)
    if isinstance(views, torch.Tensor) and views.ndim not in (3, 4):
        raise InputError(f"expected {_ACCEPTED_SHAPES}; got a {views.ndim}-D tensor of shape {tuple(views.shape)}")
    return grid_to_views(as_grid_tensor(views, background, size))
