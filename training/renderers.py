"""Target-grid renderers for training pairs: sharpit's rasteriser, or Blender (``bpy``) with lighting.

Both take a mesh already in the sharpit world frame, normalise it to the v1.2 object scale
(radius 0.5), render the six Zero123++ v1.2 views (:func:`sharpit.cameras.zero123plus_cameras`)
on white and return the (3, 3t, 2t) grid in [0, 1] for tiles of ``t`` pixels.
"""

from __future__ import annotations

import tempfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, List, Sequence

from sharpit.errors import ConfigError

if TYPE_CHECKING:  # torch and the mesh code are imported when rendering, so that the CLI starts fast
    import torch

    from sharpit.mesh import Mesh

__all__ = ["SharpItTargetRenderer", "BlenderTargetRenderer", "BLENDER_LIGHTINGS", "check_lightings", "pick_lighting"]

#: Environment-style lighting presets for the Blender renderer: world colour and strength, plus an
#: optional sun (azimuth, elevation in degrees, strength, colour). A lighting may also be the path
#: of an .hdr/.exr environment map.
BLENDER_LIGHTINGS = {
    "studio": {"world": (1.0, 1.0, 1.0), "strength": 0.7, "sun": (45.0, 50.0, 3.0, (1.0, 1.0, 1.0))},
    "warm": {"world": (1.0, 0.86, 0.72), "strength": 0.5, "sun": (-60.0, 35.0, 4.0, (1.0, 0.8, 0.6))},
    "overcast": {"world": (0.88, 0.93, 1.0), "strength": 1.1, "sun": None},
}


#: Name of the vertex-colour attribute handed to Blender. Not "color": Cycles renders an attribute
#: of that name black; "Col" (Blender's own default name) works.
_BLENDER_COLOR_ATTRIBUTE = "Col"


def check_lightings(lightings: Sequence[str]) -> List[str]:
    """``lightings`` as a list, each a preset of :data:`BLENDER_LIGHTINGS` or an existing file
    (an environment map, .hdr or .exr; Blender reads the file when it renders).

    Raises:
        ConfigError: an empty list, or a lighting that is neither (named in the message).
    """
    lightings = [str(lighting) for lighting in lightings]
    if not lightings:
        raise ConfigError(f"no lighting given: use presets of {sorted(BLENDER_LIGHTINGS)} or .hdr/.exr files")
    for lighting in lightings:
        if lighting in BLENDER_LIGHTINGS:
            continue
        if not Path(lighting).is_file():
            raise ConfigError(f"unknown lighting {lighting!r}: neither a preset ({', '.join(BLENDER_LIGHTINGS)}) "
                              "nor an existing .hdr/.exr file")
    return lightings


def pick_lighting(object_id: str, lightings: Sequence[str]) -> str:
    """The lighting of ``object_id``: a stable choice (CRC32 of the id) among ``lightings``."""
    return lightings[zlib.crc32(object_id.encode("utf-8")) % len(lightings)]


class SharpItTargetRenderer:
    """Targets from :func:`sharpit.render.render_views` (``shading``: "unlit" or "lambertian")."""

    def __init__(self, shading: str = "lambertian", supersample: int = 2):
        self.shading, self.supersample = shading, supersample

    def __call__(self, mesh: Mesh, tile_size: int, object_id: str) -> torch.Tensor:
        from sharpit.mesh import normalize_mesh
        from sharpit.render import render_views

        mesh, _ = normalize_mesh(mesh)
        return render_views(mesh, size=tile_size, background=1.0, shading=self.shading,
                            supersample=self.supersample).grid()


class BlenderTargetRenderer:
    """Targets rendered by Blender's Cycles through the ``bpy`` package (optional, ~370 MB, Python 3.11,
    Blender >= 4.1, installed by ``SHARPIT_BLENDER=1 bash scripts/setup.sh``; ``tests/test_blender_renderer.py`` runs it when
    ``bpy`` imports). Meshes are smooth-shaded with their vertex colours or texture as the albedo
    (see :meth:`_blender_mesh`).

    Args:
        lightings: preset names from :data:`BLENDER_LIGHTINGS` or environment-map paths; each
            object gets one, picked by :func:`pick_lighting`.
        samples: Cycles samples per pixel.
    Raises:
        ConfigError: bpy is not installed, or a lighting is neither a preset nor an existing file.
    """

    def __init__(self, lightings: Sequence[str] = tuple(BLENDER_LIGHTINGS), samples: int = 64):
        try:
            import bpy  # noqa: F401
        except ImportError as exc:
            raise ConfigError("--renderer blender needs Blender as a Python module (Python 3.11): "
                              "`SHARPIT_BLENDER=1 bash scripts/setup.sh`, or `pip install --no-deps bpy==5.0.1 "
                              "zstandard cython` (bpy pins numpy<2, which it does not need); or use "
                              "--renderer sharpit") from exc
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise ConfigError(f"Cycles samples must be an integer >= 1, got {samples!r}")
        self.lightings, self.samples = check_lightings(lightings), samples

    def __call__(self, mesh: Mesh, tile_size: int, object_id: str) -> torch.Tensor:
        import bpy
        import torch
        from mathutils import Matrix
        from PIL import Image

        from sharpit.cameras import zero123plus_cameras
        from sharpit.grid import composite_rgba, pil_to_tensor, views_to_grid
        from sharpit.mesh import normalize_mesh

        mesh, _ = normalize_mesh(mesh)
        bpy.ops.wm.read_factory_settings(use_empty=True)
        scene = bpy.context.scene
        scene.render.engine = "CYCLES"
        scene.cycles.device = "CPU"
        scene.cycles.samples = self.samples
        scene.render.resolution_x = scene.render.resolution_y = tile_size
        scene.render.resolution_percentage = 100
        scene.render.film_transparent = True
        scene.render.image_settings.file_format = "PNG"
        scene.render.image_settings.color_mode = "RGBA"
        scene.view_settings.view_transform = "Standard"
        scene.collection.objects.link(bpy.data.objects.new("asset", self._blender_mesh(bpy, mesh)))
        self._light(bpy, scene, pick_lighting(object_id, self.lightings), Matrix)
        cameras = zero123plus_cameras()
        cam_data = bpy.data.cameras.new("camera")
        cam_data.sensor_fit = "VERTICAL"
        cam_data.angle = float(torch.deg2rad(cameras.fov_deg[0]))
        camera = bpy.data.objects.new("camera", cam_data)
        scene.collection.objects.link(camera)
        scene.camera = camera
        views = []
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(len(cameras)):
                camera.matrix_world = Matrix(cameras.c2w[i].tolist())
                scene.render.filepath = str(Path(tmp) / f"view{i}.png")
                bpy.ops.render.render(write_still=True)
                with Image.open(scene.render.filepath) as image:
                    views.append(composite_rgba(pil_to_tensor(image.convert("RGBA")), 1.0))
        return views_to_grid(torch.stack(views))

    @staticmethod
    def _blender_mesh(bpy, mesh: Mesh):
        """The Blender mesh datablock of ``mesh``, smooth-shaded, with its albedo material.

        Shading: every face is smooth (normals interpolated from the vertices, ``shade_smooth``,
        Blender >= 4.1), as :func:`sharpit.render.render_views` shades. A :class:`Mesh` has no
        normals, but :func:`~sharpit.mesh_io.load_mesh` never merges vertices, so an asset's hard
        edges (stored as split vertices, as glTF requires for distinct normals) stay hard, while
        curved surfaces lose the faceting that flat shading gives them. Smoothing by angle was
        rejected: it would facet smooth low-poly surfaces (an 8-sided cylinder's 45 degree steps).

        Colours: a texture through the UV layer "UV", else the vertex colours as a point-domain
        colour attribute named :data:`_BLENDER_COLOR_ATTRIBUTE` (linear, as Blender stores float
        colours), read by a Color Attribute node; Cycles renders an attribute named "color" black.
        """
        import torch

        from sharpit.colors import srgb_to_linear

        data = bpy.data.meshes.new("asset")
        data.from_pydata(mesh.vertices.tolist(), [], mesh.faces.tolist())
        data.shade_smooth()
        data.update()
        material = bpy.data.materials.new("asset")
        material.use_nodes = True
        nodes, links = material.node_tree.nodes, material.node_tree.links
        bsdf = nodes["Principled BSDF"]
        loop_vertices = torch.tensor([loop.vertex_index for loop in data.loops], dtype=torch.long)
        if mesh.has_texture:
            uv_layer = data.uv_layers.new(name="UV")
            uv_layer.data.foreach_set("uv", mesh.uvs[loop_vertices].reshape(-1).tolist())
            h, w = mesh.texture.shape[:2]
            image = bpy.data.images.new("albedo", width=w, height=h)
            rgba = torch.cat([mesh.texture.flip(0), torch.ones(h, w, 1)], dim=-1)  # Blender rows go upwards
            image.pixels.foreach_set(rgba.reshape(-1).tolist())
            tex = nodes.new("ShaderNodeTexImage")
            tex.image = image
            links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
        elif mesh.vertex_colors is not None:
            attr = data.color_attributes.new(_BLENDER_COLOR_ATTRIBUTE, "FLOAT_COLOR", "POINT")
            linear = srgb_to_linear(mesh.vertex_colors)
            attr.data.foreach_set("color", torch.cat([linear, torch.ones(len(linear), 1)], -1).reshape(-1).tolist())
            node = nodes.new("ShaderNodeVertexColor")
            node.layer_name = attr.name
            links.new(node.outputs["Color"], bsdf.inputs["Base Color"])
        data.materials.append(material)
        return data

    @staticmethod
    def _light(bpy, scene, lighting: str, Matrix) -> None:
        import torch

        from sharpit.cameras import look_at_c2w

        world = bpy.data.worlds.new("world")
        world.use_nodes = True
        scene.world = world
        background = world.node_tree.nodes["Background"]
        if lighting not in BLENDER_LIGHTINGS:
            env = world.node_tree.nodes.new("ShaderNodeTexEnvironment")
            env.image = bpy.data.images.load(str(Path(lighting).resolve()))
            world.node_tree.links.new(env.outputs["Color"], background.inputs["Color"])
            return
        preset = BLENDER_LIGHTINGS[lighting]
        background.inputs["Color"].default_value = (*preset["world"], 1.0)
        background.inputs["Strength"].default_value = preset["strength"]
        if preset["sun"] is not None:
            azimuth, elevation, strength, color = preset["sun"]
            a, e = torch.deg2rad(torch.tensor(azimuth)), torch.deg2rad(torch.tensor(elevation))
            position = torch.stack([e.cos() * a.cos(), e.cos() * a.sin(), e.sin()]) * 5.0
            light = bpy.data.lights.new("sun", type="SUN")
            light.energy, light.color = strength, color
            sun = bpy.data.objects.new("sun", light)
            sun.matrix_world = Matrix(look_at_c2w(position[None])[0].tolist())  # suns shine along local -z
            scene.collection.objects.link(sun)
