"""Multi-view rendering of a :class:`~sharpit.mesh.Mesh`, by default at the six Zero123++ v1.2 poses.

Frames: meshes and cameras are in the sharpit world frame (+z up, front +x; see
:mod:`sharpit.cameras`). Images are channels-first with row 0 at the top.

Backends: ``"torch"`` (the default) is sharpit's own PyTorch rasteriser, the one the tests,
benchmarks and parity checks run. ``"pytorch3d"`` is opt-in only: it needs the pytorch3d package,
and its comparison with the torch backend (``tests/test_render.py``) runs only where pytorch3d is
installed, which sharpit's own test setup does not do. ``"auto"`` is kept for old callers and
means ``"torch"``; installing pytorch3d never changes the backend silently.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from PIL import Image

from ..cameras import VIEW_SIZE, CameraBatch, zero123plus_cameras
from ..errors import InputError
from ..grid import NUM_VIEWS, tensor_to_pil, views_to_grid
from ..mesh import Mesh
from .rasterizer import Fragments, rasterize
from .shading import NEUTRAL_GREY, face_normals, lambertian, sample_texture, vertex_normals

__all__ = ["MultiViewRender", "render_views", "render_grid", "available_backends", "SHADING_MODES",
           "BACKENDS", "DEFAULT_BACKEND"]

SHADING_MODES = ("unlit", "lambertian")
BACKENDS = ("torch", "pytorch3d", "auto")
#: The rasteriser used unless ``backend="pytorch3d"`` is asked for explicitly ("auto" means this).
DEFAULT_BACKEND = "torch"


@dataclass
class MultiViewRender:
    """The result of :func:`render_views` for ``N`` cameras at ``H x W`` pixels.

    Attributes:
        images: (N, 3, H, W) float32 in [0, 1], composited on the background.
        alpha: (N, 1, H, W) float32 coverage in [0, 1] (fractional on edges when supersampled).
        depth: (N, 1, H, W) float32 positive distance from the camera along its viewing axis,
            averaged over the covered samples of a pixel; 0 where empty.
        normals: (N, 3, H, W) float32 unit world-space surface normals (as wound: outward for
            counter-clockwise faces), 0 where empty.
        cameras: the :class:`~sharpit.cameras.CameraBatch` rendered.
    """

    images: torch.Tensor
    alpha: torch.Tensor
    depth: torch.Tensor
    normals: torch.Tensor
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


def _depth_range(vertices: torch.Tensor, cameras: CameraBatch) -> Tuple[float, float]:
    """Near and far planes enclosing the mesh's bounding sphere for every camera."""
    lo, hi = vertices.min(0).values, vertices.max(0).values
    centre = (lo + hi) / 2.0
    radius = float((vertices - centre).norm(dim=-1).max()) * 1.05 + 1e-6
    d = -cameras.world_to_camera(centre[None])[:, 0, 2]
    near = max(float(d.min()) - radius, 1e-4 * (float(d.max()) + radius))
    far = float(d.max()) + radius
    return near, far


def _safe_to_cull(vertices: torch.Tensor, faces: torch.Tensor, cameras: CameraBatch) -> bool:
    """True when back-face culling cannot change the image: the mesh is closed and consistently
    wound outward (every directed edge has exactly one reverse twin, positive signed volume) and
    every camera is outside its bounding sphere."""
    lo, hi = vertices.min(0).values, vertices.max(0).values
    centre = (lo + hi) / 2.0
    radius = (vertices - centre).norm(dim=-1).max()
    if not bool(((cameras.position - centre).norm(dim=-1) > radius).all()):
        return False
    n = vertices.shape[0]
    edges = faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    forward = torch.sort(edges[:, 0] * n + edges[:, 1]).values
    if bool((forward[1:] == forward[:-1]).any()):
        return False
    if not torch.equal(forward, torch.sort(edges[:, 1] * n + edges[:, 0]).values):
        return False
    tri = vertices.index_select(0, faces.reshape(-1)).view(-1, 3, 3).double()
    return float((tri[:, 0] * torch.linalg.cross(tri[:, 1], tri[:, 2])).sum()) > 0


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
    verts, faces = mesh.vertices, mesh.faces

    near, far = _depth_range(verts, cams)
    proj = cams.full_projection(near, far).to(verts.dtype)
    clip = torch.einsum("nij,vj->nvi", proj, torch.cat([verts, torch.ones_like(verts[:, :1])], dim=-1))
    if cull_backfaces is None:
        cull_backfaces = _safe_to_cull(verts, faces, cams)
    frags = raster(clip, faces, s, s, cull_backfaces=bool(cull_backfaces))

    flat = frags.pix_to_face.reshape(-1)
    pix = (flat >= 0).nonzero().squeeze(1)
    face = flat.index_select(0, pix)
    view = torch.div(pix, s * s, rounding_mode="floor")
    bary = frags.bary.reshape(-1, 3).index_select(0, pix)[..., None]
    vid = faces.index_select(0, face).reshape(-1)

    def interp(values: torch.Tensor) -> torch.Tensor:
        return (values.index_select(0, vid).view(-1, 3, values.shape[-1]) * bary).sum(1)

    if mesh.has_texture:
        albedo = sample_texture(mesh.texture, interp(mesh.uvs))
    elif mesh.vertex_colors is not None:
        albedo = interp(mesh.vertex_colors)
    else:
        albedo = torch.full((pix.shape[0], 3), NEUTRAL_GREY, device=dev)
    normals = interp(vertex_normals(verts, faces))
    flat_n = face_normals(verts, faces).index_select(0, face)
    normals = torch.where(normals.norm(dim=-1, keepdim=True) > 1e-6, normals, flat_n)
    normals = F.normalize(normals, dim=-1, eps=1e-20)
    color = albedo if shading == "unlit" else lambertian(albedo, normals, cams.c2w[:, :3, 2].index_select(0, view))

    def to_image(values: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(n * s * s, values.shape[-1], dtype=torch.float32, device=dev)
        return out.index_copy_(0, pix, values.float()).view(n, s, s, -1).permute(0, 3, 1, 2)

    rgb = to_image(color.clamp(0, 1))
    alpha = frags.mask.float()[:, None]
    depth = frags.depth[:, None]
    nrm = to_image(normals)
    if supersample > 1:
        rgb, alpha, depth, nrm = (F.avg_pool2d(t, supersample) for t in (rgb, alpha, depth, nrm))
        covered = alpha > 0
        depth = torch.where(covered, depth / alpha.clamp_min(1e-12), torch.zeros_like(depth))
        nrm = F.normalize(nrm, dim=1, eps=1e-20)
    images = (rgb + bg * (1.0 - alpha)).clamp(0, 1)
    return MultiViewRender(images=images, alpha=alpha, depth=depth, normals=nrm, cameras=cams)


def render_grid(mesh: Mesh, cameras: Optional[CameraBatch] = None, size: int = VIEW_SIZE,
                **kwargs) -> Image.Image:
    """Render the six views of ``mesh`` (see :func:`render_views` for the arguments) and tile
    them into the Zero123++ 3x2 grid: an RGB PIL image 2*size wide and 3*size high."""
    return render_views(mesh, cameras, size=size, **kwargs).grid_image()
