"""Shap-E's implicit fields: a latent turned into the weights of the renderer's MLP, queried as a
signed distance and texture colour (STF) or volume-rendered (NeRF).

Shap-E frame: z up, the object inside the box ``[-1, 1]^3`` (normalised so the longest side of its
bounding box is 1). The signed distance is positive inside and negative outside (diffusers closes
surfaces with a -1 border, so do we). Colours are sRGB in [0, 1].
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from ..cameras import OBJECT_RADIUS, SHAP_E_TO_SHARPIT, shap_e_to_sharpit
from ..isosurface import extract_mesh
from ..mesh import Mesh, Similarity, normalize_mesh

__all__ = ["load_latent_into_mlp", "stf_fields", "stf_mesh", "frame_mesh", "SHAP_E_BOX"]

#: The box Shap-E decodes in (Shap-E frame), as (lo, hi) per axis.
SHAP_E_BOX = (-1.0, 1.0)

FieldFn = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def load_latent_into_mlp(renderer, latent: torch.Tensor) -> None:
    """Project one latent into the weights of ``renderer.mlp`` (diffusers' mechanism).

    Args:
        renderer: a diffusers ``ShapERenderer``.
        latent: (W,) with ``W = sum(rows of param_shapes) * d_latent``.
    The projected matrices overwrite ``renderer.mlp.mlp.{0..3}.weight`` in place; every later
    query of ``renderer.mlp`` evaluates this latent's field.
    """
    cfg = renderer.config
    rows = sum(int(shape[0]) for shape in cfg.param_shapes)
    x = latent.reshape(1, rows, cfg.d_latent).to(device=renderer.device, dtype=renderer.dtype)
    params = renderer.params_proj(x)
    for name, param in renderer.mlp.named_parameters():
        key = f"nerstf.{name}"
        if key in params:
            param.copy_(params[key][0])


def stf_fields(renderer) -> "tuple[FieldFn, FieldFn]":
    """The signed-distance and colour fields of the latent loaded by :func:`load_latent_into_mlp`.

    Returns:
        ``(sdf, color)``: (P, 3) Shap-E-frame points -> (P,) signed distance in [-1, 1]
        (positive inside; -1 on the faces of the box, which closes every surface) and
        (P, 3) -> (P, 3) sRGB colours in [0, 1].
    """
    mlp = renderer.mlp
    lo, hi = SHAP_E_BOX

    def query(points: torch.Tensor):
        pts = points.to(device=renderer.device, dtype=mlp.dtype)[None]
        return mlp(position=pts, direction=None, ts=None, nerf_level="fine", rendering_mode="stf")

    def sdf(points: torch.Tensor) -> torch.Tensor:
        values = query(points).signed_distance[0, :, 0].float()
        on_box = ((points <= lo) | (points >= hi)).any(dim=-1)
        return torch.where(on_box.to(values.device), torch.full_like(values, -1.0), values)

    def color(points: torch.Tensor) -> torch.Tensor:
        return query(points).channels[0].float()

    return sdf, color


def stf_mesh(sdf: FieldFn, color: Optional[FieldFn], grid_size: int, device=None,
             chunk: int = 131072) -> Mesh:
    """Marching cubes of ``sdf``'s zero level on a ``grid_size^3`` grid over the Shap-E box,
    vertex-coloured by ``color``. The mesh stays in the Shap-E frame and size.

    Raises:
        EmptySurfaceError: when the field never crosses zero inside the box.
    """
    lo, hi = SHAP_E_BOX
    return extract_mesh(sdf, grid_size, level=0.0, lo=lo, hi=hi, inside="above", color_fn=color,
                        device=device, chunk=chunk)


def frame_mesh(mesh: Mesh, radius: float = OBJECT_RADIUS) -> "tuple[Mesh, Similarity]":
    """Move a Shap-E-frame mesh into the sharpit world: rotate with
    :func:`~sharpit.cameras.shap_e_to_sharpit`, then centre and scale it so its bounding sphere
    has ``radius`` (:func:`~sharpit.mesh.normalize_mesh`).

    Returns:
        ``(mesh, framing)`` where ``framing`` maps Shap-E-frame points to the sharpit world
        (``framing.rotation`` is :data:`~sharpit.cameras.SHAP_E_TO_SHARPIT`).
    """
    rotated = Mesh(shap_e_to_sharpit(mesh.vertices), mesh.faces, vertex_colors=mesh.vertex_colors)
    normalized, scaling = normalize_mesh(rotated, radius)
    rotation = Similarity(SHAP_E_TO_SHARPIT.double(), 1.0, torch.zeros(3, dtype=torch.float64))
    return normalized, scaling.compose(rotation)
