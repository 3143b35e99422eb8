"""File formats sharpit reads and writes, by suffix: one list each, importable without torch.

* Meshes (:mod:`sharpit.mesh_io`): read ``.glb .gltf .obj .ply .stl .off``; write ``.glb .gltf .obj .ply``.
* Shap-E latents (:mod:`sharpit.coarse.latents`): sharpit's ``.safetensors``, and Cap3D-style
  ``torch.save`` files (``.pt``, ``.pth``).
"""

__all__ = ["MESH_READ_FORMATS", "MESH_WRITE_FORMATS", "LATENT_SUFFIXES"]

#: Mesh suffixes :func:`sharpit.mesh_io.load_mesh` reads.
MESH_READ_FORMATS = (".glb", ".gltf", ".obj", ".ply", ".stl", ".off")
#: Mesh suffixes :func:`sharpit.mesh_io.save_mesh` writes.
MESH_WRITE_FORMATS = (".glb", ".gltf", ".obj", ".ply")
#: Suffixes of latent files: sharpit's ``.safetensors`` and Cap3D-style ``torch.save`` files.
LATENT_SUFFIXES = (".safetensors", ".pt", ".pth")
