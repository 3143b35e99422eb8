"""A differentiable render of a fixed mesh's UV texture: gradients flow from the images to the texels.

The rasterisation (which face each pixel sees, and where in it) is the fast, non-differentiable
one of :func:`~sharpit.render.render_views` (same clip space, depth range, culling rule and
coverage); it depends only on the mesh and the cameras, so :func:`rasterize_texture_coords` runs
it once and keeps the per-pixel texture coordinates (:class:`TextureFragments`). The colour
look-up, :func:`render_texture`, is plain autograd: bilinear texture sampling
(:func:`~sharpit.render.sample_texture`, ``grid_sample``) at those coordinates, scattered into the
images, box-filtered when supersampled and composited on the background. Its images equal the
unlit images of :func:`~sharpit.render.render_views` for the same textured mesh (up to float
rounding; ``tests/test_render_grad.py``) and its gradient with respect to the texture is exact
(``torch.autograd.gradcheck`` in float64).

Not differentiable: vertex positions and UVs (the barycentrics are constants), so silhouettes do
not move under the gradient; the optimisation built on it (:mod:`sharpit.optimize`) changes
colours only.

Memory: a :class:`TextureFragments` holds 16 bytes per covered sample (an int64 pixel index and
two float32 texture coordinates), about 11 MB for six 320x320 views supersampled twice of an
object filling a third of each view; :func:`render_texture` keeps, for the backward pass, the
sampled colours (12 bytes per covered sample) and the output images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

from ..cameras import VIEW_SIZE, CameraBatch, zero123plus_cameras
from ..errors import InputError, MeshError
from ..mesh import Mesh
from .rasterizer import DEFAULT_MAX_PAIRS, _rasterize_visible
from .renderer import _background, _check_args, _clip_vertices, _interpolate_corners
from .shading import sample_texture

__all__ = ["TextureFragments", "rasterize_texture_coords", "render_texture"]


@dataclass
class TextureFragments:
    """Where each covered sample of ``N`` views looks up the texture.

    Attributes:
        pix: (P,) int64 flat sample index ``(view * S + row) * S + column`` over the supersampled
            ``S = size * supersample`` views.
        uv: (P, 2) float32 texture coordinates there (origin bottom-left, as :class:`~sharpit.mesh.Mesh`).
        num_views, size, supersample: the render's shape: ``num_views`` views of ``size`` pixels.
    """

    pix: torch.Tensor
    uv: torch.Tensor
    num_views: int
    size: int
    supersample: int

    @property
    def coverage(self) -> torch.Tensor:
        """(N, 1, size, size) float32 fraction of each pixel's samples that hit the mesh."""
        s = self.size * self.supersample
        hit = torch.zeros(self.num_views * s * s, device=self.pix.device).index_fill_(0, self.pix, 1.0)
        hit = hit.view(self.num_views, 1, s, s)
        return F.avg_pool2d(hit, self.supersample) if self.supersample > 1 else hit


def rasterize_texture_coords(mesh: Mesh, cameras: Optional[CameraBatch] = None, size: int = VIEW_SIZE,
                             supersample: int = 1, cull_backfaces: Optional[bool] = None) -> TextureFragments:
    """Rasterise a UV-mapped mesh once and keep each covered sample's texture coordinates.

    Args:
        mesh: a mesh with ``uvs`` (its texture may be absent: :func:`render_texture` takes the
            texture to draw), in the sharpit world frame.
        cameras: default the six Zero123++ v1.2 cameras.
        size, supersample, cull_backfaces: as in :func:`~sharpit.render.render_views` (the same
            coverage for the same values).
    Returns:
        :class:`TextureFragments` on the mesh's device (no autograd history).
    Raises:
        MeshError: the mesh has no UVs.
    """
    _check_args(mesh, cameras, size, supersample, "unlit")
    if mesh.uvs is None:
        raise MeshError("the mesh has no UV coordinates to look its texture up with; give it UVs "
                        "(sharpit.reconstruct.texture.bake_texture lays them out)", mesh.source)
    mesh.validate()
    dev = mesh.device
    cams = (cameras if cameras is not None else zero123plus_cameras()).to(dev)
    s = size * supersample
    with torch.no_grad():
        clip, cull = _clip_vertices(mesh.vertices, mesh.faces, cams, cull_backfaces)
        visible = _rasterize_visible(clip, mesh.faces, s, s, cull, DEFAULT_MAX_PAIRS)
        index = torch.int32 if mesh.num_vertices < 2**31 else torch.int64
        corners = [mesh.faces[:, k].to(index).index_select(0, visible.face) for k in range(3)]
        rows = mesh.uvs.float().T.contiguous()
        uv = torch.stack([_interpolate_corners(row, corners, visible.bary) for row in rows], dim=1)
    return TextureFragments(pix=visible.pix, uv=uv, num_views=len(cams), size=size, supersample=supersample)


def render_texture(fragments: TextureFragments, texture: torch.Tensor,
                   background: Union[float, Sequence[float]] = 1.0) -> torch.Tensor:
    """Unlit images of a texture at the rasterised samples, differentiable with respect to ``texture``.

    Args:
        fragments: from :func:`rasterize_texture_coords`.
        texture: (Ht, Wt, 3) texels in [0, 1] (row 0 at the top), float32 or float64, possibly
            requiring grad. Values are not clamped (a clamp would stop the gradient at the
            bounds): keep them in range, e.g. by projecting after each optimiser step as
            :mod:`sharpit.optimize` does (:func:`~sharpit.optimize.texture.project_texture`).
        background: grey level or RGB triple in [0, 1].
    Returns:
        (N, 3, size, size) images in ``texture``'s dtype: each pixel the mean of its samples'
        bilinear texture colours, uncovered samples showing the background.
    """
    if not isinstance(texture, torch.Tensor) or texture.ndim != 3 or texture.shape[-1] != 3 \
            or not texture.is_floating_point():
        raise InputError(f"texture must be an (H, W, 3) floating-point tensor, got "
                         f"{tuple(texture.shape) if isinstance(texture, torch.Tensor) else type(texture).__name__}")
    if texture.device != fragments.pix.device:
        raise InputError(f"texture is on {texture.device} but the fragments on {fragments.pix.device}")
    n, s, ss = fragments.num_views, fragments.size * fragments.supersample, fragments.supersample
    bg = _background(background, texture.device).to(texture.dtype)
    colours = sample_texture(texture, fragments.uv.to(texture.dtype))            # (P, 3)
    flat = torch.zeros(n * s * s, 3, dtype=texture.dtype, device=texture.device)
    flat = flat.index_copy(0, fragments.pix, colours)
    images = flat.view(n, s, s, 3).permute(0, 3, 1, 2)
    alpha = fragments.coverage.to(texture.dtype)
    if ss > 1:
        images = F.avg_pool2d(images, ss)
    return images + bg * (1.0 - alpha)
