"""Surface attributes for the renderer: normals, texture look-ups and simple shading."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..colors import NEUTRAL_GREY

__all__ = ["face_normals", "vertex_normals", "sample_texture", "lambertian", "NEUTRAL_GREY",
           "AMBIENT"]

#: Ambient share of the lambertian shading: ``AMBIENT + (1 - AMBIENT) * |n . l|``.
AMBIENT = 0.3


def face_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(F, 3) unit normals of counter-clockwise faces (zero for degenerate faces).

    Args:
        vertices: (V, 3) positions; faces: (F, 3) vertex indices.
    """
    tri = vertices.index_select(0, faces.reshape(-1)).view(-1, 3, 3)
    n = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    return F.normalize(n, dim=-1, eps=1e-20)


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(V, 3) unit vertex normals: the area-weighted mean of the adjacent face normals
    (zero for vertices used by no face of non-zero area)."""
    tri = vertices.index_select(0, faces.reshape(-1)).view(-1, 3, 3)
    n = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # length = 2 * area
    acc = torch.zeros_like(vertices)
    acc.index_add_(0, faces.reshape(-1), n.repeat_interleave(3, dim=0))
    return F.normalize(acc, dim=-1, eps=1e-20)


def sample_texture(texture: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear texture look-up with repeat wrapping.

    Args:
        texture: (Ht, Wt, C) image, row 0 at the top.
        uv: (P, 2) coordinates with the origin at the image's bottom-left (``v`` up); values
            outside [0, 1] wrap around (glTF's default ``REPEAT``).
    Returns:
        (P, C) sampled values.
    """
    outside = (uv < 0) | (uv > 1)
    uv = torch.where(outside, uv - torch.floor(uv), uv)
    grid = torch.stack([uv[:, 0] * 2.0 - 1.0, 1.0 - uv[:, 1] * 2.0], dim=-1)
    image = texture.permute(2, 0, 1)[None].to(uv.dtype)
    out = F.grid_sample(image, grid[None, :, None], mode="bilinear", padding_mode="border",
                        align_corners=False)
    return out[0, :, :, 0].T


def lambertian(albedo: torch.Tensor, normals: torch.Tensor, light_dir: torch.Tensor) -> torch.Tensor:
    """Two-sided lambertian shading with an ambient term.

    Args:
        albedo: (P, 3) colours; normals: (P, 3) unit normals; light_dir: (P, 3) unit vectors
            toward the light.
    Returns:
        (P, 3) ``albedo * (AMBIENT + (1 - AMBIENT) * |n . l|)``.
    """
    cos = (normals * light_dir).sum(-1, keepdim=True).abs()
    return albedo * (AMBIENT + (1.0 - AMBIENT) * cos)
