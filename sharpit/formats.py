"""File formats sharpit reads and writes, by suffix: one list each, importable without torch.

* Meshes (:mod:`sharpit.mesh_io`): read ``.glb .gltf .obj .ply .stl .off``; write ``.glb .gltf .obj .ply``.
* Shap-E latents (:mod:`sharpit.coarse.latents`): sharpit's ``.safetensors``, and Cap3D-style
  ``torch.save`` files (``.pt``, ``.pth``).
"""

import os
from pathlib import Path
from typing import Dict, Union

from .errors import AssetNotFoundError
from .warn import warn

__all__ = ["MESH_READ_FORMATS", "MESH_WRITE_FORMATS", "LATENT_SUFFIXES", "find_latents"]

#: Mesh suffixes :func:`sharpit.mesh_io.load_mesh` reads.
MESH_READ_FORMATS = (".glb", ".gltf", ".obj", ".ply", ".stl", ".off")
#: Mesh suffixes :func:`sharpit.mesh_io.save_mesh` writes.
MESH_WRITE_FORMATS = (".glb", ".gltf", ".obj", ".ply")
#: Suffixes of latent files: sharpit's ``.safetensors`` and Cap3D-style ``torch.save`` files.
LATENT_SUFFIXES = (".safetensors", ".pt", ".pth")


def find_latents(root: Union[str, "os.PathLike[str]"]) -> Dict[str, Path]:
    """``{object id: latent file}`` for every file :func:`sharpit.coarse.load_latents` reads (``.safetensors``,
    ``.pt``, ``.pth``) anywhere under ``root``; the file stem is the object id (Cap3D names its
    latents ``<uid>.pt``); suffixes match in any case. Files are visited in sorted path order and a
    later file with the same stem replaces an earlier one, with a warning naming both.

    Raises:
        AssetNotFoundError: ``root`` does not exist, or is a file (the message says which).
    """

    root = Path(root)
    if not root.is_dir():
        raise AssetNotFoundError(root, "latent folder not found" if not root.exists() else
                                 "not a folder; pass the folder that holds the latents")
    found: Dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in LATENT_SUFFIXES and path.is_file():
            if path.stem in found:
                warn(f"two latent files for object {path.stem!r}: {found[path.stem]} and {path}; using "
                     f"{path.name}")
            found[path.stem] = path
    return found
