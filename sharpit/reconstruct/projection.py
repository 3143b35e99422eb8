"""Texture colours taken from the views themselves: project surface points into every view, keep
the views that see them, and blend by how squarely each view sees the surface.

The sharpened views carry more detail than the reconstructor's colour field (a 64^2 triplane
decoded by a small MLP), so texels that a view sees are coloured from the views; texels no view
sees keep the field's colour. Visibility is a depth test against the mesh rendered from each
camera, so an occluded point never takes the colour of what hides it.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ..cameras import CameraBatch, zero123plus_cameras
from ..errors import InputError
from ..mesh import Mesh

__all__ = ["ViewProjector"]


class ViewProjector:
    """Blends the colours of surface points seen in a set of views.

    Args:
        mesh: the surface the views show, in the cameras' world frame.
        views: (N, 3, H, W) images in [0, 1] (e.g. the six refined views).
        cameras: their cameras (default: the six Zero123++ v1.2 cameras).
        sharpness: weight of a view is ``cos(angle between normal and view direction) ** sharpness``.
        depth_tolerance: how far (world units) a point may lie behind the rendered surface and still
            count as visible (the object has radius 0.5; grazing angles need some slack).
        full_weight: total weight at which the views' colour fully replaces the fallback colour;
            below it the two are mixed, so view coverage fades out without a seam.
    """

    def __init__(self, mesh: Mesh, views: torch.Tensor, cameras: Optional[CameraBatch] = None,
                 sharpness: float = 4.0, depth_tolerance: float = 0.01, full_weight: float = 0.3):
        from ..render import render_views

        if views.ndim != 4 or views.shape[1] != 3:
            raise InputError(f"views must be (N, 3, H, W), got {tuple(views.shape)}")
        cameras = zero123plus_cameras() if cameras is None else cameras
        if len(cameras) != views.shape[0]:
            raise InputError(f"got {views.shape[0]} views for {len(cameras)} cameras")
        self.views = views.float().to(mesh.device)
        self.cameras = cameras.to(mesh.device)
        self.depth = render_views(mesh, self.cameras, size=views.shape[-2]).depth   # (N, 1, H, W)
        self.sharpness, self.depth_tolerance, self.full_weight = sharpness, depth_tolerance, full_weight

    def blend(self, points: torch.Tensor, normals: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
        """(P, 3) colours: the views' weighted colour where they see ``points`` (outward unit
        ``normals``), mixed into ``fallback`` (P, 3) where the total weight is under ``full_weight``."""
        h, w = self.views.shape[-2:]
        uv, depth = self.cameras.project(points, h, w)                     # (N, P, 2), (N, P)
        grid = torch.stack([uv[..., 0] / w * 2 - 1, uv[..., 1] / h * 2 - 1], -1)[:, :, None]
        colours = F.grid_sample(self.views, grid, mode="bilinear", align_corners=False)[..., 0]    # (N, 3, P)
        surface = F.grid_sample(self.depth, grid, mode="nearest", align_corners=False)[:, 0, :, 0]  # (N, P)
        inside = (grid[:, :, 0].abs() <= 1).all(-1)
        visible = inside & (depth > 0) & (surface > 0) & (depth <= surface + self.depth_tolerance)
        towards = F.normalize(self.cameras.position[:, None, :] - points[None], dim=-1)
        cos = (normals[None] * towards).sum(-1).clamp_min(0)
        weight = torch.where(visible, cos ** self.sharpness, torch.zeros_like(cos))           # (N, P)
        total = weight.sum(0)
        seen = (weight[:, None] * colours).sum(0).T / total.clamp_min(1e-12)[:, None]        # (P, 3)
        mix = (total / self.full_weight).clamp(0, 1)[:, None]
        return mix * seen + (1 - mix) * fallback
