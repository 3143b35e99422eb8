"""Optional rasteriser backend on pytorch3d's ``rasterize_meshes``, with the outputs and
conventions of :func:`sharpit.render.rasterizer.rasterize`.

pytorch3d's screen space has +x to the LEFT, +y up and z the depth used for the z-buffer and
the perspective correction. We feed it ``(-x_ndc * W / m, y_ndc * H / m, w)`` with
``m = min(H, W)`` (its NDC spans [-1, 1] along the shorter side), so its pixel centres coincide
with ours and ``w`` (the view-space depth for an OpenGL projection) drives both. Culling and
the removal of triangles with a vertex at or behind the camera plane are done here, per view,
exactly as in the torch backend; unlike it, fragments outside the NDC depth range are kept.
"""

from __future__ import annotations

import torch
from pytorch3d.renderer.mesh.rasterize_meshes import rasterize_meshes
from pytorch3d.structures import Meshes

from .rasterizer import Fragments, _check_inputs

__all__ = ["rasterize_pytorch3d"]


def rasterize_pytorch3d(clip_vertices: torch.Tensor, faces: torch.Tensor, height: int, width: int,
                        cull_backfaces: bool = False) -> Fragments:
    """Same contract as :func:`sharpit.render.rasterizer.rasterize` (without ``max_pairs``)."""
    _check_inputs(clip_vertices, faces, height, width)
    faces = faces.long()
    clip = clip_vertices.float()
    w = clip[..., 3]
    safe_w = torch.where(w > 0, w, torch.ones_like(w))
    ndc = clip[..., :2] / safe_w[..., None]
    m = float(min(height, width))
    verts = torch.stack([-ndc[..., 0] * (width / m), ndc[..., 1] * (height / m), w], dim=-1)

    tri = ndc[:, faces]  # (N, F, 3, 2)
    area = ((tri[..., 1, 0] - tri[..., 0, 0]) * (tri[..., 2, 1] - tri[..., 0, 1])
            - (tri[..., 1, 1] - tri[..., 0, 1]) * (tri[..., 2, 0] - tri[..., 0, 0]))  # > 0: CCW
    keep = (w[:, faces] > 0).all(-1)
    if cull_backfaces:
        keep &= area > 0
    kept = [keep[i].nonzero(as_tuple=True)[0] for i in range(clip.shape[0])]
    meshes = Meshes(verts=list(verts), faces=[faces[k] for k in kept])
    p2f, zbuf, bary, _ = rasterize_meshes(meshes, image_size=(height, width), blur_radius=0.0,
                                          faces_per_pixel=1, perspective_correct=True,
                                          cull_backfaces=False)
    p2f, zbuf, bary = p2f[..., 0], zbuf[..., 0], bary[..., 0, :]
    lookup = torch.cat(kept)  # packed face index -> index into ``faces``
    hit = p2f >= 0
    pix_to_face = torch.where(hit, lookup[p2f.clamp(min=0)], torch.full_like(p2f, -1))
    bary = torch.where(hit[..., None], bary, torch.zeros_like(bary))
    depth = torch.where(hit, zbuf, torch.zeros_like(zbuf))
    return Fragments(pix_to_face, bary.float(), depth.float())
