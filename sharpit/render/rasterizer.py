"""A triangle rasteriser written in plain PyTorch (CPU and CUDA, no custom kernels).

Conventions
    Input vertices are in clip space (``(x, y, z, w)``, OpenGL style: visible points satisfy
    ``-w <= x, y, z <= w``). Normalised device coordinates are ``ndc = xyz / w``. Image row 0 is
    the top of the image (NDC ``y = +1``), column 0 its left (NDC ``x = -1``); pixel ``(i, j)``
    (row, column) is sampled at its centre, NDC ``x = (2 j + 1) / W - 1``,
    ``y = 1 - (2 i + 1) / H``. A triangle is front-facing when its vertices run
    counter-clockwise in NDC (the OpenGL default).

Method
    Vertices are snapped to a 1/16-pixel grid, so every edge function value at a pixel centre is
    an integer; they are evaluated exactly (float32 for triangles spanning at most 32 pixels,
    float64 otherwise), so triangles sharing an edge leave no cracks. Candidates are the pixel
    centres inside each triangle's screen bounding box, generated for chunks of triangles at a
    time; the nearest fragment per pixel is found with one ``scatter_reduce(amin)`` on a key
    packing the NDC depth above the triangle's index (ties go to the lower view-major index, so
    results are deterministic). Barycentrics of the winners are then made perspective-correct
    with the clip ``w`` of the three vertices.

Limitations: triangles with a vertex at or behind the camera plane (``w <= 0``) are dropped
rather than clipped, and fragments outside the NDC depth range ``[-1, 1]`` are discarded. The
outputs are not differentiable with respect to vertex positions (attributes interpolated with
:func:`interpolate` are differentiable with respect to the attributes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch

from ..errors import InputError

__all__ = ["Fragments", "rasterize", "interpolate", "DEFAULT_MAX_PAIRS"]

#: Vertices are snapped to 1/16 pixel (4 sub-pixel bits) in screen space.
_ONE = 16.0
_HALF = 8.0
#: Snapped screen coordinates are clamped to +-2**19 pixels: with 4 sub-pixel bits they and their
#: differences are integers below 2**24 (exact in float32) and every edge function value is an
#: integer below 2**53 (exact in float64).
_COORD_LIMIT = float(1 << 19)
#: Triangles spanning at most this many pixels in x and y are evaluated in float32, which is exact
#: for them (all intermediate integers stay below 2**24 relative to their bounding box).
_SMALL_EXTENT_PX = 32
_ROW_BITS = 32
_ROW_MASK = (1 << _ROW_BITS) - 1
_EMPTY_KEY = torch.iinfo(torch.int64).max
#: Candidate (pixel, triangle) pairs evaluated per chunk; bounds the rasteriser's peak memory
#: (about 150 bytes per pair).
DEFAULT_MAX_PAIRS = 1 << 21


@dataclass
class Fragments:
    """The nearest triangle under every pixel of ``N`` images of ``H x W`` pixels.

    Attributes:
        pix_to_face: (N, H, W) int64 index into the ``faces`` given to :func:`rasterize`,
            -1 where no triangle covers the pixel centre.
        bary: (N, H, W, 3) float32 perspective-correct barycentric coordinates of the pixel centre
            in that triangle (non-negative, summing to 1); 0 where empty.
        depth: (N, H, W) float32 clip ``w`` interpolated perspective-correctly: for an OpenGL
            projection this is the positive distance in front of the camera along its viewing
            axis. 0 where empty.
    """

    pix_to_face: torch.Tensor
    bary: torch.Tensor
    depth: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        """(N, H, W) bool, True where a triangle covers the pixel."""
        return self.pix_to_face >= 0


def _check_inputs(clip_vertices: torch.Tensor, faces: torch.Tensor, height: int, width: int) -> None:
    if not isinstance(clip_vertices, torch.Tensor) or clip_vertices.ndim != 3 or clip_vertices.shape[-1] != 4:
        shape = tuple(clip_vertices.shape) if isinstance(clip_vertices, torch.Tensor) else type(clip_vertices).__name__
        raise InputError(f"clip_vertices must be an (N, V, 4) tensor of clip-space positions, got {shape}")
    if not clip_vertices.is_floating_point():
        raise InputError(f"clip_vertices must be floating point, got {clip_vertices.dtype}")
    if not isinstance(faces, torch.Tensor) or faces.ndim != 2 or faces.shape[1] != 3:
        shape = tuple(faces.shape) if isinstance(faces, torch.Tensor) else type(faces).__name__
        raise InputError(f"faces must be an (F, 3) integer tensor, got {shape}")
    if faces.is_floating_point() or faces.dtype == torch.bool:
        raise InputError(f"faces must hold integer vertex indices, got {faces.dtype}")
    if faces.device != clip_vertices.device:
        raise InputError(f"faces are on {faces.device} but clip_vertices on {clip_vertices.device}")
    if clip_vertices.shape[0] * faces.shape[0] > _ROW_MASK:
        raise InputError(f"at most {_ROW_MASK} (view, face) pairs can be rasterised at once, got "
                         f"{clip_vertices.shape[0]} x {faces.shape[0]}; split the views")
    if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= clip_vertices.shape[1]):
        raise InputError(f"face indices must lie in [0, {clip_vertices.shape[1] - 1}]")
    for name, value in (("height", height), ("width", width)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise InputError(f"{name} must be a positive integer, got {value!r}")


def _snap(clip_vertices: torch.Tensor, height: int, width: int) -> Tuple[torch.Tensor, ...]:
    """Clip vertices -> snapped screen coordinates (float32 multiples of 1/16 px, y down),
    NDC z and clip w (float32), each (N, V)."""
    clip = clip_vertices.float()
    w = clip[..., 3].contiguous()
    safe_w = torch.where(w > 0, w, torch.ones_like(w))
    ndc = clip[..., :3] / safe_w[..., None]
    sx = ((ndc[..., 0].double() + 1.0) * (0.5 * width)).clamp(-_COORD_LIMIT, _COORD_LIMIT)
    sy = ((1.0 - ndc[..., 1].double()) * (0.5 * height)).clamp(-_COORD_LIMIT, _COORD_LIMIT)
    return torch.round(sx * _ONE).float(), torch.round(sy * _ONE).float(), ndc[..., 2].contiguous(), w


def _gather_corners(values: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(N, V) per-vertex values -> (N, F, 3) per-corner values."""
    return values.index_select(1, faces.reshape(-1)).view(values.shape[0], -1, 3)


class _FaceSetup:
    """Culling and per-triangle constants for every kept (view, face) pair.

    Attributes:
        view, face: (K,) int64 view and face index of each kept triangle.
        count: (K,) int64 number of candidate pixel centres (its clamped bounding box).
        base: (K,) int64 flat pixel index of the bounding box's top-left pixel.
        table: (K, 13) float64 ``[bw, C0..C2, A0..A2, B0..B2, Z0, Zx, Zy]``: bounding-box width,
            the edge functions relative to the top-left candidate centre (``e = C + A dx + B dy``
            for pixel offsets ``dx, dy``, signed positive inside) and the NDC depth plane
            ``z = Z0 + Zx dx + Zy dy``.
        small: (K,) bool, True where float32 evaluation is exact.
        fx, fy, w: (N, V) snapped coordinates and clip w of all vertices, for :func:`_resolve`.
    """

    def __init__(self, clip_vertices, faces, height, width, cull_backfaces):
        fx, fy, z, w = _snap(clip_vertices, height, width)
        self.fx, self.fy, self.w = fx, fy, w
        n_faces = faces.shape[0]
        x3, y3 = _gather_corners(fx, faces), _gather_corners(fy, faces)  # (N, F, 3), exact in float32
        z3, w3 = _gather_corners(z, faces), _gather_corners(w, faces)
        xmin, xmax = x3.amin(-1), x3.amax(-1)
        ymin, ymax = y3.amin(-1), y3.amax(-1)
        # Pixel j has its centre at j * ONE + HALF; keep the centres inside the triangle's bounds.
        x0 = torch.ceil((xmin - _HALF) / _ONE).clamp_(min=0)
        x1 = torch.floor((xmax - _HALF) / _ONE).clamp_(max=width - 1)
        y0 = torch.ceil((ymin - _HALF) / _ONE).clamp_(min=0)
        y1 = torch.floor((ymax - _HALF) / _ONE).clamp_(max=height - 1)
        dx1, dy1 = (x3[..., 1] - x3[..., 0]).double(), (y3[..., 1] - y3[..., 0]).double()
        dx2, dy2 = (x3[..., 2] - x3[..., 0]).double(), (y3[..., 2] - y3[..., 0]).double()
        area2 = dx1 * dy2 - dy1 * dx2  # exact; negative for counter-clockwise in NDC
        keep = (w3 > 0).all(-1) & (area2 != 0) & (x1 >= x0) & (y1 >= y0)
        keep &= (z3 <= 1).any(-1) & (z3 >= -1).any(-1)
        if cull_backfaces:
            keep &= area2 < 0
        idx = keep.view(-1).nonzero().squeeze(1)  # flat (view, face) index
        self.view = torch.div(idx, n_faces, rounding_mode="floor")
        self.face = idx - self.view * n_faces
        pick = lambda t: t.reshape(-1).index_select(0, idx)  # noqa: E731
        pick3 = lambda t: t.reshape(-1, 3).index_select(0, idx)  # noqa: E731
        x0, y0, x1, y1 = pick(x0), pick(y0), pick(x1), pick(y1)
        bw = x1 - x0 + 1
        self.count = (bw * (y1 - y0 + 1)).long()
        self.base = (self.view * height + y0.long()) * width + x0.long()
        limit = _SMALL_EXTENT_PX * _ONE
        self.small = (pick(xmax - xmin) <= limit) & (pick(ymax - ymin) <= limit)

        # Edge functions relative to the first candidate centre: exact, and small for small triangles.
        area = pick(area2)
        sign = torch.sign(area)[:, None]
        rx = pick3(x3).double() - (x0.double() * _ONE + _HALF)[:, None]
        ry = pick3(y3).double() - (y0.double() * _ONE + _HALF)[:, None]
        a, b = (1, 2, 0), (2, 0, 1)
        coef_a = (ry[:, a] - ry[:, b]) * sign
        coef_b = (rx[:, b] - rx[:, a]) * sign
        coef_c = (rx[:, a] * ry[:, b] - rx[:, b] * ry[:, a]) * sign
        zk = pick3(z3).double() / area.abs()[:, None]
        table = torch.empty(idx.shape[0], 13, dtype=torch.float64, device=idx.device)
        table[:, 0] = bw
        table[:, 1:4] = coef_c
        table[:, 4:7] = coef_a * _ONE
        table[:, 7:10] = coef_b * _ONE
        table[:, 10] = (coef_c * zk).sum(-1)
        table[:, 11] = (coef_a * zk).sum(-1) * _ONE
        table[:, 12] = (coef_b * zk).sum(-1) * _ONE
        self.table = table


def _rasterize_chunk(table, count, base, rows, zbuf, width):
    """Evaluate every candidate pixel of a chunk of triangles and fold it into ``zbuf``.

    ``table`` (K, 13) is in the evaluation dtype; ``rows`` (K,) are the triangles' global indices.
    """
    total = int(count.sum())
    if total == 0:
        return
    dev, dt = table.device, table.dtype
    starts = (torch.cumsum(count, 0) - count).to(dt)
    tri = torch.repeat_interleave(torch.arange(count.shape[0], device=dev), count, output_size=total)
    t = table.index_select(0, tri)  # (P, 13)
    off = torch.arange(total, device=dev, dtype=dt) - starts.index_select(0, tri)
    bw = t[:, 0]
    dy = torch.floor((off + 0.5) / bw)
    dx = off - dy * bw
    e = torch.addcmul(t[:, 1:4], t[:, 4:7], dx[:, None])
    e.addcmul_(t[:, 7:10], dy[:, None])
    z = torch.addcmul(t[:, 10], t[:, 11], dx).addcmul_(t[:, 12], dy).float()
    inside = (e >= 0).all(-1) & (z.abs() <= 1.0)
    # Packed key: depth mapped to [0, 1] (its float32 bits order like the value) above the row.
    depth_bits = ((z + 1.0) * 0.5).clamp_(0.0, 1.0).view(torch.int32).long()
    key = (depth_bits << _ROW_BITS) | rows.index_select(0, tri)
    key = torch.where(inside, key, torch.full_like(key, _EMPTY_KEY))
    pix = base.index_select(0, tri) + dy.long() * width + dx.long()
    zbuf.scatter_reduce_(0, pix, key, reduce="amin", include_self=True)


def _chunks(count: torch.Tensor, max_pairs: int):
    """Split consecutive triangles into chunks of about ``max_pairs`` candidates (a triangle
    with more candidates than that forms its own chunk)."""
    if count.numel() == 0:
        return []
    ends = torch.cumsum(count, 0)
    total = int(ends[-1])
    marks = torch.arange(max_pairs, max(total, max_pairs), max_pairs, device=count.device)
    cuts = torch.searchsorted(ends, marks, right=True).tolist()
    bounds = [0] + sorted(set(cuts) - {0, count.shape[0]}) + [count.shape[0]]
    return list(zip(bounds[:-1], bounds[1:]))


def rasterize(clip_vertices: torch.Tensor, faces: torch.Tensor, height: int, width: int,
              cull_backfaces: bool = False, max_pairs: int = DEFAULT_MAX_PAIRS) -> Fragments:
    """Rasterise a batch of ``N`` views of one triangle list.

    Args:
        clip_vertices: (N, V, 4) clip-space vertex positions, one set per view (see the module
            docstring for the conventions). For texture baking pass UV-space positions
            ``(2u - 1, 2v - 1, 0, 1)``.
        faces: (F, 3) integer vertex indices shared by all views.
        height, width: image size in pixels.
        cull_backfaces: drop triangles that run clockwise in NDC. With False (default) both
            windings rasterise.
        max_pairs: candidate (pixel, triangle) pairs evaluated at once; lower it to save memory.
    Returns:
        :class:`Fragments` for the nearest triangle per pixel (smallest NDC z).
    """
    _check_inputs(clip_vertices, faces, height, width)
    if not isinstance(max_pairs, int) or max_pairs < 1:
        raise InputError(f"max_pairs must be a positive integer, got {max_pairs!r}")
    faces = faces.long()
    n_views = clip_vertices.shape[0]
    setup = _FaceSetup(clip_vertices, faces, height, width, cull_backfaces)
    zbuf = torch.full((n_views * height * width,), _EMPTY_KEY, dtype=torch.int64, device=clip_vertices.device)
    for group, dtype in ((setup.small, torch.float32), (~setup.small, torch.float64)):
        rows = group.nonzero(as_tuple=True)[0]
        table = setup.table.index_select(0, rows).to(dtype)
        count, base = setup.count.index_select(0, rows), setup.base.index_select(0, rows)
        for lo, hi in _chunks(count, max_pairs):
            _rasterize_chunk(table[lo:hi], count[lo:hi], base[lo:hi], rows[lo:hi], zbuf, width)
    return _resolve(zbuf, faces, setup, n_views, height, width)


def _resolve(zbuf, faces, setup: _FaceSetup, n_views, height, width) -> Fragments:
    """Turn the packed z-buffer into pix_to_face, perspective-correct barycentrics and depth."""
    dev = zbuf.device
    pix = (zbuf != _EMPTY_KEY).nonzero().squeeze(1)
    row = zbuf.index_select(0, pix) & _ROW_MASK
    view, face = setup.view.index_select(0, row), setup.face.index_select(0, row)
    rem = pix - view * (height * width)
    py = torch.div(rem, width, rounding_mode="floor")
    px = rem - py * width
    n_vertices = setup.fx.shape[1]
    corner = (faces.index_select(0, face) + (view * n_vertices)[:, None]).view(-1)  # flat (view, vertex)
    x = setup.fx.reshape(-1).index_select(0, corner).view(-1, 3).double() - (px.double() * _ONE + _HALF)[:, None]
    y = setup.fy.reshape(-1).index_select(0, corner).view(-1, 3).double() - (py.double() * _ONE + _HALF)[:, None]
    a, b = (1, 2, 0), (2, 0, 1)
    e = x[:, a] * y[:, b] - x[:, b] * y[:, a]  # edge functions at the pixel centre (origin), exact
    lam = e / e.sum(-1, keepdim=True)  # the area's sign cancels
    inv_w = lam / setup.w.reshape(-1).index_select(0, corner).view(-1, 3).double()
    inv_sum = inv_w.sum(-1, keepdim=True)

    size = n_views * height * width
    pix_to_face = torch.full((size,), -1, dtype=torch.int64, device=dev).index_copy_(0, pix, face)
    bary = torch.zeros(size, 3, dtype=torch.float32, device=dev).index_copy_(0, pix, (inv_w / inv_sum).float())
    depth = torch.zeros(size, dtype=torch.float32, device=dev).index_copy_(0, pix, (1.0 / inv_sum[:, 0]).float())
    return Fragments(pix_to_face.view(n_views, height, width), bary.view(n_views, height, width, 3),
                     depth.view(n_views, height, width))


def interpolate(attrs: torch.Tensor, faces: torch.Tensor, fragments: Fragments) -> torch.Tensor:
    """Interpolate per-vertex attributes at every pixel with the fragments' barycentrics.

    Args:
        attrs: (V, C) attributes shared by all views, or (N, V, C) one set per view.
        faces: (F, 3) the faces given to :func:`rasterize`.
        fragments: its result for N views of H x W pixels.
    Returns:
        (N, H, W, C) interpolated attributes in ``attrs``' dtype, 0 where no triangle covers the pixel.
    """
    if not isinstance(attrs, torch.Tensor) or attrs.ndim not in (2, 3):
        raise InputError("attrs must be a (V, C) or (N, V, C) tensor")
    n, h, w = fragments.pix_to_face.shape
    if attrs.ndim == 3 and attrs.shape[0] != n:
        raise InputError(f"attrs has {attrs.shape[0]} views but the fragments have {n}")
    faces = faces.to(fragments.pix_to_face.device).long()
    flat_face = fragments.pix_to_face.reshape(-1)
    pix = (flat_face >= 0).nonzero().squeeze(1)
    vid = faces.index_select(0, flat_face.index_select(0, pix))  # (P, 3)
    if attrs.ndim == 3:
        n_vertices = attrs.shape[1]
        vid = vid + (torch.div(pix, h * w, rounding_mode="floor") * n_vertices)[:, None]
        attrs = attrs.reshape(-1, attrs.shape[-1])
    bary = fragments.bary.reshape(-1, 3).index_select(0, pix).to(attrs.dtype)
    values = (attrs.index_select(0, vid.reshape(-1)).view(-1, 3, attrs.shape[-1]) * bary[..., None]).sum(1)
    out = torch.zeros(n * h * w, attrs.shape[-1], dtype=attrs.dtype, device=attrs.device)
    return out.index_copy(0, pix, values).view(n, h, w, -1)
