"""Reading and writing meshes (GLB/glTF, OBJ, PLY, plus what trimesh reads) as :class:`~sharpit.mesh.Mesh`.

Frames: glTF files are y-up with the asset's front toward +Z. With ``frame="auto"`` (default),
``.glb``/``.gltf`` files are converted to the sharpit world frame on load (and back on save) with
:func:`~sharpit.cameras.gltf_to_sharpit`, so an asset's front lands at azimuth 0; other formats
are taken to be in the sharpit frame already. ``frame="gltf"`` or ``"sharpit"`` forces one.

Colours: a :class:`~sharpit.mesh.Mesh` holds sRGB (display) colours. glTF stores vertex colours
(``COLOR_0``) and ``baseColorFactor`` in linear light and base-colour textures in sRGB, and a
primitive's base colour is factor x texture x ``COLOR_0`` (glTF 2.0 specification, sections 3.7.2.1
and 3.9.2), so ``.glb``/``.gltf`` colours are converted at this boundary (:mod:`sharpit.colors`):
vertex colours are written as float32 linear ``COLOR_0`` under a white, non-metallic material, and
read back, whatever their accessor type (float, normalised unsigned byte or short) and material,
as sRGB. OBJ and PLY colours are display values and stay as stored. A save/load round trip returns
glTF vertex colours to float precision, 8-bit ones (OBJ, PLY, textures) to within 0.5/255.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import warnings
from pathlib import Path
from typing import Dict, List, Union

import numpy as np
import torch
from PIL import Image

from .atomic import write_bytes_atomic
from .cameras import gltf_to_sharpit, sharpit_to_gltf
from .colors import linear_to_srgb, srgb_to_linear
from .errors import (AssetNotFoundError, CorruptFileError, InputError, MeshError, OutputExistsError,
                     OutputNotWritableError, UnsupportedFormatError)
from .mesh import Mesh

__all__ = ["load_mesh", "save_mesh", "READ_FORMATS", "WRITE_FORMATS", "FRAMES"]

#: File extensions :func:`load_mesh` reads.
READ_FORMATS = (".glb", ".gltf", ".obj", ".ply", ".stl", ".off")
#: File extensions :func:`save_mesh` writes (PLY without textures).
WRITE_FORMATS = (".glb", ".gltf", ".obj", ".ply")
FRAMES = ("auto", "gltf", "sharpit")
_GLTF_EXTS = (".glb", ".gltf")
#: Colour given to untextured, uncoloured parts of a scene whose other parts carry colour.
_DEFAULT_GREY = 0.7
#: Side in pixels of the solid patch an untextured part gets in a combined texture atlas.
_PATCH = 4

PathLike = Union[str, "os.PathLike[str]"]


def _is_gltf_frame(path: Path, frame: str) -> bool:
    if frame not in FRAMES:
        raise InputError(f"frame must be one of {FRAMES}, got {frame!r}")
    return frame == "gltf" or (frame == "auto" and path.suffix.lower() in _GLTF_EXTS)


# -- loading ----------------------------------------------------------------------------------


class _Part:
    """One scene geometry in world coordinates with at most one kind of colour."""

    def __init__(self, vertices, faces, colors=None, uvs=None, texture=None):
        self.vertices, self.faces = vertices, faces
        self.colors, self.uvs, self.texture = colors, uvs, texture


def _rgb01(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def _part_from_trimesh(geom, transform: np.ndarray, gltf: bool) -> _Part:
    """One scene geometry as a :class:`_Part` with sRGB colours.

    ``gltf``: the file is glTF, whose base colour is ``baseColorFactor`` (linear) times the
    sRGB-decoded ``baseColorTexture`` times ``COLOR_0`` (linear) (glTF 2.0 specification, section
    3.9.2). Vertex colours of a primitive without a material were already made sRGB by
    :func:`_read_gltf_scene`; ``COLOR_0`` next to a material arrives here as linear floats in the
    visual's ``"color"`` vertex attribute. A :class:`~sharpit.mesh.Mesh` holds a texture or vertex
    colours, not both, so ``COLOR_0`` that tints a texture is dropped with a warning.
    """
    import trimesh

    vertices = trimesh.transform_points(np.asarray(geom.vertices, dtype=np.float64), transform)
    faces = np.asarray(geom.faces, dtype=np.int64)
    visual = geom.visual
    if isinstance(visual, trimesh.visual.TextureVisuals):
        material = visual.material
        image, factor = None, None
        if isinstance(material, trimesh.visual.material.PBRMaterial):
            image, factor = material.baseColorTexture, material.baseColorFactor
        elif isinstance(material, trimesh.visual.material.SimpleMaterial):
            image = material.image
            factor = None if image is not None else material.diffuse
        rgb = None if factor is None else np.asarray(factor, dtype=np.float32)[:3] / 255.0
        uv = None if visual.uv is None else np.asarray(visual.uv, dtype=np.float32)
        color_0 = visual.vertex_attributes.get("color") if gltf else None
        color_0 = None if color_0 is None else np.asarray(color_0, dtype=np.float64)[:, :3]
        if image is not None and uv is not None and len(uv) == len(vertices):
            if color_0 is not None and not np.allclose(color_0, 1.0, atol=0.5 / 255):
                warnings.warn("glTF vertex colours (COLOR_0) that tint a base-colour texture are dropped: a "
                              "sharpit Mesh holds a texture or vertex colours", stacklevel=3)
            texture = _rgb01(image)
            if rgb is not None and not np.all(rgb == 1.0):
                texture = linear_to_srgb(srgb_to_linear(texture) * rgb) if gltf else texture * rgb
            return _Part(vertices, faces, uvs=uv, texture=texture)
        if color_0 is not None:
            linear = color_0 * (rgb if rgb is not None else 1.0)
            return _Part(vertices, faces, colors=linear_to_srgb(linear).astype(np.float32))
        if rgb is not None:
            rgb = linear_to_srgb(rgb) if gltf else rgb
            return _Part(vertices, faces, colors=np.broadcast_to(rgb, (len(vertices), 3)).copy())
        return _Part(vertices, faces)
    kind = getattr(visual, "kind", None)
    if kind == "vertex":
        return _Part(vertices, faces, colors=np.asarray(visual.vertex_colors, dtype=np.float32)[:, :3] / 255.0)
    if kind == "face":
        # One vertex per face corner so that each face keeps its own colour.
        face_rgb = np.asarray(visual.face_colors, dtype=np.float32)[:, :3] / 255.0
        return _Part(vertices[faces].reshape(-1, 3), np.arange(faces.size, dtype=np.int64).reshape(-1, 3),
                     colors=np.repeat(face_rgb, 3, axis=0))
    return _Part(vertices, faces)


def _atlas(parts: List[_Part]) -> _Part:
    """Merge parts, some textured, into one part with a single texture laid out left to right.

    UVs of textured parts are wrapped into [0, 1] first (so textures that repeat across a
    triangle are not supported here); untextured parts get a small solid patch of their mean colour.
    """
    images, uv_list = [], []
    for p in parts:
        if p.texture is not None:
            images.append(p.texture)
        else:
            if p.colors is not None and np.ptp(p.colors, axis=0).max() > 1.0 / 255.0:
                warnings.warn("a vertex-coloured part of a textured scene is reduced to its mean colour",
                              stacklevel=3)
            colour = p.colors.mean(0) if p.colors is not None else np.full(3, _DEFAULT_GREY, np.float32)
            images.append(np.broadcast_to(colour.astype(np.float32), (_PATCH, _PATCH, 3)))
    height = max(im.shape[0] for im in images)
    width = sum(im.shape[1] for im in images)
    atlas = np.zeros((height, width, 3), dtype=np.float32)
    x = 0
    for p, im in zip(parts, images):
        h, w = im.shape[:2]
        atlas[:h, x:x + w] = im
        if p.texture is not None:
            uv = p.uvs.astype(np.float64)
            uv = np.where((uv < 0) | (uv > 1), uv - np.floor(uv), uv)
        else:
            uv = np.full((len(p.vertices), 2), 0.5)
        u = (x + uv[:, 0] * w) / width
        v = 1.0 - (1.0 - uv[:, 1]) * h / height
        uv_list.append(np.stack([u, v], axis=-1).astype(np.float32))
        x += w
    merged = _concat(parts)
    merged.colors, merged.uvs, merged.texture = None, np.concatenate(uv_list), atlas
    return merged


def _concat(parts: List[_Part]) -> _Part:
    offsets = np.cumsum([0] + [len(p.vertices) for p in parts[:-1]])
    vertices = np.concatenate([p.vertices for p in parts])
    faces = np.concatenate([p.faces + o for p, o in zip(parts, offsets)])
    colors = None
    if any(p.colors is not None for p in parts):
        colors = np.concatenate([p.colors if p.colors is not None
                                 else np.full((len(p.vertices), 3), _DEFAULT_GREY, np.float32) for p in parts])
    return _Part(vertices, faces, colors=colors)


def _merge(parts: List[_Part]) -> _Part:
    if len(parts) == 1:
        return parts[0]
    if any(p.texture is not None for p in parts):
        return _atlas(parts)
    return _concat(parts)


def _normalized_colors(colors) -> np.ndarray:
    """A ``COLOR_0`` accessor's values as floats in [0, 1] (normalised integers divided by their maximum)."""
    colors = np.asarray(colors)
    if colors.dtype.kind in "iu":
        return colors.astype(np.float64) / np.iinfo(colors.dtype).max
    return colors.astype(np.float64)


def _read_gltf_scene(path: Path):
    """Read a glTF/GLB scene with trimesh's glTF loader, taking ``COLOR_0`` (float, or normalised
    unsigned byte or short, always linear) from the raw accessors before trimesh interprets it:
    trimesh would keep linear values as if they were display values and mis-scale unsigned-short
    ones. Colours of a primitive without a material become sRGB here (trimesh then stores them
    as 8-bit); colours next to a material stay linear floats for :func:`_part_from_trimesh`,
    which multiplies them by the material's linear ``baseColorFactor`` first."""
    import trimesh
    from trimesh.exchange.gltf import load_glb, load_gltf

    loader = load_glb if path.suffix.lower() == ".glb" else load_gltf
    with open(path, "rb") as f:
        kwargs = loader(f, resolver=trimesh.resolvers.FilePathResolver(str(path)), process=False)
    for geom in (kwargs.get("geometry") or {}).values():
        if not isinstance(geom, dict):
            continue
        if geom.get("vertex_colors") is not None:
            colors = _normalized_colors(geom["vertex_colors"])
            colors[:, :3] = linear_to_srgb(colors[:, :3])
            geom["vertex_colors"] = colors
        attributes = getattr(geom.get("visual"), "vertex_attributes", None)
        if attributes is not None and attributes.get("color") is not None:
            attributes["color"] = _normalized_colors(attributes["color"])
    return trimesh.load_scene(kwargs)


def _read_scene(path: Path):
    import trimesh

    try:
        if path.suffix.lower() in _GLTF_EXTS:
            return _read_gltf_scene(path)
        return trimesh.load(str(path), force="scene", process=False)
    except Exception as exc:  # trimesh raises many unrelated types on malformed input
        if isinstance(exc, IndexError) and "out of bounds" in str(exc):
            # numpy's message when trimesh indexes the vertices with the file's faces
            raise MeshError(f"face indices out of range ({exc})", path) from exc
        raise CorruptFileError(path, f"could not be read as {path.suffix.lower()[1:].upper()}: "
                                     f"{type(exc).__name__}: {exc}") from exc


def load_mesh(path: PathLike, frame: str = "auto") -> Mesh:
    """Read a triangle mesh, flattening a scene's nodes with their transforms.

    Args:
        path: a ``.glb``, ``.gltf``, ``.obj``, ``.ply``, ``.stl`` or ``.off`` file.
        frame: "auto", "gltf" or "sharpit" (see the module docstring).
    Returns:
        a validated :class:`~sharpit.mesh.Mesh` in the sharpit world frame with ``source`` set.
        A base-colour texture (glTF) or diffuse map (OBJ) becomes ``uvs`` + ``texture``
        (several textures are packed side by side into one); per-vertex colours, per-face
        colours and uniform material colours become ``vertex_colors``.
    Raises:
        AssetNotFoundError, UnsupportedFormatError, CorruptFileError, MeshError (empty, NaN/inf,
        bad indices, degenerate): each naming the file.
    """
    import trimesh

    path = Path(path)
    to_sharpit = _is_gltf_frame(path, frame)
    if not path.is_file():
        raise AssetNotFoundError(path, None if not path.exists() else "is not a file")
    if path.suffix.lower() not in READ_FORMATS:
        raise UnsupportedFormatError(path, f"unknown mesh format {path.suffix or '(no extension)'!r}; "
                                           f"expected one of {', '.join(READ_FORMATS)}")
    scene = _read_scene(path)
    parts = []
    for node in scene.graph.nodes_geometry:
        transform, name = scene.graph[node]
        geom = scene.geometry.get(name)
        if isinstance(geom, trimesh.Trimesh) and len(geom.faces):
            parts.append(_part_from_trimesh(geom, np.asarray(transform, dtype=np.float64),
                                            path.suffix.lower() in _GLTF_EXTS))
    if not parts:
        kinds = sorted({type(g).__name__ for g in scene.geometry.values()})
        what = f"only {', '.join(kinds)}" if kinds else "no geometry"
        raise MeshError(f"mesh is empty: the file holds {what}, no triangles", path)
    part = _merge(parts)
    vertices = torch.from_numpy(np.ascontiguousarray(part.vertices)).float()
    if to_sharpit:
        vertices = gltf_to_sharpit(vertices)
    mesh = Mesh(vertices, torch.from_numpy(np.ascontiguousarray(part.faces)),
                vertex_colors=None if part.colors is None else torch.from_numpy(np.ascontiguousarray(part.colors)),
                uvs=None if part.uvs is None else torch.from_numpy(np.ascontiguousarray(part.uvs)),
                texture=None if part.texture is None else torch.from_numpy(np.ascontiguousarray(part.texture)),
                source=str(path))
    return mesh.validate()


# -- saving -----------------------------------------------------------------------------------


def _to_uint8(values: torch.Tensor) -> np.ndarray:
    return (values.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8).cpu().numpy()


def _diffuse_pbr_material(name: str, image=None):
    """A white, non-metallic, fully rough glTF material (optionally with a base-colour texture):
    viewers then shade a diffuse surface, as sharpit renders, instead of the default material a
    primitive without one gets, which is fully metallic (glTF 2.0 specification, section 3.9.6:
    every property at its default, and ``pbrMetallicRoughness.metallicFactor`` defaults to 1)."""
    from trimesh.visual.material import PBRMaterial

    return PBRMaterial(baseColorTexture=image, baseColorFactor=(255, 255, 255, 255), metallicFactor=0.0,
                       roughnessFactor=1.0, name=name)


def _to_trimesh(mesh: Mesh, vertices: torch.Tensor, ext: str, material_name: str):
    import trimesh
    from trimesh.visual.material import SimpleMaterial

    v = vertices.detach().double().cpu().numpy()
    f = mesh.faces.detach().cpu().numpy()
    if mesh.has_texture:
        image = Image.fromarray(_to_uint8(mesh.texture))
        uv = mesh.uvs.detach().double().cpu().numpy()
        if ext == ".obj":
            material = SimpleMaterial(image=image, diffuse=(255, 255, 255, 255), name=material_name)
        else:
            material = _diffuse_pbr_material(material_name, image)
        visual = trimesh.visual.TextureVisuals(uv=uv, material=material)
    elif mesh.vertex_colors is not None and ext in _GLTF_EXTS:   # linear COLOR_0 is added by _encode
        visual = trimesh.visual.TextureVisuals(material=_diffuse_pbr_material(material_name))
    elif mesh.vertex_colors is not None:
        rgb = _to_uint8(mesh.vertex_colors)
        visual = trimesh.visual.ColorVisuals(vertex_colors=np.concatenate([rgb, np.full((len(rgb), 1), 255, np.uint8)], 1))
    else:
        visual = None
    return trimesh.Trimesh(v, f, visual=visual, process=False)


def _add_linear_color_0(tree: dict, buffer: bytes, srgb: torch.Tensor) -> bytes:
    """Point the single primitive's ``COLOR_0`` at a new float32 VEC3 accessor holding
    ``srgb_to_linear(srgb)``, appended to ``buffer``; returns the new buffer (``tree`` is edited)."""
    primitives = [p for m in tree.get("meshes", []) for p in m.get("primitives", [])]
    if len(primitives) != 1:
        raise MeshError(f"internal: expected one glTF primitive to colour, found {len(primitives)}")
    linear = srgb_to_linear(srgb.detach().float().cpu()).numpy().astype("<f4")
    if tree["accessors"][primitives[0]["attributes"]["POSITION"]]["count"] != len(linear):
        raise MeshError("internal: the exported glTF reordered the vertices; cannot attach COLOR_0")
    offset = len(buffer) + (-len(buffer)) % 4
    data = linear.tobytes()
    buffer = buffer + b"\0" * (offset - len(buffer)) + data
    tree.setdefault("bufferViews", []).append({"buffer": 0, "byteOffset": offset, "byteLength": len(data),
                                               "target": 34962})
    tree["accessors"].append({"bufferView": len(tree["bufferViews"]) - 1, "componentType": 5126,
                              "count": len(linear), "type": "VEC3"})
    primitives[0]["attributes"]["COLOR_0"] = len(tree["accessors"]) - 1
    tree["buffers"][0]["byteLength"] = len(buffer)
    return buffer


def _glb_with_color(glb: bytes, srgb: torch.Tensor) -> bytes:
    json_len = struct.unpack_from("<I", glb, 12)[0]
    tree = json.loads(glb[20:20 + json_len])
    bin_start = 20 + json_len
    bin_len = struct.unpack_from("<I", glb, bin_start)[0]
    buffer = _add_linear_color_0(tree, glb[bin_start + 8:bin_start + 8 + bin_len], srgb)
    text = json.dumps(tree, separators=(",", ":")).encode("utf-8")
    text += b" " * ((-len(text)) % 4)
    buffer += b"\0" * ((-len(buffer)) % 4)
    body = struct.pack("<I4s", len(text), b"JSON") + text + struct.pack("<I4s", len(buffer), b"BIN\0") + buffer
    return struct.pack("<4sII", b"glTF", 2, 12 + len(body)) + body


def _gltf_with_color(document: bytes, srgb: torch.Tensor) -> bytes:
    tree = json.loads(document)
    header, _, payload = tree["buffers"][0]["uri"].partition(",")
    buffer = _add_linear_color_0(tree, base64.b64decode(payload), srgb)
    tree["buffers"][0]["uri"] = f"{header},{base64.b64encode(buffer).decode('ascii')}"
    return json.dumps(tree).encode("utf-8")


def _encode(tm, path: Path, vertex_colors=None) -> Dict[str, bytes]:
    """Serialise to ``{file name: bytes}``: ``path.name`` plus any side files (OBJ material).
    ``vertex_colors`` (sRGB) are written by this function for glTF (as linear ``COLOR_0``)."""
    import trimesh

    ext = path.suffix.lower()
    if ext == ".glb":
        glb = trimesh.exchange.gltf.export_glb(trimesh.Scene(tm))
        return {path.name: glb if vertex_colors is None else _glb_with_color(glb, vertex_colors)}
    if ext == ".gltf":
        files = trimesh.exchange.gltf.export_gltf(trimesh.Scene(tm), embed_buffers=True)
        document = files["model.gltf"]
        return {path.name: document if vertex_colors is None else _gltf_with_color(document, vertex_colors)}
    if ext == ".obj":
        text, files = trimesh.exchange.obj.export_obj(tm, include_normals=False, include_texture=True,
                                                      return_texture=True, mtl_name=path.stem + ".mtl")
        return {**files, path.name: text.encode("utf-8")}
    return {path.name: trimesh.exchange.ply.export_ply(tm, encoding="binary")}


def save_mesh(mesh: Mesh, path: PathLike, frame: str = "auto", overwrite: bool = True) -> Path:
    """Write ``mesh`` (in the sharpit world frame) to ``path``, atomically.

    GLB/glTF store vertex colours as linear float ``COLOR_0`` or a texture as the PBR base-colour
    texture, under a white, non-metallic material (a ``.gltf`` is one self-contained file with
    embedded buffers); OBJ writes ``<stem>.mtl`` and ``<stem>.png`` next to itself for a texture
    and stores vertex colours (sRGB, 8-bit) after the positions; PLY stores vertex colours (sRGB,
    8-bit; a textured mesh cannot be written to PLY).

    Args:
        mesh: the mesh to write.
        path: destination with one of :data:`WRITE_FORMATS`; parent folders are created.
        frame: "auto", "gltf" or "sharpit" (see the module docstring).
        overwrite: replace an existing file; with False an existing file raises OutputExistsError.
    Returns:
        the path written.
    """
    if not isinstance(mesh, Mesh):
        raise InputError(f"expected a sharpit.mesh.Mesh, got {type(mesh).__name__}")
    path = Path(path)
    ext = path.suffix.lower()
    to_gltf = _is_gltf_frame(path, frame)
    if ext not in WRITE_FORMATS:
        raise UnsupportedFormatError(path, f"cannot write {ext or '(no extension)'!r} files; "
                                           f"expected one of {', '.join(WRITE_FORMATS)}")
    if ext == ".ply" and mesh.has_texture:
        raise UnsupportedFormatError(path, "PLY cannot hold a texture; save a textured mesh as .glb, "
                                           ".gltf or .obj")
    if path.exists() and not overwrite:
        raise OutputExistsError(path)
    mesh.validate()
    vertices = sharpit_to_gltf(mesh.vertices) if to_gltf else mesh.vertices
    gltf_colors = mesh.vertex_colors if ext in _GLTF_EXTS and not mesh.has_texture else None
    files = _encode(_to_trimesh(mesh, vertices, ext, path.stem), path, gltf_colors)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Side files first, so the main file never points at missing ones.
        for name in sorted(files, key=lambda n: n == path.name):
            write_bytes_atomic(path.parent / name, files[name])
    except OSError as exc:
        raise OutputNotWritableError(path, f"could not write: {exc.strerror or exc}") from exc
    return path
