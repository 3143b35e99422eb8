"""The reconstruct stage: six refined views -> triplane NeRF -> mesh, with a reconstructor that
loads InstantMesh's released NeRF checkpoints unchanged.

>>> model = InstantMeshReconstructor.from_instantmesh_checkpoint("instant_nerf_large.ckpt", "large")
>>> mesh = model.reconstruct(grid_image)          # vertex-coloured Mesh, sharpit world frame
>>> textured = model.reconstruct(grid_image, texture=True)
>>> frames = model.render_novel_views(grid_image); write_video(frames, "turntable.mp4")
"""

from ..lazy import lazy_exports
from .config import MESH_RESOLUTION, MESH_THRESHOLD, TRIPLANE_TO_SHARPIT_SCALE, VARIANTS, variant_config

__all__ = [
    "InstantMeshReconstructor",
    "ReconstructorOutput",
    "VARIANTS",
    "variant_config",
    "TRIPLANE_TO_SHARPIT_SCALE",
    "TRIPLANE_TO_SHARPIT",
    "MESH_THRESHOLD",
    "MESH_RESOLUTION",
    "bake_texture",
    "decimate",
    "dilate_texture",
    "write_video",
]


#: Public names imported on first use (PEP 562), so importing a light part of this package (or
#: ``sharpit.options`` through it) does not pull in diffusers and transformers.
_LAZY = {
    "InstantMeshReconstructor": ".model",
    "ReconstructorOutput": ".model",
    "TRIPLANE_TO_SHARPIT": ".model",
    "bake_texture": ".texture",
    "decimate": ".texture",
    "dilate_texture": ".texture",
    "write_video": ".video",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
