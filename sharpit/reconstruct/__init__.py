"""The reconstruct stage: six refined views -> triplane NeRF -> mesh, with a reconstructor that
loads InstantMesh's released NeRF checkpoints unchanged.

>>> model = InstantMeshReconstructor.from_instantmesh_checkpoint("instant_nerf_large.ckpt", "large")
>>> mesh = model.reconstruct(grid_image)          # vertex-coloured Mesh, sharpit world frame
>>> textured = model.reconstruct(grid_image, texture=True)
>>> frames = model.render_novel_views(grid_image); write_video(frames, "turntable.mp4")
"""

from .config import MESH_RESOLUTION, MESH_THRESHOLD, TRIPLANE_TO_SHARPIT_SCALE, VARIANTS, variant_config
from .model import TRIPLANE_TO_SHARPIT, InstantMeshReconstructor, ReconstructorOutput
from .texture import bake_texture, decimate, dilate_texture
from .video import write_video

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
