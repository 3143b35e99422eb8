"""Triangle meshes passed between sharpit's stages, and their normalisation.

Coordinates are in the sharpit world frame (+z up, front +x; see :mod:`sharpit.cameras`)
unless a function says otherwise. File I/O lives in :mod:`sharpit.mesh_io`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional

import torch

from .cameras import OBJECT_RADIUS
from .errors import InputError, MeshError

__all__ = ["Mesh", "Similarity", "normalize_mesh"]


@dataclass
class Mesh:
    """A triangle mesh with optional vertex colours or a UV texture.

    Attributes:
        vertices: (V, 3) float32 positions.
        faces: (F, 3) int64 vertex indices, counter-clockwise seen from outside.
        vertex_colors: optional (V, 3) float32 colours in [0, 1], **sRGB (display) space**, as
            rendered and shown; file formats that store linear colours (glTF ``COLOR_0``) are
            converted on read and write (:mod:`sharpit.colors`, :mod:`sharpit.mesh_io`).
        uvs: optional (V, 2) float32 texture coordinates, origin at the image's bottom-left
            (OpenGL/OBJ convention: ``v`` grows upwards).
        texture: optional (H, W, 3) float32 sRGB texture image in [0, 1], row 0 at the top.
        source: the file the mesh was read from, when known (used in error messages).
    """

    vertices: torch.Tensor
    faces: torch.Tensor
    vertex_colors: Optional[torch.Tensor] = None
    uvs: Optional[torch.Tensor] = None
    texture: Optional[torch.Tensor] = None
    source: Optional[str] = field(default=None, compare=False)

    def __post_init__(self):
        self.vertices = torch.as_tensor(self.vertices).to(torch.float32)
        self.faces = torch.as_tensor(self.faces).to(torch.int64)
        if self.vertex_colors is not None:
            self.vertex_colors = torch.as_tensor(self.vertex_colors).to(torch.float32)
        if self.uvs is not None:
            self.uvs = torch.as_tensor(self.uvs).to(torch.float32)
        if self.texture is not None:
            self.texture = torch.as_tensor(self.texture).to(torch.float32)

    @property
    def num_vertices(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])

    @property
    def has_texture(self) -> bool:
        return self.uvs is not None and self.texture is not None

    @property
    def device(self) -> torch.device:
        return self.vertices.device

    def to(self, device) -> "Mesh":
        """A copy with every tensor on ``device``."""
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return replace(self, vertices=move(self.vertices), faces=move(self.faces),
                       vertex_colors=move(self.vertex_colors), uvs=move(self.uvs),
                       texture=move(self.texture))

    def validate(self) -> "Mesh":
        """Check shapes, finiteness, index range and non-degeneracy; return ``self``.

        Raises:
            MeshError: naming :attr:`source` and the problem.
        """
        src = self.source
        v, f = self.vertices, self.faces
        if v.ndim != 2 or v.shape[1] != 3:
            raise MeshError(f"vertices must have shape (V, 3), got {tuple(v.shape)}", src)
        if f.ndim != 2 or f.shape[1] != 3:
            raise MeshError(f"faces must have shape (F, 3) (triangles), got {tuple(f.shape)}", src)
        if v.shape[0] == 0 or f.shape[0] == 0:
            raise MeshError(f"mesh is empty ({v.shape[0]} vertices, {f.shape[0]} faces)", src)
        if not bool(torch.isfinite(v).all()):
            bad = int((~torch.isfinite(v)).any(dim=1).sum())
            raise MeshError(f"{bad} vertices have NaN or inf coordinates", src)
        lo, hi = int(f.min()), int(f.max())
        if lo < 0 or hi >= v.shape[0]:
            raise MeshError(f"face indices must lie in [0, {v.shape[0] - 1}], found [{lo}, {hi}]", src)
        for name, n_cols in (("vertex_colors", 3), ("uvs", 2)):
            t = getattr(self, name)
            if t is not None and tuple(t.shape) != (v.shape[0], n_cols):
                raise MeshError(f"{name} must have shape ({v.shape[0]}, {n_cols}), got {tuple(t.shape)}", src)
            if t is not None and not bool(torch.isfinite(t).all()):
                raise MeshError(f"{name} contain NaN or inf values", src)
        if (self.uvs is None) != (self.texture is None):
            raise MeshError("uvs and texture must be given together", src)
        if self.texture is not None and (self.texture.ndim != 3 or self.texture.shape[2] != 3):
            raise MeshError(f"texture must have shape (H, W, 3), got {tuple(self.texture.shape)}", src)
        tri = v[f]
        area2 = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]).norm(dim=-1)
        extent = float((v.max(0).values - v.min(0).values).max())
        if extent <= 0 or not bool((area2 > 1e-12 * max(extent, 1e-30) ** 2).any()):
            raise MeshError("mesh is degenerate: every face has zero area", src)
        return self

    def transformed(self, transform: "Similarity") -> "Mesh":
        """A copy with vertices mapped by ``transform`` (colours and UVs unchanged)."""
        return replace(self, vertices=transform.apply(self.vertices))

    def bounds(self) -> torch.Tensor:
        """(2, 3) axis-aligned bounding box ``[min, max]``."""
        return torch.stack([self.vertices.min(0).values, self.vertices.max(0).values])


@dataclass(frozen=True)
class Similarity:
    """``x -> scale * (x @ rotation.T) + translation``: rotation, uniform scale, translation.

    Attributes:
        rotation: (3, 3) float64 proper rotation.
        scale: positive uniform scale.
        translation: (3,) float64.
    """

    rotation: torch.Tensor
    scale: float
    translation: torch.Tensor

    @staticmethod
    def identity() -> "Similarity":
        return Similarity(torch.eye(3, dtype=torch.float64), 1.0, torch.zeros(3, dtype=torch.float64))

    def apply(self, points: torch.Tensor) -> torch.Tensor:
        """Map (..., 3) points; the result keeps the input's dtype and device."""
        r = self.rotation.to(device=points.device, dtype=torch.float64)
        t = self.translation.to(device=points.device, dtype=torch.float64)
        return (self.scale * (points.double() @ r.T) + t).to(points.dtype)

    def inverse(self) -> "Similarity":
        r_inv = self.rotation.T
        return Similarity(r_inv, 1.0 / self.scale, -(r_inv @ self.translation) / self.scale)

    def compose(self, first: "Similarity") -> "Similarity":
        """The transform applying ``first`` and then ``self``."""
        return Similarity(self.rotation @ first.rotation, self.scale * first.scale,
                          self.scale * (self.rotation @ first.translation) + self.translation)

    def to_matrix(self) -> torch.Tensor:
        """(4, 4) float64 homogeneous matrix."""
        m = torch.eye(4, dtype=torch.float64)
        m[:3, :3] = self.scale * self.rotation
        m[:3, 3] = self.translation
        return m


def normalize_mesh(mesh: Mesh, radius: float = OBJECT_RADIUS) -> "tuple[Mesh, Similarity]":
    """Centre ``mesh`` on its bounding-box centre and scale it so its bounding sphere (about that
    centre) has ``radius`` (0.5, the Zero123++ v1.2 scale).

    Returns:
        ``(normalized_mesh, transform)`` where ``transform`` maps original coordinates to
        normalised ones; ``transform.inverse()`` puts a result back into the asset's frame and size.
    """
    if radius <= 0:
        raise InputError(f"radius must be > 0, got {radius}")
    mesh.validate()
    v = mesh.vertices.double()
    center = (v.min(0).values + v.max(0).values) / 2.0
    extent = float((v - center).norm(dim=-1).max())
    scale = radius / extent
    transform = Similarity(torch.eye(3, dtype=torch.float64), scale, -scale * center.cpu())
    return mesh.transformed(transform), transform
