"""Cameras and coordinate frames: the one place where sharpit's conventions live.

sharpit world frame
    Right-handed, +z up. An asset's front faces +x (the azimuth-0 direction). A camera at
    azimuth ``a``, elevation ``e`` (degrees) and distance ``r`` sits at
    ``r * (cos e cos a, cos e sin a, sin e)`` and looks at the origin.

camera frame
    OpenGL style: camera x right, y up, z backward (the camera looks along -z).
    ``c2w`` maps camera coordinates to world coordinates, columns ``[x, y, z, position]``.

image frame
    Pixel ``(u, v)``: ``u`` grows to the right, ``v`` grows downwards, the top-left pixel
    covers ``[0, 1) x [0, 1)`` so its centre is ``(0.5, 0.5)``.

Other frames
    glTF assets are y-up with their front toward +Z: :func:`gltf_to_sharpit` maps
    ``(x, y, z)_gltf -> (z, x, y)_sharpit``. Shap-E decodes in a z-up frame whose azimuths are
    offset by :data:`SHAP_E_AZIMUTH_OFFSET_DEG` from Zero123++'s: :func:`shap_e_to_sharpit`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional, Sequence, Tuple, Union

import torch

from .errors import InputError

__all__ = [
    "OBJECT_RADIUS",
    "VIEW_SIZE",
    "ZERO123PLUS_POSES",
    "INSTANTMESH_CAMERA_RADIUS",
    "SHAP_E_AZIMUTH_OFFSET_DEG",
    "CameraBatch",
    "look_at_c2w",
    "orbit_cameras",
    "zero123plus_cameras",
    "rotated_zero123plus_cameras",
    "instantmesh_input_cameras",
    "turntable_cameras",
    "default_distance",
    "GLTF_TO_SHARPIT",
    "gltf_to_sharpit",
    "sharpit_to_gltf",
    "SHAP_E_TO_SHARPIT",
    "shap_e_to_sharpit",
    "sharpit_to_shap_e",
]

#: v1.2 object scale: normalised assets fit a sphere of this radius at the origin.
OBJECT_RADIUS = 0.5
#: Side of one square view, in pixels.
VIEW_SIZE = 320

#: Zero123++ target poses, in degrees. Azimuths are relative to the reference view (azimuth 0).
ZERO123PLUS_POSES = {
    "v1.2": {
        "azimuth_deg": (30.0, 90.0, 150.0, 210.0, 270.0, 330.0),
        "elevation_deg": (20.0, -10.0, 20.0, -10.0, 20.0, -10.0),
        "fov_deg": 30.0,
    },
    "v1.1": {
        "azimuth_deg": (30.0, 90.0, 150.0, 210.0, 270.0, 330.0),
        "elevation_deg": (30.0, -20.0, 30.0, -20.0, 30.0, -20.0),
        "fov_deg": math.degrees(2.0 * math.atan(16.0 / 35.0)),
    },
}

#: Camera radius InstantMesh's reconstructor was trained with (its input cameras).
INSTANTMESH_CAMERA_RADIUS = 4.0

#: The Sharp-It author's Shap-E renders use azimuth ``a + SHAP_E_AZIMUTH_OFFSET_DEG`` for the
#: Zero123++ azimuth ``a``. Equivalently a Shap-E object is turned by ``-offset`` about +z to
#: land in the sharpit world (see :func:`shap_e_to_sharpit`).
SHAP_E_AZIMUTH_OFFSET_DEG = -90.0

_Number = Union[float, int]
_Vec = Union[Sequence[float], torch.Tensor]


def default_distance(fov_deg: float = 30.0, radius: float = OBJECT_RADIUS) -> float:
    """Distance at which a sphere of ``radius`` exactly fills a vertical ``fov_deg`` view.

    ``0.5 / tan(15 deg) = 1.866`` for the v1.2 defaults.
    """
    return radius / math.tan(math.radians(fov_deg) / 2.0)


def look_at_c2w(eye: torch.Tensor, target: Optional[torch.Tensor] = None,
                up: Sequence[float] = (0.0, 0.0, 1.0)) -> torch.Tensor:
    """OpenGL camera-to-world matrices for cameras at ``eye`` looking at ``target``.

    Args:
        eye: (N, 3) camera positions in world coordinates.
        target: (N, 3) or (3,) look-at points; the origin by default.
        up: world up vector. Cameras looking straight along it get a fallback x axis (+x
            world projected to the image plane), never NaNs.

    Returns:
        (N, 4, 4) float tensors: columns x (right), y (up), z (backward), position.
    """
    eye = torch.as_tensor(eye, dtype=torch.float64)
    if eye.ndim == 1:
        eye = eye[None]
    if target is None:
        target = torch.zeros_like(eye)
    target = torch.as_tensor(target, dtype=torch.float64).expand_as(eye)
    up_t = torch.as_tensor(up, dtype=torch.float64).expand_as(eye)
    z = eye - target
    norm = z.norm(dim=-1, keepdim=True)
    if bool((norm < 1e-12).any()):
        raise InputError("a camera sits on its look-at point; give a non-zero distance")
    z = z / norm
    x = torch.linalg.cross(up_t, z)
    degenerate = x.norm(dim=-1) < 1e-9
    if bool(degenerate.any()):
        alt = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64).expand_as(eye)
        alt_x = torch.linalg.cross(torch.linalg.cross(z, alt), z)
        x = torch.where(degenerate[:, None], alt_x, x)
    x = x / x.norm(dim=-1, keepdim=True)
    y = torch.linalg.cross(z, x)
    c2w = torch.zeros(eye.shape[0], 4, 4, dtype=torch.float64)
    c2w[:, :3, 0] = x
    c2w[:, :3, 1] = y
    c2w[:, :3, 2] = z
    c2w[:, :3, 3] = eye
    c2w[:, 3, 3] = 1.0
    return c2w.float()


@dataclass(frozen=True)
class CameraBatch:
    """A batch of ``N`` pinhole cameras with square or rectangular images.

    Attributes:
        c2w: (N, 4, 4) float32 OpenGL camera-to-world matrices.
        fov_deg: (N,) vertical field of view in degrees.
        azimuth_deg, elevation_deg, distance: (N,) orbit parameters around the origin
            (degrees, degrees, world units); NaN for cameras not made by an orbit.
    """

    c2w: torch.Tensor
    fov_deg: torch.Tensor
    azimuth_deg: torch.Tensor
    elevation_deg: torch.Tensor
    distance: torch.Tensor

    def __post_init__(self):
        if self.c2w.ndim != 3 or self.c2w.shape[1:] != (4, 4):
            raise InputError(f"c2w must have shape (N, 4, 4), got {tuple(self.c2w.shape)}")
        n = self.c2w.shape[0]
        for name in ("fov_deg", "azimuth_deg", "elevation_deg", "distance"):
            value = getattr(self, name)
            if value.shape != (n,):
                raise InputError(f"{name} must have shape ({n},), got {tuple(value.shape)}")
        if not bool(((self.fov_deg > 0) & (self.fov_deg < 180)).all()):
            raise InputError("fov_deg must lie in (0, 180) degrees")

    # -- container protocol -------------------------------------------------------------
    def __len__(self) -> int:
        return self.c2w.shape[0]

    def __getitem__(self, index) -> "CameraBatch":
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return CameraBatch(*(getattr(self, f)[index] for f in self._fields()))

    @staticmethod
    def _fields() -> Tuple[str, ...]:
        return ("c2w", "fov_deg", "azimuth_deg", "elevation_deg", "distance")

    def to(self, device=None, dtype: Optional[torch.dtype] = None) -> "CameraBatch":
        """Move every tensor to ``device`` (and floating ``dtype`` if given)."""
        return replace(self, **{f: getattr(self, f).to(device=device, dtype=dtype) for f in self._fields()})

    @property
    def device(self) -> torch.device:
        return self.c2w.device

    # -- geometry -----------------------------------------------------------------------
    @property
    def position(self) -> torch.Tensor:
        """(N, 3) camera centres in world coordinates."""
        return self.c2w[:, :3, 3]

    @property
    def w2c(self) -> torch.Tensor:
        """(N, 4, 4) world-to-camera matrices (inverse of ``c2w``)."""
        return torch.linalg.inv(self.c2w)

    def focal_normalized(self) -> torch.Tensor:
        """(N,) focal length in units of the image height: ``0.5 / tan(fov / 2)``."""
        return 0.5 / torch.tan(torch.deg2rad(self.fov_deg) / 2.0)

    def intrinsics(self, height: int, width: Optional[int] = None) -> torch.Tensor:
        """(N, 3, 3) pixel intrinsics ``[[f, 0, cx], [0, f, cy], [0, 0, 1]]`` (square pixels,
        vertical FOV, principal point at the image centre, ``v`` down)."""
        width = height if width is None else width
        f = self.focal_normalized() * height
        k = torch.zeros(len(self), 3, 3, dtype=self.c2w.dtype, device=self.device)
        k[:, 0, 0] = f
        k[:, 1, 1] = f
        k[:, 0, 2] = width / 2.0
        k[:, 1, 2] = height / 2.0
        k[:, 2, 2] = 1.0
        return k

    def projection_matrix(self, near: float = 0.1, far: float = 100.0,
                          aspect: float = 1.0) -> torch.Tensor:
        """(N, 4, 4) OpenGL perspective matrices (camera space -> clip space, NDC z in [-1, 1]).

        ``aspect`` is width / height.
        """
        if not 0 < near < far:
            raise InputError(f"need 0 < near < far, got near={near}, far={far}")
        t = torch.tan(torch.deg2rad(self.fov_deg) / 2.0)
        p = torch.zeros(len(self), 4, 4, dtype=self.c2w.dtype, device=self.device)
        p[:, 0, 0] = 1.0 / (t * aspect)
        p[:, 1, 1] = 1.0 / t
        p[:, 2, 2] = -(far + near) / (far - near)
        p[:, 2, 3] = -2.0 * far * near / (far - near)
        p[:, 3, 2] = -1.0
        return p

    def full_projection(self, near: float = 0.1, far: float = 100.0,
                        aspect: float = 1.0) -> torch.Tensor:
        """(N, 4, 4) world -> clip space matrices (``projection @ w2c``)."""
        return self.projection_matrix(near, far, aspect) @ self.w2c

    def world_to_camera(self, points: torch.Tensor) -> torch.Tensor:
        """Transform world points to each camera's frame.

        Args:
            points: (P, 3) shared by all cameras or (N, P, 3).
        Returns:
            (N, P, 3) camera-frame coordinates (visible points have negative z).
        """
        points = points.to(self.c2w)
        if points.ndim == 2:
            points = points[None].expand(len(self), -1, -1)
        w2c = self.w2c
        return points @ w2c[:, :3, :3].transpose(1, 2) + w2c[:, None, :3, 3]

    def project(self, points: torch.Tensor, height: int = VIEW_SIZE,
                width: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Project world points to pixel coordinates.

        Args:
            points: (P, 3) or (N, P, 3) world points.
            height, width: image size in pixels (``width`` defaults to ``height``).
        Returns:
            ``(uv, depth)``: (N, P, 2) pixel coordinates in the image frame of this module's
            docstring (continuous; the top-left pixel centre is (0.5, 0.5)) and (N, P) depth,
            the positive distance in front of the camera along its viewing axis.
        """
        width = height if width is None else width
        cam = self.world_to_camera(points)
        depth = -cam[..., 2]
        f = (self.focal_normalized() * height)[:, None]
        safe = torch.where(depth.abs() < 1e-12, torch.full_like(depth, 1e-12), depth)
        u = width / 2.0 + f * cam[..., 0] / safe
        v = height / 2.0 - f * cam[..., 1] / safe
        return torch.stack([u, v], dim=-1), depth

    def rays(self, height: int = VIEW_SIZE, width: Optional[int] = None
             ) -> Tuple[torch.Tensor, torch.Tensor]:
        """World-space rays through the pixel centres.

        Returns:
            ``(origins, directions)``: each (N, H, W, 3); directions have unit length.
        """
        width = height if width is None else width
        dev, dt = self.device, self.c2w.dtype
        f = (self.focal_normalized() * height).to(dt)
        v, u = torch.meshgrid(torch.arange(height, device=dev, dtype=dt) + 0.5,
                              torch.arange(width, device=dev, dtype=dt) + 0.5, indexing="ij")
        x = (u - width / 2.0)[None] / f[:, None, None]
        y = -(v - height / 2.0)[None] / f[:, None, None]
        d_cam = torch.stack([x, y, -torch.ones_like(x)], dim=-1)
        d_world = torch.einsum("nij,nhwj->nhwi", self.c2w[:, :3, :3], d_cam)
        d_world = d_world / d_world.norm(dim=-1, keepdim=True)
        origins = self.position[:, None, None, :].expand_as(d_world)
        return origins, d_world

    def instantmesh_vectors(self) -> torch.Tensor:
        """(N, 16) InstantMesh camera vectors: ``c2w[:3, :4]`` flattened row-major, then
        normalised intrinsics ``fx, fy, cx, cy`` = ``f, f, 0.5, 0.5``."""
        f = self.focal_normalized()[:, None]
        half = torch.full_like(f, 0.5)
        return torch.cat([self.c2w[:, :3, :4].reshape(len(self), 12), f, f, half, half], dim=-1)


def _as_1d(value, n: int, name: str) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=torch.float32).flatten()
    if t.numel() == 1:
        t = t.expand(n).clone()
    if t.numel() != n:
        raise InputError(f"{name} must be a scalar or have {n} values, got {t.numel()}")
    if not bool(torch.isfinite(t).all()):
        raise InputError(f"{name} must be finite")
    return t


def orbit_cameras(azimuth_deg: _Vec, elevation_deg: _Vec, distance: Union[_Number, _Vec],
                  fov_deg: Union[_Number, _Vec] = 30.0) -> CameraBatch:
    """Cameras on a sphere around the origin, looking at it, world up +z.

    Args:
        azimuth_deg, elevation_deg: (N,) angles in degrees (sharpit world frame).
        distance: scalar or (N,) distances from the origin (> 0).
        fov_deg: scalar or (N,) vertical field of view in degrees.
    """
    n = torch.as_tensor(azimuth_deg).numel()
    if n == 0:
        raise InputError("need at least one camera")
    az = _as_1d(azimuth_deg, n, "azimuth_deg")
    el = _as_1d(elevation_deg, n, "elevation_deg")
    dist = _as_1d(distance, n, "distance")
    fov = _as_1d(fov_deg, n, "fov_deg")
    if not bool((dist > 0).all()):
        raise InputError(f"distance must be > 0, got {dist.tolist()}")
    a, e = torch.deg2rad(az.double()), torch.deg2rad(el.double())
    eye = dist.double()[:, None] * torch.stack(
        [torch.cos(e) * torch.cos(a), torch.cos(e) * torch.sin(a), torch.sin(e)], dim=-1)
    return CameraBatch(look_at_c2w(eye), fov, az.clone(), el, dist)


def zero123plus_cameras(version: str = "v1.2", distance: Optional[float] = None) -> CameraBatch:
    """The six Zero123++ target cameras, in grid order (view ``i`` is tile ``i``).

    Args:
        version: "v1.2" (default; elevations 20/-10, FOV 30) or "v1.1".
        distance: camera distance; by default the one at which the v1.2 normalised object
            (radius :data:`OBJECT_RADIUS`) fills the view: ``0.5 / tan(fov / 2)``.
    """
    if version not in ZERO123PLUS_POSES:
        raise InputError(f"unknown Zero123++ version {version!r}; expected one of {sorted(ZERO123PLUS_POSES)}")
    pose = ZERO123PLUS_POSES[version]
    if distance is None:
        distance = default_distance(pose["fov_deg"])
    return orbit_cameras(pose["azimuth_deg"], pose["elevation_deg"], distance, pose["fov_deg"])


def rotated_zero123plus_cameras(azimuth_offset_deg: float, version: str = "v1.2",
                                distance: Optional[float] = None) -> CameraBatch:
    """The six Zero123++ cameras with the whole rig turned by ``azimuth_offset_deg`` about +z.

    Zero123++'s azimuths are relative to its input view, whose azimuth is arbitrary, so a rig
    turned about the up axis is still a rig the multi-view model knows: same elevations, same
    relative azimuths, same grid order (view ``i`` at azimuth ``ZERO123PLUS_POSES[...][i] +
    offset``). MVDream samples its multi-view cameras this way (a random azimuth for the first
    view, fixed offsets for the others). The rig maps onto itself (views permuted) every 120
    degrees; 0 gives :func:`zero123plus_cameras`.
    """
    if not math.isfinite(float(azimuth_offset_deg)):
        raise InputError(f"azimuth_offset_deg must be finite, got {azimuth_offset_deg!r}")
    base = zero123plus_cameras(version, distance)
    pose = ZERO123PLUS_POSES[version]
    azimuths = [a + float(azimuth_offset_deg) for a in pose["azimuth_deg"]]
    return orbit_cameras(azimuths, pose["elevation_deg"], base.distance, pose["fov_deg"])


def instantmesh_input_cameras(radius: float = INSTANTMESH_CAMERA_RADIUS) -> CameraBatch:
    """InstantMesh's reconstructor input cameras: the v1.2 poses at ``radius`` (4.0), FOV 30."""
    return zero123plus_cameras("v1.2", distance=radius)


def turntable_cameras(num_frames: int = 60, elevation_deg: float = 20.0,
                      distance: Optional[float] = None, fov_deg: float = 30.0,
                      start_azimuth_deg: float = 0.0) -> CameraBatch:
    """``num_frames`` cameras evenly spaced in azimuth for a turntable video."""
    if num_frames < 1:
        raise InputError(f"num_frames must be >= 1, got {num_frames}")
    az = start_azimuth_deg + torch.arange(num_frames, dtype=torch.float32) * (360.0 / num_frames)
    if distance is None:
        distance = default_distance(fov_deg)
    return orbit_cameras(az, elevation_deg, distance, fov_deg)


# -- frame conversions ------------------------------------------------------------------

#: Proper rotation taking glTF coordinates (y up, front +Z) to sharpit (z up, front +x):
#: ``(x, y, z)_gltf -> (z, x, y)_sharpit``.
GLTF_TO_SHARPIT = torch.tensor([[0.0, 0.0, 1.0],
                                [1.0, 0.0, 0.0],
                                [0.0, 1.0, 0.0]])


def _rot_z(deg: float) -> torch.Tensor:
    r = math.radians(deg)
    c, s = math.cos(r), math.sin(r)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


#: Rotation taking Shap-E decoder coordinates to the sharpit world (a turn about +z by
#: ``-SHAP_E_AZIMUTH_OFFSET_DEG``), so that a sharpit camera at azimuth ``a`` sees what a Shap-E
#: camera at azimuth ``a + SHAP_E_AZIMUTH_OFFSET_DEG`` sees.
SHAP_E_TO_SHARPIT = _rot_z(-SHAP_E_AZIMUTH_OFFSET_DEG)


def _apply(rotation: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    points = torch.as_tensor(points)
    if points.shape[-1] != 3:
        raise InputError(f"points must have a last dimension of 3, got shape {tuple(points.shape)}")
    return points @ rotation.to(device=points.device, dtype=points.dtype).T


def gltf_to_sharpit(points: torch.Tensor) -> torch.Tensor:
    """(..., 3) glTF-frame points or directions to the sharpit world frame."""
    return _apply(GLTF_TO_SHARPIT, points)


def sharpit_to_gltf(points: torch.Tensor) -> torch.Tensor:
    """(..., 3) sharpit-world points or directions to the glTF frame (inverse of
    :func:`gltf_to_sharpit`)."""
    return _apply(GLTF_TO_SHARPIT.T, points)


def shap_e_to_sharpit(points: torch.Tensor) -> torch.Tensor:
    """(..., 3) Shap-E decoder-frame points to the sharpit world frame (rotation only; scale is
    handled by mesh normalisation)."""
    return _apply(SHAP_E_TO_SHARPIT, points)


def sharpit_to_shap_e(points: torch.Tensor) -> torch.Tensor:
    """(..., 3) sharpit-world points to the Shap-E decoder frame (inverse of
    :func:`shap_e_to_sharpit`)."""
    return _apply(SHAP_E_TO_SHARPIT.T, points)
