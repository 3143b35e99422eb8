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
    float64 otherwise), so triangles sharing an edge leave no cracks. Culling (orientation, empty
    bounding box, depth range) runs on every (view, face) pair with a few whole-array operations;
    the per-triangle constants only for the pairs kept. Candidates are the pixel centres inside
    each kept triangle's screen bounding box: triangles whose box fits a small fixed stamp (up to
    8 x 8 pixels, the common case for detailed meshes) are evaluated a stamp size at a time with
    broadcasting, the others one candidate per pixel of their box, in chunks. The nearest
    fragment per pixel is found with ``scatter_reduce(amin)`` on a key packing the NDC depth
    (evaluated in float32 from a float64 plane) above the triangle's index (ties go to the lower
    view-major index, so results are deterministic and independent of the evaluation order).
    Barycentrics of the winners are then made perspective-correct with the clip ``w`` of the
    three vertices, from the exact edge functions, in float32.

Limitations: triangles with a vertex at or behind the camera plane (``w <= 0``) are dropped
rather than clipped, and fragments outside the NDC depth range ``[-1, 1]`` are discarded. The
outputs are not differentiable with respect to vertex positions (attributes interpolated with
:func:`interpolate` are differentiable with respect to the attributes).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Optional, Tuple

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
#: Stamp sides (pixels) of the fixed-footprint path; a triangle takes the smallest stamp that
#: holds its bounding box, and goes to the per-candidate path when none does.
_STAMP_SIDES = (1, 2, 3, 4, 6, 8)


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
    # (ndc + 1) * size / 2 * 16 is exact in float64 for a float32 ndc, so only the rounding rounds.
    limit = _COORD_LIMIT * _ONE
    sx = (clip[..., 0] / safe_w).double().add_(1.0).mul_(0.5 * width * _ONE).clamp_(-limit, limit)
    sy = (clip[..., 1] / safe_w).double().neg_().add_(1.0).mul_(0.5 * height * _ONE).clamp_(-limit, limit)
    return sx.round_().float(), sy.round_().float(), clip[..., 2] / safe_w, w


class _Visible:
    """The covered pixels of a rasterised batch, one entry per pixel, in flat pixel order.

    Attributes:
        pix: (P,) int64 flat pixel index ``(view * H + row) * W + column``.
        face: (P,) int64 index into ``faces`` of the nearest triangle there.
        bary: three (P,) float32 perspective-correct barycentrics; depth: (P,) float32 clip ``w``.
    """

    __slots__ = ("pix", "face", "bary", "depth")

    def __init__(self, pix, face, bary, depth):
        self.pix, self.face, self.bary, self.depth = pix, face, bary, depth

    def fragments(self, n_views: int, height: int, width: int) -> Fragments:
        size = n_views * height * width
        dev = self.pix.device
        pix_to_face = torch.full((size,), -1, dtype=torch.int64, device=dev).index_copy_(0, self.pix, self.face)
        bary = torch.zeros(size, 3, dtype=torch.float32, device=dev)
        bary.index_copy_(0, self.pix, torch.stack(self.bary, dim=1))
        depth = torch.zeros(size, dtype=torch.float32, device=dev).index_copy_(0, self.pix, self.depth)
        return Fragments(pix_to_face.view(n_views, height, width), bary.view(n_views, height, width, 3),
                         depth.view(n_views, height, width))

    @staticmethod
    def from_fragments(fragments: Fragments) -> "_Visible":
        flat = fragments.pix_to_face.reshape(-1)
        pix = (flat >= 0).nonzero().squeeze(1)
        bary = fragments.bary.reshape(-1, 3).index_select(0, pix)
        return _Visible(pix, flat.index_select(0, pix), [bary[:, k].contiguous() for k in range(3)],
                        fragments.depth.reshape(-1).index_select(0, pix))


def _min3(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return torch.minimum(torch.minimum(a, b), c)


def _max3(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return torch.maximum(torch.maximum(a, b), c)


class _FaceSetup:
    """Culling and per-triangle constants for every kept (view, face) pair.

    The orientation test runs on every (view, face) pair, the bounding boxes on the pairs facing
    the right way, everything else on the kept pairs only.

    Attributes:
        view, face: (K,) int64 view and face index of each kept triangle, in view-major order.
        x0, y0: (K,) int64 top-left pixel of its bounding box (clamped to the image);
            bw, bh: (K,) int64 size of that box in pixels.
        base: (K,) int64 flat pixel index of the bounding box's top-left pixel.
        table32: 13 (K,) float32 rows ``[bw, C0..C2, A0..A2, B0..B2, Z0, Zx, Zy]``:
            bounding-box width, the edge functions relative to the top-left candidate centre
            (``e = C + A dx + B dy`` for pixel offsets ``dx, dy``, signed positive inside;
            integers, exact where ``small``) and the NDC depth plane ``z = Z0 + Zx dx + Zy dy``
            (computed in float64, rounded once).
        small: (K,) bool, True where float32 evaluation is exact.
        large: (L,) int64 indices of the triangles that are not small, ascending;
            table64: their 13 rows in float64, exact (None when there are none).
        inv_w: three (K,) float32 ``1 / w`` of the corners.
    """

    def __init__(self, clip_vertices, faces, height, width, cull_backfaces):
        fx, fy, z, w = _snap(clip_vertices, height, width)
        n_vertices, n_faces = fx.shape[1], faces.shape[0]
        corners = [faces[:, k].contiguous() for k in range(3)]
        xs = [fx.index_select(1, c).view(-1) for c in corners]  # flat (view, face), exact in float32
        ys = [fy.index_select(1, c).view(-1) for c in corners]
        # Twice the signed area (negative for counter-clockwise in NDC). Coordinate differences
        # are exact in float32; so are the products below 2**24, and then the sign of their
        # difference. The rare larger products are redone in float64, exactly.
        p1 = (xs[1] - xs[0]).mul_(ys[2] - ys[0])
        p2 = (ys[1] - ys[0]).mul_(xs[2] - xs[0])
        area = p1 - p2
        large = torch.maximum(p1.abs_(), p2.abs_()) >= float(1 << 24)
        del p1, p2
        facing = area < 0 if cull_backfaces else area != 0
        large_idx = large.nonzero().squeeze(1)
        if large_idx.numel():
            exact = self._area64(xs, ys, large_idx)
            facing.index_copy_(0, large_idx, exact < 0 if cull_backfaces else exact != 0)
        idx = facing.nonzero().squeeze(1)  # flat (view, face) index
        pick = lambda t: t.index_select(0, idx)  # noqa: E731
        xs, ys, area = [pick(t) for t in xs], [pick(t) for t in ys], pick(area)

        xmin, xmax = _min3(*xs), _max3(*xs)
        ymin, ymax = _min3(*ys), _max3(*ys)
        # Pixel j has its centre at j * ONE + HALF; keep the centres inside the triangle's bounds.
        x0 = torch.ceil((xmin - _HALF) / _ONE).clamp_(min=0)
        x1 = torch.floor((xmax - _HALF) / _ONE).clamp_(max=width - 1)
        y0 = torch.ceil((ymin - _HALF) / _ONE).clamp_(min=0)
        y1 = torch.floor((ymax - _HALF) / _ONE).clamp_(max=height - 1)
        keep = (x1 >= x0) & (y1 >= y0)
        # Triangles with a corner at or behind the camera plane (w <= 0), or all corners beyond
        # the far plane or all before the near plane, go. Usually no vertex is outside at all.
        if not bool(((z <= 1) & (z >= -1) & (w > 0)).all()):
            code = ((~(z <= 1)).to(torch.uint8) | ((~(z >= -1)).to(torch.uint8) << 1)
                    | ((~(w > 0)).to(torch.uint8) << 2))
            view = torch.div(idx, n_faces, rounding_mode="floor")
            vid = faces.index_select(0, idx - view * n_faces) + (view * n_vertices)[:, None]
            flat = code.view(-1)
            c0, c1, c2 = (flat.index_select(0, vid[:, k].contiguous()) for k in range(3))
            keep &= (((c0 & c1 & c2) & 3) == 0) & (((c0 | c1 | c2) & 4) == 0)
        sel = keep.nonzero().squeeze(1)
        pick = lambda t: t.index_select(0, sel)  # noqa: E731
        idx, xs, ys = pick(idx), [pick(t) for t in xs], [pick(t) for t in ys]
        x0, y0, x1, y1 = pick(x0), pick(y0), pick(x1), pick(y1)
        limit = _SMALL_EXTENT_PX * _ONE
        self.small = (pick(xmax - xmin) <= limit) & (pick(ymax - ymin) <= limit)
        self.view = torch.div(idx, n_faces, rounding_mode="floor")
        self.face = idx - self.view * n_faces
        self.x0, self.y0 = x0.long(), y0.long()
        self.bw, self.bh = (x1 - x0).long() + 1, (y1 - y0).long() + 1
        self.base = (self.view * height + self.y0) * width + self.x0

        # Per-corner values of the kept triangles.
        view_offset = self.view * n_vertices
        vid = [c.index_select(0, self.face).add_(view_offset) for c in corners]
        flat_z, flat_w = z.reshape(-1), w.reshape(-1)
        self.inv_w = [flat_w.index_select(0, v).reciprocal_() for v in vid]
        z3 = [flat_z.index_select(0, v) for v in vid]
        # Edge functions relative to the first candidate centre (e = C + A dx + B dy, positive
        # inside): exact in float32 for small triangles, whose coordinates relative to the box
        # stay below 2**10; the few large ones get a float64 table as well.
        ox, oy = x0 * _ONE + _HALF, y0 * _ONE + _HALF  # exact
        rx, ry = [t - ox for t in xs], [t - oy for t in ys]
        area = area.index_select(0, sel)  # exact where small
        sign = torch.sign(area)
        abs_area = area.abs_().double()
        coef_c, coef_a, coef_b = [], [], []
        for a, b in ((1, 2), (2, 0), (0, 1)):
            coef_a.append((ry[a] - ry[b]).mul_(sign))
            coef_b.append((rx[b] - rx[a]).mul_(sign))
            coef_c.append((rx[a] * ry[b]).sub_(rx[b] * ry[a]).mul_(sign))
        # The NDC depth plane, in float64 from the exact coefficients, then rounded once.
        zk = [z3[k].double().div_(abs_area) for k in range(3)]
        depth = []
        for coef in (coef_c, coef_a, coef_b):
            terms = [coef[k].double().mul_(zk[k]) for k in range(3)]
            depth.append(terms[0].add_(terms[1]).add_(terms[2]))
        self.table32 = ([self.bw.float()] + coef_c + [c.mul_(_ONE) for c in coef_a] + [c.mul_(_ONE) for c in coef_b]
                        + [depth[0].float(), depth[1].mul_(_ONE).float(), depth[2].mul_(_ONE).float()])
        self.large = (~self.small).nonzero().squeeze(1)
        self.table64 = None
        if self.large.numel():
            pick = lambda t: t.index_select(0, self.large)  # noqa: E731
            self.table64 = self._table64([pick(t) for t in rx], [pick(t) for t in ry], [pick(t) for t in z3],
                                         pick(self.bw))
            for r in range(10, 13):
                self.table32[r].index_copy_(0, self.large, self.table64[r].float())

    @staticmethod
    def _table64(rx, ry, z3, bw):
        """The 13 table rows in float64, exact for any triangle, from float32 box-relative corners."""
        rx, ry, z3 = [t.double() for t in rx], [t.double() for t in ry], [t.double() for t in z3]
        area = (rx[1] - rx[0]) * (ry[2] - ry[0]) - (ry[1] - ry[0]) * (rx[2] - rx[0])
        sign = torch.sign(area)
        abs_area = area.abs_()
        table = [bw.double()] + [None] * 12
        zc, za, zb = [], [], []
        for k, (a, b) in enumerate(((1, 2), (2, 0), (0, 1))):
            coef_a = (ry[a] - ry[b]) * sign
            coef_b = (rx[b] - rx[a]) * sign
            coef_c = (rx[a] * ry[b] - rx[b] * ry[a]) * sign
            zk = z3[k] / abs_area
            zc.append(coef_c * zk)
            za.append(coef_a * zk)
            zb.append(coef_b * zk)
            table[1 + k], table[4 + k], table[7 + k] = coef_c, coef_a * _ONE, coef_b * _ONE
        table[10] = (zc[0] + zc[1]) + zc[2]
        table[11] = ((za[0] + za[1]) + za[2]) * _ONE
        table[12] = ((zb[0] + zb[1]) + zb[2]) * _ONE
        return table

    @staticmethod
    def _area64(xs, ys, rows):
        x = [t.index_select(0, rows).double() for t in xs]
        y = [t.index_select(0, rows).double() for t in ys]
        return (x[1] - x[0]) * (y[2] - y[0]) - (y[1] - y[0]) * (x[2] - x[0])


def _pack_keys(z: torch.Tensor, rows: torch.Tensor, inside: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Packed z-buffer keys: NDC depth mapped to [0, 1] (its float32 bits order like the value)
    above the triangle's row; the empty key where not ``inside`` (default: ``|z| <= 1``).
    Overwrites ``z``."""
    if inside is None:
        inside = z.abs() <= 1.0
    key = z.add_(1.0).mul_(0.5).clamp_(0.0, 1.0).view(torch.int32).long()
    key.bitwise_left_shift_(_ROW_BITS).bitwise_or_(rows)
    if not bool(inside.all()):
        key.masked_fill_(~inside, _EMPTY_KEY)
    return key


def _rasterize_chunk(table, count, base, rows, zbuf, width):
    """Evaluate every candidate pixel of a chunk of triangles and fold it into ``zbuf``.

    ``table`` is a list of 13 (K,) rows in the evaluation dtype; ``rows`` (K,) are the
    triangles' global indices.
    """
    total = int(count.sum())
    if total == 0:
        return
    dev, dt = table[0].device, table[0].dtype
    starts = (torch.cumsum(count, 0) - count).to(dt)
    tri = torch.repeat_interleave(torch.arange(count.shape[0], device=dev), count, output_size=total)
    t = [r.index_select(0, tri) for r in table]
    off = torch.arange(total, device=dev, dtype=dt) - starts.index_select(0, tri)
    dy = torch.floor((off + 0.5) / t[0])
    dx = off - dy * t[0]
    e = _min3(*(torch.addcmul(t[1 + k], t[4 + k], dx).addcmul_(t[7 + k], dy) for k in range(3)))
    z = torch.addcmul(t[10], t[11], dx).addcmul_(t[12], dy).float()
    inside = (e >= 0) & (z.abs() <= 1.0)
    key = _pack_keys(z, rows.index_select(0, tri), inside)
    pix = base.index_select(0, tri) + dy.long() * width + dx.long()
    zbuf.scatter_reduce_(0, pix, key, reduce="amin", include_self=True)


@functools.lru_cache(maxsize=256)
def _stamp_slots(kw: int, kh: int, width: int, device: torch.device):
    """Offsets of the slots of a ``kw x kh`` stamp: (slots, 1) float32 dx and dy, and the flat
    pixel offset (slots,) int64 in an image ``width`` wide."""
    dx = torch.arange(kw, device=device, dtype=torch.float32).repeat(kh)
    dy = torch.arange(kh, device=device, dtype=torch.float32).repeat_interleave(kw)
    return dx[:, None], dy[:, None], dy.long() * width + dx.long()


def _rasterize_stamps(table, rows, base, kw, kh, zbuf, width, max_pairs):
    """Fixed ``kw x kh`` footprint for triangles whose (on-screen) bounding box fits in it.

    Every slot of the stamp is evaluated for all the triangles at once, laid out slot-major
    ``(slots, K)`` so that each operation runs along the contiguous triangle axis; the depth and
    the keys only for the centres inside. ``table`` is a (12, K) float32 tensor with the rows
    ``[C0..C2, A0..A2, B0..B2, Z0, Zx, Zy]`` of ``_FaceSetup.table32``, exact for these triangles
    (at most ``_SMALL_EXTENT_PX`` across).
    """
    dx, dy, offset = _stamp_slots(kw, kh, width, zbuf.device)
    slots = kw * kh
    step = max(1, max_pairs // slots)
    for lo in range(0, table.shape[1], step):
        t = table if table.shape[1] <= step else table[:, lo:lo + step]
        # The three edge functions at every slot, exact integers, and their minimum.
        e = torch.addcmul(t[0:3, None], t[3:6, None], dx).addcmul_(t[6:9, None], dy).amin(0)
        slot, tri = (e >= 0).nonzero(as_tuple=True)
        if tri.numel() == 0:
            continue
        z = torch.addcmul(t[9].index_select(0, tri), t[10].index_select(0, tri), dx.view(-1).index_select(0, slot))
        z.addcmul_(t[11].index_select(0, tri), dy.view(-1).index_select(0, slot))
        key = _pack_keys(z, rows[lo:lo + step].index_select(0, tri))
        pix = base[lo:lo + step].index_select(0, tri).add_(offset.index_select(0, slot))
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


def _rasterize_visible(clip_vertices, faces, height, width, cull_backfaces,
                       max_pairs=DEFAULT_MAX_PAIRS) -> _Visible:
    """:func:`rasterize` without the checks, returning only the covered pixels."""
    setup = _FaceSetup(clip_vertices, faces.long(), height, width, cull_backfaces)
    zbuf = _zbuffer(setup, clip_vertices.shape[0], height, width, max_pairs)
    return _resolve(zbuf, setup, width)


def _zbuffer(setup: _FaceSetup, n_views: int, height: int, width: int, max_pairs: int) -> torch.Tensor:
    """The packed (depth, triangle) key of the nearest fragment of every pixel."""
    zbuf = torch.full((n_views * height * width,), _EMPTY_KEY, dtype=torch.int64, device=setup.base.device)
    # Small triangles whose stamp stays inside the image take the fixed-footprint path.
    n_sides, largest = len(_STAMP_SIDES), _STAMP_SIDES[-1]
    # extent -> index of the smallest stamp side holding it (n_sides if none), and that side
    lut = torch.searchsorted(torch.tensor(_STAMP_SIDES, device=zbuf.device), torch.arange(largest + 2, device=zbuf.device))
    side = torch.tensor(_STAMP_SIDES + (1 << 30,), device=zbuf.device)
    cx = lut.index_select(0, setup.bw.clamp(max=largest + 1))
    cy = lut.index_select(0, setup.bh.clamp(max=largest + 1))
    fits = (setup.small & (setup.x0 + side.index_select(0, cx) <= width)
            & (setup.y0 + side.index_select(0, cy) <= height))
    stamp_rows = fits.nonzero().squeeze(1)
    if stamp_rows.numel():
        cls = (cx * n_sides + cy).index_select(0, stamp_rows).to(torch.uint8)
        stamp_rows = stamp_rows.index_select(0, torch.argsort(cls, stable=True))  # a radix sort of bytes
        counts = torch.bincount(cls, minlength=n_sides * n_sides).tolist()
        table = torch.empty(12, stamp_rows.shape[0], device=zbuf.device)
        for r in range(12):
            torch.index_select(setup.table32[1 + r], 0, stamp_rows, out=table[r])
        base = setup.base.index_select(0, stamp_rows)
        lo = 0
        for c, count in enumerate(counts):
            if count:
                hi = lo + count
                _rasterize_stamps(table[:, lo:hi], stamp_rows[lo:hi], base[lo:hi],
                                  _STAMP_SIDES[c // n_sides], _STAMP_SIDES[c % n_sides], zbuf, width, max_pairs)
                lo = hi
    # The rest: one candidate per pixel centre of the bounding box.
    rest = ~fits
    for exact in (False, True):
        rows = (rest & (~setup.small if exact else setup.small)).nonzero().squeeze(1)
        if rows.numel() == 0:
            continue
        if exact:
            at = torch.searchsorted(setup.large, rows)
            table = [r.index_select(0, at) for r in setup.table64]
        else:
            table = [r.index_select(0, rows) for r in setup.table32]
        count = (setup.bw * setup.bh).index_select(0, rows)
        base = setup.base.index_select(0, rows)
        for lo, hi in _chunks(count, max_pairs):
            _rasterize_chunk([r[lo:hi] for r in table], count[lo:hi], base[lo:hi], rows[lo:hi], zbuf, width)
    return zbuf


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
    visible = _rasterize_visible(clip_vertices, faces, height, width, cull_backfaces, max_pairs)
    return visible.fragments(clip_vertices.shape[0], height, width)


def _resolve(zbuf, setup: _FaceSetup, width) -> _Visible:
    """Turn the packed z-buffer into the covered pixels' faces, perspective-correct
    barycentrics and depth."""
    pix = (zbuf != _EMPTY_KEY).nonzero().squeeze(1)
    row = zbuf.index_select(0, pix).bitwise_and_(_ROW_MASK)
    # (y - y0) * width + (x - x0) < 2**22: float32 is exact for it and splits it exactly
    rem = pix.sub(setup.base.index_select(0, row)).to(torch.float32 if zbuf.numel() <= 1 << 22 else torch.float64)
    dy = (rem + 0.5).div_(width).floor_()
    dx, dy = rem.sub_(dy * width).float(), dy.float()

    def edges(table, dx, dy, row):
        t = lambda r: table[r].index_select(0, row)  # noqa: E731
        return [torch.addcmul(t(1 + k), t(4 + k), dx).addcmul_(t(7 + k), dy) for k in range(3)]

    # Edge functions at the pixel centres, exact (float32 for small triangles, else float64),
    # positive inside; their sum is twice the area.
    e = edges(setup.table32, dx, dy, row)
    large = (~setup.small.index_select(0, row)).nonzero().squeeze(1) if setup.large.numel() else setup.large
    if large.numel():
        exact = edges(setup.table64, dx.index_select(0, large).double(), dy.index_select(0, large).double(),
                      torch.searchsorted(setup.large, row.index_select(0, large)))
        for k in range(3):
            e[k].index_copy_(0, large, exact[k].float())
    total = (e[0] + e[1]).add_(e[2])
    u = [e[k].mul_(setup.inv_w[k].index_select(0, row)) for k in range(3)]  # e / w
    inv = (u[0] + u[1]).add_(u[2]).reciprocal_()
    bary = [v.mul_(inv) for v in u]
    return _Visible(pix, setup.face.index_select(0, row), bary, total.mul_(inv))


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
