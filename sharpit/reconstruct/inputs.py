"""Checking and converting the reconstructor's inputs: the six views and their cameras.

Cameras given as :class:`~sharpit.cameras.CameraBatch` are in the sharpit world frame at the v1.2
scale (the default is :func:`~sharpit.cameras.zero123plus_cameras`, distance 1.866) and are moved
to the triplane frame by dividing positions by ``TRIPLANE_TO_SHARPIT_SCALE``, which puts the
default cameras at InstantMesh's radius 4.0.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional, Union

import torch

from ..cameras import CameraBatch, zero123plus_cameras
from ..errors import InputError
from ..grid import NUM_VIEWS, as_views_tensor
from ..warn import warn
from .config import TRIPLANE_TO_SHARPIT_SCALE

__all__ = ["prepare_views", "cameras_to_triplane_frame", "camera_vectors", "WHITE_BORDER_THRESHOLD"]

#: Views whose border pixels average below this grey level trigger a non-white-background warning.
WHITE_BORDER_THRESHOLD = 0.9
_BORDER = 4


def prepare_views(views) -> torch.Tensor:
    """Coerce the refined grid or six views to (B, 6, 3, 320, 320) float32 in [0, 1].

    Accepts everything :func:`sharpit.grid.as_views_tensor` does (other tile sizes are resized
    with a warning; NaNs, wrong view counts and wrong aspect ratios raise
    :class:`~sharpit.errors.InputError`). Warns when the background does not look white.
    """
    v = as_views_tensor(views)
    border = torch.cat([v[..., :_BORDER, :].flatten(-2), v[..., -_BORDER:, :].flatten(-2),
                        v[..., :, :_BORDER].flatten(-2), v[..., :, -_BORDER:].flatten(-2)], dim=-1)
    level = float(border.mean())
    if level < WHITE_BORDER_THRESHOLD:
        warn(
            f"the views' border pixels average {level:.2f}: the background does not look white. "
            f"The reconstructor was trained on white backgrounds (1.0); composite RGBA views on white "
            f"(sharpit.grid.composite_rgba) or the mesh may get floaters and a dark shell.")
    return v


def cameras_to_triplane_frame(cameras: CameraBatch) -> CameraBatch:
    """Sharpit-frame cameras -> the same cameras in the triplane frame (positions / scale)."""
    c2w = cameras.c2w.clone()
    c2w[:, :3, 3] = c2w[:, :3, 3] / TRIPLANE_TO_SHARPIT_SCALE
    return replace(cameras, c2w=c2w, distance=cameras.distance / TRIPLANE_TO_SHARPIT_SCALE)


def camera_vectors(cameras: Optional[Union[CameraBatch, torch.Tensor]], batch: int,
                   device=None) -> torch.Tensor:
    """(B, 6, 16) InstantMesh camera vectors in the triplane frame.

    Args:
        cameras: None (the v1.2 cameras), a sharpit-frame :class:`CameraBatch` of 6 cameras, or a
            (6, 16) / (B, 6, 16) tensor of InstantMesh vectors already in the triplane frame.
        batch: number of objects B.
    """
    if cameras is None:
        cameras = zero123plus_cameras("v1.2")
    if isinstance(cameras, CameraBatch):
        if len(cameras) != NUM_VIEWS:
            raise InputError(f"expected {NUM_VIEWS} cameras (one per view), got {len(cameras)}")
        vec = cameras_to_triplane_frame(cameras).instantmesh_vectors()
    elif isinstance(cameras, torch.Tensor):
        vec = cameras
    else:
        raise InputError(f"cameras must be a CameraBatch, a tensor or None, got {type(cameras).__name__}")
    if vec.ndim == 2:
        vec = vec[None]
    if vec.ndim != 3 or vec.shape[1:] != (NUM_VIEWS, 16):
        raise InputError(f"camera vectors must have shape (6, 16) or (B, 6, 16), got {tuple(vec.shape)}")
    if not bool(torch.isfinite(vec).all()):
        raise InputError("camera vectors contain NaN or inf values")
    if vec.shape[0] not in (1, batch):
        raise InputError(f"got camera vectors for {vec.shape[0]} objects but {batch} sets of views")
    return vec.to(device=device, dtype=torch.float32).expand(batch, -1, -1)
