"""Inputs of Shap-E's encoder made from any :class:`~sharpit.mesh.Mesh` with sharpit's renderer.

What the official pipeline feeds the released encoder (``shap_e/util/data_util.py``
``load_or_create_multimodal_batch`` as called by ``shap_e/examples/encode_model.ipynb``, and
``shap_e/rendering/blender/blender_script.py``), and what this module does instead:

* **frame and scale**: Blender imports the asset (glTF y-up -> Blender z-up), ``normalize_scene``
  scales it so the bounding box's longest side is 1 and centres the box; the batch is then scaled
  by ``pc_scale = 2``. Here: :func:`sharpit.cameras.sharpit_to_shap_e` (sharpit -> Blender/Shap-E
  frame: a glTF asset lands where Blender's importer puts it), bounding box centred, longest side 2.
* **point cloud**: 40 renders at 512 px from uniformly random directions at distance 2 (4 after
  scaling), Blender's default 50 mm / 36 mm camera (FOV ``2 atan(18 / 50)``), material colours
  only (emission = base colour, sRGB, 8-bit), 16-bit depth; every fully opaque pixel becomes a
  point (unprojected with the official ray formula, pixel ``i`` of ``n`` at
  ``(2 i / (n - 1) - 1) tan(fov / 2)``); duplicated with N(0, 1e-4) jitter while fewer than 16384;
  2^19 drawn at random; 16384 kept by farthest-point sampling from a random start, each colour the
  mean of the points nearest to it; colours rounded to 8 bits. Same here, with sharpit's
  rasteriser (unlit, no supersampling), sharpit's random generator, float depth.
* **multi-view**: 20 renders at 512 px from random directions, ``light_mode="basic"``: base
  colour times ``0.3 + 0.7 |n . l|`` in linear light with ``l = UNIFORM_LIGHT_DIRECTION`` and the
  world normal ``n``, then sRGB, 8 bits, composited on black, resized to 256 (bilinear; depth by
  area), alpha kept. Same here (antialiased bilinear as PIL's, sharpit's interpolated normals).

Deviations (all named settings in :class:`EncoderInputSettings` or listed here): sharpit's
rasteriser instead of Blender EEVEE (EEVEE's pixel filter is not modelled, so silhouette pixels
differ); camera directions from ``torch`` instead of Blender's ``mathutils`` RNG (same
distribution); depth not quantised to 16 bits (at most 1.5e-4 scaled units); a mesh without
colours gets Blender's default material colour (0.8 linear, 0.906 sRGB); transparency and
non-base-colour material channels are ignored (sharpit meshes carry only a base colour).

Measured effect (``scripts/parity/shap_e_encoder_inputs.py``, benchmarks/RESULTS.md, 2026-12-02):
against the official Blender script (EEVEE, Blender 5.0.1, 1 sample) at the same cameras on an
asymmetric textured box, the 20 views differ by 0.0013 mean abs sRGB on covered pixels, alpha IoU
0.9999, depth 1e-4 scaled units (p99 5e-4); the point clouds are as far apart as two official
samplings of the same renders (Chamfer 0.033 at 2048 points). On random encoders the latent moves
less than the official pipeline's own sampling noise (tiny: 0.21 relative L2 vs 0.15 for another
official sampling seed and 0.29 for other cameras); the multi-view renders alone move it by 0.09
(tiny) and 0.33 (mid-size; its sampling noise is 0.69). Not measured on released weights.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from ..cameras import CameraBatch, look_at_c2w, sharpit_to_shap_e
from ..colors import linear_to_srgb, srgb_to_linear
from ..errors import ConfigError, InputError, MeshError
from ..mesh import Mesh
from .encoder_model import ShapEEncoderInputs

__all__ = ["EncoderInputSettings", "prepare_encoder_inputs", "mesh_to_shap_e_frame", "farthest_point_sample",
           "MAX_ENCODE_FACES", "UNIFORM_LIGHT_DIRECTION", "BLENDER_DEFAULT_FOV"]

#: ``shap_e/rendering/blender/constants.py``: the "basic" light direction, ambient and diffuse.
UNIFORM_LIGHT_DIRECTION = (0.09387503, -0.63953443, -0.7630093)
#: Field of view of Blender's default camera (50 mm lens, 36 mm sensor), radians.
BLENDER_DEFAULT_FOV = 2.0 * math.atan(18.0 / 50.0)
#: Largest mesh :func:`prepare_encoder_inputs` accepts, in faces: about 2 GB of rasteriser work
#: per view batch on the CPU; decimate bigger assets first (e.g. ``fast_simplification``).
MAX_ENCODE_FACES = 2_000_000
#: Default colour of an uncoloured mesh: Blender's default material, 0.8 linear, as sRGB.
_DEFAULT_SRGB = float(linear_to_srgb(torch.tensor(0.8)))


@dataclass(frozen=True)
class EncoderInputSettings:
    """How the encoder's inputs are made (defaults: the official pipeline's values).

    Attributes:
        point_count: points in the cloud (the released encoder's ``inner_batch_size[0]``, 16384).
        num_views: multi-view renders (``inner_batch_size[1]``, 20).
        image_size: side of a multi-view render fed to the encoder (256).
        render_factor: renders are made at ``render_factor * image_size`` and resized (512 -> 256).
        point_cloud_views: renders the point cloud is unprojected from (40).
        point_cloud_render_size: their side in pixels (512).
        random_sample_count: points drawn before farthest-point sampling (2^19).
        camera_distance: camera distance in Blender units before the x2 scale (2.0).
        fov: field of view of every camera, radians (Blender's default camera).
        ambient, diffuse: the "basic" lighting ``ambient + diffuse |n . l|`` (0.3, 0.7).
        light_direction: ``l`` in the Shap-E frame.
    """

    point_count: int = 16384
    num_views: int = 20
    image_size: int = 256
    render_factor: int = 2
    point_cloud_views: int = 40
    point_cloud_render_size: int = 512
    random_sample_count: int = 2 ** 19
    camera_distance: float = 2.0
    fov: float = BLENDER_DEFAULT_FOV
    ambient: float = 0.3
    diffuse: float = 0.7
    light_direction: Tuple[float, float, float] = UNIFORM_LIGHT_DIRECTION

    def __post_init__(self):
        for name in ("point_count", "num_views", "image_size", "render_factor", "point_cloud_views",
                     "point_cloud_render_size", "random_sample_count"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"encoder input setting {name} must be a positive integer, got {value!r}")
        if self.random_sample_count < self.point_count:
            raise ConfigError(f"random_sample_count ({self.random_sample_count}) must be >= point_count "
                              f"({self.point_count})")
        if not 0 < self.fov < math.pi or self.camera_distance <= 0.5 * math.sqrt(3):
            raise ConfigError("fov must lie in (0, pi) and camera_distance must put the camera outside the "
                              f"unit-box object (> 0.87), got fov={self.fov}, camera_distance={self.camera_distance}")
        object.__setattr__(self, "light_direction", tuple(float(v) for v in self.light_direction))

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _check_mesh(mesh) -> Mesh:
    if not isinstance(mesh, Mesh):
        raise InputError(f"expected a sharpit.mesh.Mesh, got {type(mesh).__name__}; load files with "
                         "sharpit.mesh_io.load_mesh")
    if mesh.faces.ndim == 2 and mesh.faces.shape[0] == 0:
        raise MeshError(f"has no faces ({mesh.num_vertices} vertices only): a point cloud cannot be encoded, "
                        "the encoder renders a surface; reconstruct a mesh from it first", mesh.source)
    if mesh.num_faces > MAX_ENCODE_FACES:
        raise MeshError(f"has {mesh.num_faces} faces, more than the encoder's limit of {MAX_ENCODE_FACES} "
                        "(sharpit.coarse.encoder_inputs.MAX_ENCODE_FACES); decimate it first", mesh.source)
    return mesh.validate()


def mesh_to_shap_e_frame(mesh: Mesh) -> Mesh:
    """The mesh in the encoder's frame: Shap-E/Blender axes (:func:`sharpit_to_shap_e`),
    bounding box centred at the origin, longest side 2 (Blender's ``normalize_scene`` times the
    batch's ``pc_scale`` 2). Uncoloured meshes get Blender's default material colour."""
    mesh = _check_mesh(mesh)
    v = sharpit_to_shap_e(mesh.vertices.double())
    lo, hi = v.min(0).values, v.max(0).values
    v = (v - (lo + hi) / 2.0) * (2.0 / float((hi - lo).max()))
    colours = mesh.vertex_colors
    if colours is None and not mesh.has_texture:
        colours = torch.full_like(mesh.vertices, _DEFAULT_SRGB)
    return Mesh(v.float(), mesh.faces, colours, mesh.uvs, mesh.texture, mesh.source)


def _random_cameras(n: int, distance: float, fov: float, generator, device) -> CameraBatch:
    """``n`` cameras at ``distance`` from the origin in uniformly random directions, looking at
    it, image up toward +z (Blender's ``to_track_quat("-Z", "Y")``)."""
    direction = torch.randn(n, 3, generator=generator, dtype=torch.float64,
                            device=generator.device if generator is not None else "cpu")
    direction = direction.cpu() / direction.cpu().norm(dim=-1, keepdim=True)
    nan = torch.full((n,), float("nan"))
    return CameraBatch(look_at_c2w(direction * distance), torch.full((n,), math.degrees(fov)), nan, nan,
                       torch.full((n,), float(distance))).to(device)


def _official_rays(cams: CameraBatch, size: int, fov: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """(N, H, W, 3) unit ray directions by the official formula and (N, 3) forward axes."""
    c2w = cams.c2w
    x, y, z = c2w[:, :3, 0], -c2w[:, :3, 1], -c2w[:, :3, 2]
    f = (torch.arange(size, device=c2w.device, dtype=c2w.dtype) / (size - 1) * 2 - 1) * math.tan(fov / 2.0)
    d = z[:, None, None] + x[:, None, None] * f[None, :, None] + y[:, None, None] * f[:, None, None]
    return d / d.norm(dim=-1, keepdim=True), z


def _quantise8(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x.clamp(0, 1) * 255.0) / 255.0


def farthest_point_sample(points: torch.Tensor, count: int, generator=None) -> torch.Tensor:
    """(count,) indices of a farthest-point sample of (N, 3) ``points`` from a random start (the
    official ``PointCloud.farthest_point_sample``: squared distances by ``|a|^2 + |b|^2 - 2 a.b``,
    in that order of operations, a chosen point's distance set to -1). The loop writes into
    buffers made once (no allocation per pick: 2-4x faster on the dev CPU, the same indices;
    ``benchmarks/RESULTS.md``)."""
    n = points.shape[0]
    start = torch.randint(n, (1,), generator=generator, device=generator.device if generator is not None else "cpu")
    sq = (points * points).sum(-1)
    indices = torch.empty(count, dtype=torch.long, device=points.device)
    idx = start.to(points.device)[0]
    indices[0] = idx
    dists = sq + sq[idx] - 2.0 * points @ points[idx]
    dot, candidate = torch.empty_like(sq), torch.empty_like(sq)
    for i in range(1, count):
        idx = dists.argmax()
        indices[i] = idx
        dists[idx] = -1.0
        torch.mv(points, points[idx], out=dot).mul_(2.0)              # 2 a.b (doubling is exact)
        torch.add(sq, sq[idx], out=candidate).sub_(dot)                 # (|a|^2 + |b|^2) - 2 a.b
        torch.minimum(dists, candidate, out=dists)
    return indices


def _nearest(centres: torch.Tensor, points: torch.Tensor, chunk: int = 16384) -> torch.Tensor:
    norms = (centres * centres).sum(-1)
    out = [(norms[None] - 2.0 * points[lo: lo + chunk] @ centres.T).argmin(-1)
           for lo in range(0, points.shape[0], chunk)]
    return torch.cat(out)


def _point_cloud(mesh: Mesh, s: EncoderInputSettings, generator) -> torch.Tensor:
    from ..render import render_views

    dev = mesh.device
    cams = _random_cameras(s.point_cloud_views, 2.0 * s.camera_distance, s.fov, generator, dev)
    coords, colours = [], []
    for lo in range(0, len(cams), 8):
        part = cams[lo: lo + 8]
        r = render_views(mesh, part, size=s.point_cloud_render_size, background=0.0, shading="unlit")
        d, z = _official_rays(part, s.point_cloud_render_size, s.fov)
        keep = r.alpha[:, 0] >= 1.0 - 1e-5
        depth = r.depth[:, 0][keep] / (d[keep] * z[:, None, None].expand_as(d)[keep]).sum(-1)
        coords.append(part.position[:, None, None].expand_as(d)[keep] + d[keep] * depth[:, None])
        colours.append(_quantise8(r.images.permute(0, 2, 3, 1)[keep]))
    xyz, rgb = torch.cat(coords), torch.cat(colours)
    if xyz.shape[0] == 0:
        raise MeshError("no surface was visible from any encoder camera (is the mesh inside-out or "
                        "infinitely thin?)", mesh.source)
    gdev = generator.device if generator is not None else "cpu"
    while xyz.shape[0] < s.point_count:   # official: duplicate with N(0, 1e-4) jitter (x2: scaled frame)
        xyz = torch.cat([xyz, xyz])
        rgb = torch.cat([rgb, rgb])
        xyz = xyz + 2e-4 * torch.randn(xyz.shape, generator=generator, device=gdev).to(dev)
    if xyz.shape[0] > s.random_sample_count:
        pick = torch.randperm(xyz.shape[0], generator=generator, device=gdev)[: s.random_sample_count].to(dev)
        xyz, rgb = xyz[pick], rgb[pick]
    if xyz.shape[0] > s.point_count:
        fps = farthest_point_sample(xyz, s.point_count, generator)
        owner = _nearest(xyz[fps], xyz)
        owner[fps] = torch.arange(s.point_count, device=dev)
        total = torch.zeros(s.point_count, 3, device=dev).index_add_(0, owner, rgb)
        count = torch.zeros(s.point_count, device=dev).index_add_(0, owner, torch.ones_like(owner, dtype=rgb.dtype))
        xyz, rgb = xyz[fps], total / count[:, None]
    return torch.cat([xyz, _quantise8(rgb)], dim=-1)


def _multiview(mesh: Mesh, s: EncoderInputSettings, generator):
    from ..render import render_views

    dev = mesh.device
    size = s.image_size * s.render_factor
    cams = _random_cameras(s.num_views, 2.0 * s.camera_distance, s.fov, generator, dev)
    light = torch.tensor(s.light_direction, device=dev).view(1, 3, 1, 1)
    views, depths, alphas = [], [], []
    for lo in range(0, len(cams), 8):
        r = render_views(mesh, cams[lo: lo + 8], size=size, background=0.0, shading="unlit")
        bright = s.ambient + s.diffuse * (r.normals * light).sum(1, keepdim=True).abs()
        rgb = _quantise8(linear_to_srgb(srgb_to_linear(r.images) * bright)) * r.alpha
        rgb = _quantise8(rgb)  # official: 8-bit PNG, composited on black, 8-bit again
        small = F.interpolate(torch.cat([rgb, r.alpha], 1), size=(s.image_size,) * 2, mode="bilinear",
                              antialias=True, align_corners=False)
        views.append(_quantise8(small[:, :3]) * 2.0 - 1.0)
        alphas.append(_quantise8(small[:, 3:]))
        depth = torch.where(r.alpha > 0, r.depth, torch.full_like(r.depth, float("inf")))
        depths.append(F.avg_pool2d(depth, s.render_factor) if s.render_factor > 1 else depth)
    c2w = cams.c2w
    fov = torch.full((s.num_views,), s.fov, device=dev)
    return (torch.cat(views), torch.cat(depths), torch.cat(alphas), c2w[:, :3, 3], c2w[:, :3, 0],
            -c2w[:, :3, 1], -c2w[:, :3, 2], fov)


@torch.no_grad()
def prepare_encoder_inputs(mesh: Mesh, settings: EncoderInputSettings = EncoderInputSettings(),
                           generator: Optional[torch.Generator] = None,
                           device: Optional[torch.device] = None) -> ShapEEncoderInputs:
    """Point cloud and multi-view renders of ONE mesh (sharpit world frame, any size), as the
    released encoder expects them (see the module docstring), with a batch dimension of 1.

    Random choices (camera directions, point sampling, the farthest-point start) come from
    ``generator``: the same generator state gives the same inputs.

    Raises:
        InputError: ``mesh`` is not a :class:`~sharpit.mesh.Mesh`.
        MeshError: no faces (a point cloud), more than :data:`MAX_ENCODE_FACES` faces, an
            invalid mesh, or nothing visible.
    """
    mesh = mesh_to_shap_e_frame(mesh)
    if device is not None:
        mesh = mesh.to(device)
    points = _point_cloud(mesh, settings, generator)
    views, depths, alphas, origins, x, y, z, fov = _multiview(mesh, settings, generator)
    return ShapEEncoderInputs(points[None], views[None], depths[None], alphas[None], origins[None], x[None],
                              y[None], z[None], fov[None])
