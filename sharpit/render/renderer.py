"""Multi-view rendering of a :class:`~sharpit.mesh.Mesh`, by default at the six Zero123++ v1.2 poses.

Frames: meshes and cameras are in the sharpit world frame (+z up, front +x; see
:mod:`sharpit.cameras`). Images are channels-first with row 0 at the top.

Backends: ``"torch"`` (the default) is sharpit's own PyTorch rasteriser, the one the tests,
benchmarks and parity checks run. ``"pytorch3d"`` is opt-in only: it needs the pytorch3d package,
and its comparison with the torch backend (``tests/test_render.py``) runs only where pytorch3d is
installed, which sharpit's own test setup does not do. ``"auto"`` is kept for old callers and
means ``"torch"``; installing pytorch3d never changes the backend silently.

The rule for choosing a backend automatically: only one known to give the torch backend's images
exactly may be chosen, and none is. pytorch3d and OpenGL (the renderers of
:mod:`sharpit.render.gl_reference`, used to check and time sharpit, not as backends) decide
coverage on a different sub-pixel grid and fill rule, and OpenGL quantises colours to 8 bits, so
their silhouette pixels and colours differ slightly (``tests/test_render_peers.py``).

Speed on the CPU: a render of at least ``_PARALLEL_MIN_PIXELS`` pixels splits its views across
``torch.get_num_threads()`` threads (whole views in parallel; the images do not depend on the
split), and :attr:`MultiViewRender.normals` are computed when first read unless the shading
needed them (``benchmarks/RESULTS.md`` has the timings against OpenGL).
"""

from __future__ import annotations

import functools
import importlib.util
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from PIL import Image

from ..cameras import VIEW_SIZE, CameraBatch, zero123plus_cameras
from ..errors import InputError
from ..grid import NUM_VIEWS, tensor_to_pil, views_to_grid
from ..mesh import Mesh
from .rasterizer import DEFAULT_MAX_PAIRS, Fragments, _rasterize_visible, _Visible, rasterize
from .shading import AMBIENT, NEUTRAL_GREY, face_normals, sample_texture, vertex_normals

__all__ = ["MultiViewRender", "render_views", "render_grid", "available_backends", "SHADING_MODES",
           "BACKENDS", "DEFAULT_BACKEND"]

SHADING_MODES = ("unlit", "lambertian")
BACKENDS = ("torch", "pytorch3d", "auto")
#: The rasteriser used unless ``backend="pytorch3d"`` is asked for explicitly ("auto" means this).
DEFAULT_BACKEND = "torch"


class Deferred:
    """A value computed on first use: pass ``Deferred(fn)`` for a :class:`MultiViewRender` field
    and the attribute holds ``fn()``, called once, when first read."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[], torch.Tensor]):
        self.fn = fn


class _DeferredField:
    """Dataclass field descriptor that resolves a :class:`Deferred` value on first read."""

    def __set_name__(self, owner, name):
        self.slot = "_" + name

    def __get__(self, obj, owner=None):
        if obj is None:
            raise AttributeError(self.slot[1:])  # no default value
        value = obj.__dict__[self.slot]
        if isinstance(value, Deferred):
            value = obj.__dict__[self.slot] = value.fn()
        return value

    def __set__(self, obj, value):
        obj.__dict__[self.slot] = value


@dataclass
class MultiViewRender:
    """The result of :func:`render_views` for ``N`` cameras at ``H x W`` pixels.

    Attributes:
        images: (N, 3, H, W) float32 in [0, 1], composited on the background.
        alpha: (N, 1, H, W) float32 coverage in [0, 1] (fractional on edges when supersampled).
        depth: (N, 1, H, W) float32 positive distance from the camera along its viewing axis,
            averaged over the covered samples of a pixel; 0 where empty.
        normals: (N, 3, H, W) float32 unit world-space surface normals (as wound: outward for
            counter-clockwise faces), 0 where empty. :func:`render_views` computes them when
            first read (unless its shading needed them anyway), so renders whose normals are
            never looked at do not pay for them; the render keeps what it needs for that (about
            30 bytes per covered pixel) until then.
        cameras: the :class:`~sharpit.cameras.CameraBatch` rendered.
    """

    images: torch.Tensor
    alpha: torch.Tensor
    depth: torch.Tensor
    normals: torch.Tensor = _DeferredField()
    cameras: CameraBatch

    def grid(self) -> torch.Tensor:
        """(3, 3H, 2W) tensor tiling the six views row-major ((3, 960, 640) for 320 px views)."""
        if self.images.shape[0] != NUM_VIEWS:
            raise InputError(f"a grid needs {NUM_VIEWS} views, this render has {self.images.shape[0]}")
        return views_to_grid(self.images)

    def grid_image(self) -> Image.Image:
        """The grid as an RGB PIL image (640 wide, 960 high for 320 px views)."""
        return tensor_to_pil(self.grid())


@functools.lru_cache(maxsize=None)
def _pytorch3d_importable() -> bool:
    if importlib.util.find_spec("pytorch3d") is None:
        return False
    try:
        from pytorch3d.renderer.mesh.rasterize_meshes import rasterize_meshes  # noqa: F401
    except ImportError:
        return False
    return True


def available_backends() -> Tuple[str, ...]:
    """Rasteriser backends usable here: always ``"torch"``, plus ``"pytorch3d"`` when it imports."""
    return ("torch", "pytorch3d") if _pytorch3d_importable() else ("torch",)


def _rasterizer(backend: str) -> Callable[..., Fragments]:
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    if backend == "auto":   # prefers torch: the backend sharpit is tested with, always available
        backend = DEFAULT_BACKEND
    if backend == "pytorch3d":
        if not _pytorch3d_importable():
            raise InputError("backend='pytorch3d' needs the pytorch3d package, which does not import here; "
                             "use backend='torch' (the default)")
        from .pytorch3d_backend import rasterize_pytorch3d
        return rasterize_pytorch3d
    return rasterize


def _background(background, device) -> torch.Tensor:
    bg = torch.as_tensor(background, dtype=torch.float32).flatten()
    if bg.numel() not in (1, 3) or not bool(torch.isfinite(bg).all()) or float(bg.min()) < 0 or float(bg.max()) > 1:
        raise InputError(f"background must be a grey level or an RGB triple in [0, 1], got {background!r}")
    return bg.expand(3).to(device).view(1, 3, 1, 1)


def _check_args(mesh, cameras, size, supersample, shading) -> None:
    if not isinstance(mesh, Mesh):
        raise InputError(f"expected a sharpit.mesh.Mesh, got {type(mesh).__name__}; load files with sharpit.mesh_io.load_mesh")
    if cameras is not None and not isinstance(cameras, CameraBatch):
        raise InputError(f"cameras must be a sharpit.cameras.CameraBatch, got {type(cameras).__name__}")
    for name, value in (("size", size), ("supersample", supersample)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}")
    if shading not in SHADING_MODES:
        raise InputError(f"unknown shading {shading!r}; expected one of {SHADING_MODES}")


def _bounding_sphere(vertices: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Centre of the bounding box and the largest distance of a vertex from it."""
    centre = (vertices.min(0).values + vertices.max(0).values) / 2.0
    return centre, (vertices - centre).norm(dim=-1).max()


def _depth_range(vertices: torch.Tensor, cameras: CameraBatch,
                 sphere: Optional[Tuple[torch.Tensor, torch.Tensor]] = None) -> Tuple[float, float]:
    """Near and far planes enclosing the mesh's bounding sphere (``_bounding_sphere``) for every
    camera."""
    centre, radius = _bounding_sphere(vertices) if sphere is None else sphere
    radius = float(radius) * 1.05 + 1e-6
    d = -cameras.world_to_camera(centre[None])[:, 0, 2]
    near = max(float(d.min()) - radius, 1e-4 * (float(d.max()) + radius))
    far = float(d.max()) + radius
    return near, far


def _keys_pair_up(key: torch.Tensor) -> bool:
    """True when the sorted keys pair up as ``(2u, 2u + 1)``."""
    if key.numel() % 2:
        return False
    key = torch.sort(key).values.view(-1, 2)
    return bool((key[:, 0] & 1).eq_(0).all()) and torch.equal(key[:, 1], key[:, 0] + 1)


def _safe_to_cull(vertices: torch.Tensor, faces: torch.Tensor, cameras: CameraBatch,
                  sphere: Optional[Tuple[torch.Tensor, torch.Tensor]] = None) -> bool:
    """True when back-face culling cannot change the image: the mesh is closed and consistently
    wound outward (every directed edge has exactly one reverse twin, positive signed volume) and
    every camera is outside its bounding sphere (``_bounding_sphere``)."""
    centre, radius = _bounding_sphere(vertices) if sphere is None else sphere
    if not bool(((cameras.position - centre).norm(dim=-1) > radius).all()):
        return False
    faces = faces.long()
    a = faces.reshape(-1)
    b = faces.roll(-1, dims=1).reshape(-1)
    # An edge (i, i) of a degenerate face is its own twin and must occur once.
    loop = a == b
    if bool(loop.any()):
        loops = a[loop]
        if torch.unique(loops).numel() != loops.numel():
            return False
        a, b = a[~loop], b[~loop]
    # One key per directed edge: the undirected edge u above its direction bit. Closed and
    # consistently wound <=> the sorted keys pair up as (2u, 2u + 1): each undirected edge once
    # in each direction.
    key = torch.minimum(a, b).mul_(vertices.shape[0]).add_(torch.maximum(a, b)).mul_(2).add_(a > b)
    if not _keys_pair_up(key):
        return False
    tri = vertices.double().index_select(0, faces.reshape(-1)).view(-1, 3, 3)
    return float((tri[:, 0] * torch.linalg.cross(tri[:, 1], tri[:, 2])).sum()) > 0


def _clip_vertices(verts: torch.Tensor, faces: torch.Tensor, cams: CameraBatch,
                   cull_backfaces: Optional[bool]) -> Tuple[torch.Tensor, bool]:
    """(N, V, 4) clip-space vertices for ``cams`` (near/far planes from :func:`_depth_range`) and
    whether to cull back faces (``None``: only when :func:`_safe_to_cull` says it cannot matter)."""
    sphere = _bounding_sphere(verts)
    near, far = _depth_range(verts, cams, sphere)
    proj = cams.full_projection(near, far).to(verts.dtype)
    clip = torch.einsum("nij,vj->nvi", proj, torch.cat([verts, torch.ones_like(verts[:, :1])], dim=-1))
    if cull_backfaces is None:
        cull_backfaces = _safe_to_cull(verts, faces, cams, sphere)
    return clip, bool(cull_backfaces)


#: CPU renders of at least this many pixels (views x height x width) split their views across
#: ``torch.get_num_threads()`` threads, each rasterising and shading its own views (the images
#: are the same; whole views in parallel scale better than each operation's own threads).
_PARALLEL_MIN_PIXELS = 1 << 17
_POOL: Optional[ThreadPoolExecutor] = None
_POOL_LOCK = threading.Lock()


def _thread_pool(workers: int) -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL._max_workers < workers:
            _POOL = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sharpit-render")
        return _POOL


def _view_chunks(n_views: int, pixels: int, device: torch.device) -> List[Tuple[int, int]]:
    workers = min(torch.get_num_threads(), n_views) if device.type == "cpu" else 1
    if workers <= 1 or n_views * pixels < _PARALLEL_MIN_PIXELS:
        return [(0, n_views)]
    bounds = [round(i * n_views / workers) for i in range(workers + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def _interpolate_corners(values: torch.Tensor, corners: Sequence[torch.Tensor], bary: Sequence[torch.Tensor]):
    """(P,) barycentric blend of the per-vertex ``values`` (V,) at the corners ``corners[k]`` (P,)."""
    out = values.index_select(0, corners[0]).mul_(bary[0])
    for k in (1, 2):
        out.addcmul_(values.index_select(0, corners[k]), bary[k])
    return out


def render_views(mesh: Mesh, cameras: Optional[CameraBatch] = None, size: int = VIEW_SIZE,
                 background: Union[float, Sequence[float]] = 1.0, shading: str = "unlit",
                 supersample: int = 1, backend: str = DEFAULT_BACKEND,
                 cull_backfaces: Optional[bool] = None) -> MultiViewRender:
    """Render ``mesh`` from every camera of ``cameras``.

    Args:
        mesh: the mesh, in the sharpit world frame; rendered on its device (CPU or CUDA).
            Colours come from its texture, else its vertex colours, else a neutral grey.
        cameras: defaults to the six Zero123++ v1.2 cameras (:func:`~sharpit.cameras.zero123plus_cameras`),
            which suit a mesh normalised to radius 0.5 (:func:`~sharpit.mesh.normalize_mesh`).
        size: side of each square view in pixels.
        background: grey level or RGB triple in [0, 1] (white for Sharp-It / InstantMesh).
        shading: "unlit" (albedo as is) or "lambertian" (two-sided, light at the camera, plus ambient).
        supersample: render at ``supersample * size`` and box-filter down (anti-aliasing).
        backend: "torch" (default; sharpit's tested rasteriser) or "pytorch3d" (opt-in, needs
            the pytorch3d package). "auto" is an alias of "torch" kept for old callers: it never
            switches to pytorch3d because pytorch3d happens to be installed.
        cull_backfaces: skip back-facing triangles (about half the work). None (default) culls
            only when that cannot change the result: a closed mesh wound outward, seen from
            outside its bounding sphere. True forces it (wrong for open or inward-wound meshes),
            False disables it.
    Returns:
        a :class:`MultiViewRender`.
    """
    _check_args(mesh, cameras, size, supersample, shading)
    raster = _rasterizer(backend)
    mesh.validate()
    dev = mesh.device
    bg = _background(background, dev)
    cams = (cameras if cameras is not None else zero123plus_cameras()).to(dev)
    n, s = len(cams), size * supersample
    pixels = s * s
    verts, faces = mesh.vertices, mesh.faces

    clip, cull_backfaces = _clip_vertices(verts, faces, cams, cull_backfaces)
    chunks = _view_chunks(n, pixels, dev) if raster is rasterize else [(0, n)]

    index = torch.int32 if verts.shape[0] < 2**31 else torch.int64  # gathers take either
    corners = [faces[:, k].to(index) for k in range(3)]
    # Per-vertex colour attributes, one row per channel: uv or colour (none for constant grey).
    colour = mesh.uvs if mesh.has_texture else mesh.vertex_colors
    colour = None if colour is None else colour.float().T.contiguous()
    lit = shading == "lambertian"
    vertex_nrm = [None]
    # Channels-first outputs; each chunk of views fills its part (background, then the covered
    # pixels) in place.
    images = torch.empty(n, 3, pixels, device=dev)
    fill = (bg.view(1, 3, 1) if supersample == 1 else torch.zeros(1, 3, 1, device=dev))
    alpha = torch.empty(n, 1, pixels, device=dev)
    depth = torch.empty(n, 1, pixels, device=dev)
    nrm = torch.empty(n, 3, pixels, device=dev) if lit else None  # else made when first read
    deferred: List[Tuple[int, int, _Visible]] = []  # the chunks whose normals wait for a read

    def surface_normals(visible: _Visible, vid: List[torch.Tensor]) -> List[torch.Tensor]:
        """Unit normals at the covered pixels: the blended vertex normals, or the face's own
        where those cancel out."""
        if vertex_nrm[0] is None:
            vertex_nrm[0] = vertex_normals(verts, faces).float().T.contiguous()
        normals = [_interpolate_corners(row, vid, visible.bary) for row in vertex_nrm[0]]
        length = torch.addcmul(normals[0] * normals[0], normals[1], normals[1]).addcmul_(normals[2], normals[2]).sqrt_()
        flat = (~(length > 1e-6)).nonzero().squeeze(1)
        if flat.numel():
            own = face_normals(verts, faces.index_select(0, visible.face.index_select(0, flat))).float()
            for c in range(3):
                normals[c].index_copy_(0, flat, own[:, c])
            length.index_copy_(0, flat, torch.linalg.vector_norm(own, dim=-1))
        inv = length.clamp_min_(1e-20).reciprocal_()
        return [v.mul_(inv) for v in normals]

    def write_channels(out: torch.Tensor, target: torch.Tensor, values: Sequence[torch.Tensor]) -> None:
        for c in range(3):
            out.index_copy_(0, target + c * pixels if c else target, values[c])

    def locate(visible: _Visible) -> Tuple[List[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Corner vertices of each covered pixel's face, its view in the chunk, and the flat
        index of its channel 0 in (views, 3, pixels) (channel c is c * pixels on)."""
        vid = [c.index_select(0, visible.face) for c in corners]
        view = torch.div(visible.pix, pixels, rounding_mode="floor")
        return vid, view, (view * (2 * pixels)).add_(visible.pix)

    def shade(lo: int, hi: int, visible: _Visible) -> None:
        images[lo:hi].copy_(fill.expand_as(images[lo:hi]))
        for out in (alpha, depth) + ((nrm,) if lit else ()):
            out[lo:hi].zero_()
        pix, bary = visible.pix, visible.bary
        vid, view, target = locate(visible)
        if mesh.has_texture:
            uv = torch.stack([_interpolate_corners(row, vid, bary) for row in colour], dim=1)
            albedo = sample_texture(mesh.texture, uv).float().T
        elif colour is not None:
            albedo = [_interpolate_corners(row, vid, bary) for row in colour]
        else:
            albedo = [torch.full_like(visible.depth, NEUTRAL_GREY)] * 3
        if lit:  # |n . l| with the light at the camera
            normals = surface_normals(visible, vid)
            in_batch = view + lo
            light = [row.index_select(0, in_batch) for row in light_dir]
            factor = torch.addcmul(normals[0] * light[0], normals[1], light[1]).addcmul_(normals[2], light[2])
            factor = factor.abs_().mul_(1.0 - AMBIENT).add_(AMBIENT)
            albedo = [a * factor for a in albedo]
            write_channels(nrm[lo:hi].view(-1), target, normals)
        else:
            deferred.append((lo, hi, visible))
        write_channels(images[lo:hi].view(-1), target, [a.clamp_(0, 1) for a in albedo])
        alpha[lo:hi].view(-1).index_fill_(0, pix, 1.0)
        depth[lo:hi].view(-1).index_copy_(0, pix, visible.depth)

    light_dir = cams.c2w[:, :3, 2].float().T.contiguous()  # (3, N) toward each camera
    if lit:
        vertex_nrm[0] = vertex_normals(verts, faces).float().T.contiguous()
    if raster is rasterize:
        def run(lo: int, hi: int) -> None:
            shade(lo, hi, _rasterize_visible(clip[lo:hi], faces, s, s, cull_backfaces, DEFAULT_MAX_PAIRS))

        if len(chunks) == 1:
            run(0, n)
        else:
            threads = torch.get_num_threads()
            per_chunk = max(1, threads // len(chunks))

            def run_in_worker(lo: int, hi: int) -> None:
                # Each worker's operations on as many threads as it has cores to itself (the
                # setting is per thread for OpenMP; restored for the pool's next task).
                torch.set_num_threads(per_chunk)
                try:
                    run(lo, hi)
                finally:
                    torch.set_num_threads(threads)

            for future in [_thread_pool(len(chunks)).submit(run_in_worker, lo, hi) for lo, hi in chunks]:
                future.result()
    else:
        shade(0, n, _Visible.from_fragments(raster(clip, faces, s, s, cull_backfaces=cull_backfaces)))

    images, alpha, depth = (t.view(n, -1, s, s) for t in (images, alpha, depth))
    if supersample > 1:  # (with one sample per pixel the background is already in place)
        images, alpha, depth_sum = (F.avg_pool2d(t, supersample) for t in (images, alpha, depth))
        depth = torch.where(alpha > 0, depth_sum / alpha.clamp_min(1e-12), torch.zeros_like(depth_sum))
        images = (images + bg * (1.0 - alpha)).clamp(0, 1)

    def normals_image(nrm: Optional[torch.Tensor]) -> torch.Tensor:
        if nrm is None:
            nrm = torch.zeros(n, 3, pixels, device=dev)
        for lo, hi, visible in deferred:
            vid, _, target = locate(visible)
            write_channels(nrm[lo:hi].view(-1), target, surface_normals(visible, vid))
        deferred.clear()
        out = nrm.view(n, 3, s, s)
        return F.normalize(F.avg_pool2d(out, supersample), dim=1, eps=1e-20) if supersample > 1 else out

    return MultiViewRender(images=images, alpha=alpha, depth=depth, cameras=cams,
                           normals=Deferred(lambda: normals_image(nrm)) if deferred else normals_image(nrm))


def render_grid(mesh: Mesh, cameras: Optional[CameraBatch] = None, size: int = VIEW_SIZE,
                **kwargs) -> Image.Image:
    """Render the six views of ``mesh`` (see :func:`render_views` for the arguments) and tile
    them into the Zero123++ 3x2 grid: an RGB PIL image 2*size wide and 3*size high."""
    return render_views(mesh, cameras, size=size, **kwargs).grid_image()
