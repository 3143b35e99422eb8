"""OpenGL reference renders of the same views, for benchmarks and image comparisons.

Not a backend of :func:`sharpit.render.render_views`: these draw a mesh's vertex colours, unlit,
with a hardware or software OpenGL driver (on a CPU-only machine, Mesa's llvmpipe), at exactly
the cameras, projection and near/far planes that ``render_views`` uses, so that its images can be
compared with theirs and its speed measured against them. Neither package is a dependency of
sharpit; each renderer's ``available()`` says whether it can run here.

* :class:`ModernGLRenderer`: moderngl with a headless EGL context (``pip install moderngl``; a
  system libEGL, e.g. Debian's ``libegl1`` + ``libegl-mesa0`` + ``libgl1-mesa-dri``).
* :class:`PyrenderRenderer`: pyrender through OSMesa (``pip install pyrender``, with
  PyOpenGL >= 3.1.7 and the system ``libosmesa6``), ``RenderFlags.FLAT`` so vertex colours are
  drawn unlit. It must be the first user of PyOpenGL in the process (PyOpenGL picks its platform
  from ``PYOPENGL_PLATFORM`` when first imported; this module sets it to ``osmesa`` if unset).

Both return ``(N, 3, H, W)`` float32 images in [0, 1] from 8-bit colour buffers (so they differ
from sharpit's float images by up to 1/510 through quantisation alone) and ``(N, H, W)`` coverage
masks from the depth buffer.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Optional, Tuple

import numpy as np
import torch

from ..cameras import CameraBatch, zero123plus_cameras
from ..mesh import Mesh

__all__ = ["ModernGLRenderer", "PyrenderRenderer", "PEERS"]

_VERTEX_SHADER = """#version 330
in vec3 position;
in vec3 color;
uniform mat4 mvp;
out vec3 v_color;
void main() {
    gl_Position = mvp * vec4(position, 1.0);
    v_color = color;
}
"""

_FRAGMENT_SHADER = """#version 330
in vec3 v_color;
out vec4 f_color;
void main() {
    f_color = vec4(v_color, 1.0);
}
"""


def _inputs(mesh: Mesh, cameras: Optional[CameraBatch]):
    """Float32 arrays of the mesh, the cameras on the CPU, and the (N, 4, 4) projection and
    world -> clip matrices that ``render_views`` uses (the same near and far planes)."""
    from .renderer import _depth_range
    from .shading import NEUTRAL_GREY

    cams = (cameras if cameras is not None else zero123plus_cameras()).to("cpu")
    verts = mesh.vertices.detach().float().cpu()
    near, far = _depth_range(verts, cams)
    mvp = cams.full_projection(near, far).float().numpy()
    projection = cams.projection_matrix(near, far).double().numpy()
    colors = mesh.vertex_colors if mesh.vertex_colors is not None else torch.full_like(verts, NEUTRAL_GREY)
    return (verts.numpy(), colors.detach().float().cpu().numpy(), mesh.faces.detach().cpu().numpy(),
            mvp, projection, cams)


class ModernGLRenderer:
    """Vertex-coloured views through moderngl on a headless EGL context (created once, reused).

    ``render`` uploads the mesh, draws every view into one tall framebuffer (a viewport per view)
    and reads the colour and depth buffers back: the work a caller of OpenGL would do per mesh.
    """

    name = "moderngl"

    def __init__(self, size: int, n_views: int = 6, backend: str = "egl"):
        import moderngl

        self._moderngl = moderngl
        self.ctx = moderngl.create_standalone_context(backend=backend)
        self.size, self.n_views = size, n_views
        self.program = self.ctx.program(vertex_shader=_VERTEX_SHADER, fragment_shader=_FRAGMENT_SHADER)
        self.fbo = self.ctx.framebuffer(self.ctx.renderbuffer((size, size * n_views), 4),
                                        self.ctx.depth_renderbuffer((size, size * n_views)))

    @staticmethod
    def available() -> bool:
        if importlib.util.find_spec("moderngl") is None:
            return False
        try:
            import moderngl

            moderngl.create_standalone_context(backend="egl").release()
        except Exception:  # no EGL driver, no display device, ...
            return False
        return True

    @property
    def device(self) -> str:
        return f"{self.ctx.info['GL_RENDERER']} (moderngl {self._moderngl.__version__}, EGL)"

    def render(self, mesh: Mesh, cameras: Optional[CameraBatch] = None,
               background: float = 1.0) -> Tuple[torch.Tensor, torch.Tensor]:
        mgl = self._moderngl
        verts, colors, faces, mvp, _, cams = _inputs(mesh, cameras)
        n, s = len(cams), self.size
        if n > self.n_views:
            raise ValueError(f"this renderer was made for {self.n_views} views, got {n}")
        vbo = self.ctx.buffer(np.ascontiguousarray(np.concatenate([verts, colors], axis=1), dtype="f4"))
        ibo = self.ctx.buffer(np.ascontiguousarray(faces, dtype="i4"))
        vao = self.ctx.vertex_array(self.program, [(vbo, "3f 3f", "position", "color")], ibo)
        try:
            self.fbo.use()
            self.ctx.enable(mgl.DEPTH_TEST)
            self.ctx.disable(mgl.CULL_FACE)
            self.fbo.clear(background, background, background, 1.0, depth=1.0)
            for i in range(n):
                self.ctx.viewport = (0, s * (self.n_views - 1 - i), s, s)  # view 0 at the top
                self.program["mvp"].write(np.ascontiguousarray(mvp[i].T))  # column-major
                vao.render(mgl.TRIANGLES)
            whole = (0, 0, s, s * self.n_views)
            rgb = np.frombuffer(self.fbo.read(whole, components=3), dtype=np.uint8)
            depth = np.frombuffer(self.fbo.read(whole, components=1, attachment=-1, dtype="f4"), dtype=np.float32)
        finally:
            vao.release()
            ibo.release()
            vbo.release()
        # Rows come bottom-up; flipping the whole buffer puts view 0 first, row 0 at the top.
        rgb = rgb.reshape(self.n_views * s, s, 3)[::-1][: n * s].reshape(n, s, s, 3)
        depth = depth.reshape(self.n_views * s, s)[::-1][: n * s].reshape(n, s, s)
        images = torch.from_numpy(np.ascontiguousarray(rgb)).permute(0, 3, 1, 2).float() / 255.0
        return images, torch.from_numpy(depth < 1.0)

    def release(self) -> None:
        self.ctx.release()


class PyrenderRenderer:
    """Vertex-coloured views through pyrender's OffscreenRenderer on OSMesa (flat, unlit)."""

    name = "pyrender"

    def __init__(self, size: int):
        os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
        import pyrender

        self._pyrender = pyrender
        self.size = size
        self.renderer = pyrender.OffscreenRenderer(size, size)

    @staticmethod
    def available() -> bool:
        if importlib.util.find_spec("pyrender") is None:
            return False
        if os.environ.get("PYOPENGL_PLATFORM", "osmesa") != "osmesa":
            return False
        try:
            os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
            import pyrender

            pyrender.OffscreenRenderer(8, 8).delete()
        except Exception:  # no libOSMesa, an old PyOpenGL, ...
            return False
        return True

    @property
    def device(self) -> str:
        from OpenGL import GL

        renderer = GL.glGetString(GL.GL_RENDERER)
        renderer = renderer.decode() if isinstance(renderer, bytes) else str(renderer)
        return f"{renderer} (pyrender {self._pyrender.__version__}, OSMesa)"

    def render(self, mesh: Mesh, cameras: Optional[CameraBatch] = None,
               background: float = 1.0) -> Tuple[torch.Tensor, torch.Tensor]:
        pyrender = self._pyrender
        verts, colors, faces, _, projection, cams = _inputs(mesh, cameras)
        primitive = pyrender.Primitive(positions=verts, indices=faces,
                                       color_0=np.concatenate([colors, np.ones_like(colors[:, :1])], axis=1),
                                       mode=pyrender.constants.GLTF.TRIANGLES,
                                       material=pyrender.MetallicRoughnessMaterial(doubleSided=True))
        scene = pyrender.Scene(bg_color=[background, background, background, 1.0], ambient_light=[1.0, 1.0, 1.0])
        scene.add(pyrender.Mesh([primitive]))
        camera = _FixedCamera()
        node = scene.add(camera)
        flags = pyrender.RenderFlags.FLAT | pyrender.RenderFlags.SKIP_CULL_FACES
        images, masks = [], []
        for i in range(len(cams)):
            camera.projection = projection[i]
            scene.set_pose(node, cams.c2w[i].double().numpy())
            rgb, depth = self.renderer.render(scene, flags=flags)
            images.append(torch.from_numpy(np.ascontiguousarray(rgb[..., :3])))
            masks.append(torch.from_numpy(depth > 0))
        return torch.stack(images).permute(0, 3, 1, 2).float() / 255.0, torch.stack(masks)

    def release(self) -> None:
        self.renderer.delete()


def _fixed_camera_class():
    import pyrender

    class FixedCamera(pyrender.camera.Camera):
        """A pyrender camera with a given projection matrix."""

        def __init__(self):
            super().__init__(znear=0.01, zfar=100.0)
            self.projection = np.eye(4)

        def get_projection_matrix(self, width=None, height=None):
            return self.projection

    return FixedCamera


def _FixedCamera():  # noqa: N802 - a factory standing for the class (pyrender imports lazily)
    return _fixed_camera_class()()


#: name -> renderer class, in the order the benchmark runs them.
PEERS = {"moderngl": ModernGLRenderer, "pyrender": PyrenderRenderer}
