"""Reading and writing meshes as :class:`~sharpit.mesh.Mesh`.

What :func:`load_mesh` reads (:data:`READ_FORMATS`; parsing is trimesh's, checked and completed here):

* glTF 2.0 (``.glb``; ``.gltf`` with embedded, data-URI or side-file buffers): the triangles of the
  default scene (the first if none is named) with their node transforms, from primitives of mode
  TRIANGLES, TRIANGLE_STRIP and TRIANGLE_FAN (strips and fans become triangles as the glTF 2.0
  specification, section 3.7.2.1, orders them); integer positions and texture coordinates, normalised
  or not (core glTF and ``KHR_mesh_quantization``); Draco-compressed primitives
  (``KHR_draco_mesh_compression``) when the optional decoder is installed (``pip install DracoPy``,
  or ``pip install 'sharpit[draco]'``); base colour from ``baseColorTexture`` (``TEXCOORD_0``),
  ``baseColorFactor`` and ``COLOR_0``, and the diffuse colour of
  ``KHR_materials_pbrSpecularGlossiness``. Morph targets, skins and animations are ignored (the
  base mesh is read). Point and line primitives next to triangles are skipped.
* Wavefront OBJ (``.obj``): faces (polygons triangulated), the MTL's diffuse map (``map_Kd``) or
  colour (``Kd``), and vertex colours written after the positions (``v x y z r g b``).
* PLY (``.ply``, ASCII or binary): faces (polygons triangulated), per-vertex or per-face colours,
  and texture coordinates with a texture named by a ``comment TextureFile`` line.
* STL (``.stl``, ASCII or binary) and OFF (``.off``): triangles and polygons.

Refused, each with an error class from :mod:`sharpit.errors` naming the file and what to do: a file
with vertices but no faces (a point cloud) or with lines only (UnsupportedFormatError); glTF 1.0,
Draco without the decoder, ``EXT_meshopt_compression`` and sparse accessors in triangle geometry
(UnsupportedFormatError); a glTF whose side files are missing (AssetNotFoundError); malformed or
truncated files (CorruptFileError); empty, non-finite, out-of-range or degenerate geometry
(MeshError). A parser's own exception never escapes. Warned about and otherwise ignored:
``KHR_texture_transform`` on a base-colour texture, missing texture files, and any other glTF
extension a file lists as required that sharpit does not interpret (its geometry is read without it).

Frames (one convention place: :mod:`sharpit.cameras`): sharpit's world is z-up with an asset's
front toward +x. glTF is y-up with the front toward +Z by its specification, so ``.glb``/``.gltf``
are converted on load (and back on save) with :func:`~sharpit.cameras.gltf_to_sharpit`.
OBJ, PLY, STL and OFF carry no frame; ``up_axis`` says which one a file uses:

* ``"z"``: z-up, front +x, i.e. sharpit's own frame (what :func:`save_mesh` writes by default);
* ``"y"``: y-up with the front toward +Z, the glTF convention (also what Blender's OBJ exporter
  writes by default), converted with :func:`~sharpit.cameras.gltf_to_sharpit`;
* ``"auto"`` (default): the format's rule: glTF ``"y"``, every other format ``"z"``.

For a glTF file ``up_axis`` may only be ``"auto"`` or ``"y"``: anything else raises InputError,
never silently ignored. ``frame`` is the older, lower-level switch over the file's raw coordinates:
``"gltf"`` treats them as glTF-frame (y-up) and ``"sharpit"`` as sharpit-frame whatever the format
(e.g. to read a glTF's raw coordinates), ``"auto"`` (default) defers to ``up_axis``; giving both
``frame`` and ``up_axis`` so that they disagree raises InputError.

Colours: a :class:`~sharpit.mesh.Mesh` holds sRGB (display) colours. glTF stores vertex colours
(``COLOR_0``) and ``baseColorFactor`` in linear light and base-colour textures in sRGB, and a
primitive's base colour is factor x texture x ``COLOR_0`` (glTF 2.0 specification, sections 3.7.2.1
and 3.9.2), so ``.glb``/``.gltf`` colours are converted at this boundary (:mod:`sharpit.colors`):
vertex colours are written as float32 linear ``COLOR_0`` under a white, non-metallic material, and
read back, whatever their accessor type (float, normalised unsigned byte or short) and material,
as sRGB. OBJ and PLY colours are display values and stay as stored. A save/load round trip returns
glTF vertex colours to float precision, 8-bit ones (OBJ, PLY, textures) to within 0.5/255. A file
without any material or colour (e.g. an OBJ with texture coordinates but no MTL) gives a mesh
without colours or texture.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import re
import struct
import traceback
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union
from urllib.parse import unquote

import numpy as np
import torch
from PIL import Image

from .atomic import write_bytes_atomic
from .cameras import gltf_to_sharpit, sharpit_to_gltf
from .colors import NEUTRAL_GREY, linear_to_srgb, srgb_to_linear
from .formats import MESH_READ_FORMATS, MESH_WRITE_FORMATS
from .errors import (AssetNotFoundError, CorruptFileError, InputError, MeshError, OutputExistsError,
                     OutputNotWritableError, SharpItError, UnsupportedFormatError)
from .mesh import Mesh
from .warn import warn

__all__ = ["load_mesh", "save_mesh", "READ_FORMATS", "WRITE_FORMATS", "FRAMES", "UP_AXES"]

#: File extensions :func:`load_mesh` reads (any letter case).
READ_FORMATS = MESH_READ_FORMATS
#: File extensions :func:`save_mesh` writes (PLY without textures).
WRITE_FORMATS = MESH_WRITE_FORMATS
FRAMES = ("auto", "gltf", "sharpit")
#: Values of ``up_axis`` (see the module docstring).
UP_AXES = ("auto", "y", "z")
_UP_AXIS_FRAME = {"y": "gltf", "z": "sharpit"}
_GLTF_EXTS = (".glb", ".gltf")
#: Side in pixels of the solid patch an untextured part gets in a combined texture atlas.
_PATCH = 4
_DRACO_FIX = ("install the optional decoder with `pip install DracoPy` (or `pip install 'sharpit[draco]'`), "
              "or re-export the asset without Draco compression (e.g. from Blender with the glTF "
              "exporter's compression option off)")
_GLTF1_FIX = ("glTF 1.0 is not supported; convert it to glTF 2.0, e.g. with Cesium's gltf-pipeline: "
              "`npx gltf-pipeline -i old.gltf -o new.glb`")

PathLike = Union[str, "os.PathLike[str]"]


def _is_gltf_frame(path: Path, frame: str, up_axis: str = "auto") -> bool:
    """Whether the file's raw coordinates are in the glTF frame (y up, front +Z) rather than
    sharpit's (z up, front +x); the rules are in the module docstring."""
    if frame not in FRAMES:
        raise InputError(f"frame must be one of {FRAMES}, got {frame!r}")
    axis = up_axis.lower() if isinstance(up_axis, str) else up_axis
    if axis not in UP_AXES:
        raise InputError(f"up_axis must be one of {UP_AXES}, got {up_axis!r}")
    is_gltf = path.suffix.lower() in _GLTF_EXTS
    if axis == "auto":
        return frame == "gltf" or (frame == "auto" and is_gltf)
    if is_gltf and axis != "y":
        raise InputError(f"{path}: glTF files are y-up by the glTF 2.0 specification, so up_axis={up_axis!r} "
                         f"cannot apply (up_axis is for OBJ, PLY, STL and OFF); leave it at 'auto', or pass "
                         f"frame='sharpit' to take the file's raw coordinates as sharpit's z-up frame")
    if frame != "auto" and frame != _UP_AXIS_FRAME[axis]:
        raise InputError(f"frame={frame!r} and up_axis={up_axis!r} disagree; give only one of them")
    return axis == "y"


# -- loading ----------------------------------------------------------------------------------


class _Part:
    """One scene geometry in world coordinates with at most one kind of colour."""

    def __init__(self, vertices, faces, colors=None, uvs=None, texture=None):
        self.vertices, self.faces = vertices, faces
        self.colors, self.uvs, self.texture = colors, uvs, texture


def _rgb01(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def _is_stand_in_material(material) -> bool:
    """Whether ``material`` is the 2x2 grey stand-in trimesh invents for texture coordinates
    without a material (``trimesh.visual.material.empty_material``, which trimesh then names like
    any other), which is not in the file."""
    from trimesh.visual.material import SimpleMaterial, empty_material

    if type(material) is not SimpleMaterial:
        return False
    image = material.image
    if image is None or getattr(image, "size", None) != (2, 2):
        return False
    return np.array_equal(np.asarray(image), np.asarray(empty_material().image))


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
        if _is_stand_in_material(material):
            return _Part(vertices, faces)
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
                warn("glTF vertex colours (COLOR_0) that tint a base-colour texture are dropped: a "
                     "sharpit Mesh holds a texture or vertex colours")
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
                warn("a vertex-coloured part of a textured scene is reduced to its mean colour")
            colour = p.colors.mean(0) if p.colors is not None else np.full(3, NEUTRAL_GREY, np.float32)
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
                                 else np.full((len(p.vertices), 3), NEUTRAL_GREY, np.float32) for p in parts])
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


def _dequantized(values, normalized: bool) -> np.ndarray:
    """Accessor values as float64: normalised integers mapped to [0, 1] (unsigned) or [-1, 1]
    (signed) as the glTF 2.0 specification (section 3.11) decodes them; others cast."""
    values = np.asarray(values)
    if not normalized or values.dtype.kind not in "iu":
        return values.astype(np.float64)
    out = values.astype(np.float64) / np.iinfo(values.dtype).max
    return np.maximum(out, -1.0) if values.dtype.kind == "i" else out


# glTF 2.0 accessor component sizes in bytes and element widths (specification, section 3.6.2).
_COMPONENT_BYTES = {5120: 1, 5121: 1, 5122: 2, 5123: 2, 5125: 4, 5126: 4}
_TYPE_WIDTHS = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT2": 4, "MAT3": 9, "MAT4": 16}
_MODE_NAMES = {0: "POINTS", 1: "LINES", 2: "LINE_LOOP", 3: "LINE_STRIP", 4: "TRIANGLES",
               5: "TRIANGLE_STRIP", 6: "TRIANGLE_FAN"}
_TRIANGLE_MODES = (4, 5, 6)
#: Custom-attribute names (trimesh hands attributes starting with "_" back untouched) under
#: which the rewritten glTF carries a primitive's identity, original indices and raw UVs.
_TAG = "_SHARPIT_{}_{}_{}"
_TAG_RE = re.compile(r"^_SHARPIT_(ID|IDX|UV)_(\d+)_(\d+)$")
#: Required glTF extensions whose effect sharpit reproduces (or that do not change geometry or
#: base colour); others produce a warning.
_KNOWN_REQUIRED = {"KHR_draco_mesh_compression", "KHR_mesh_quantization", "KHR_materials_pbrSpecularGlossiness",
                   "KHR_materials_unlit", "EXT_texture_webp", "KHR_texture_transform"}


class _Gltf:
    """A glTF document checked before trimesh parses it, with the rewrite trimesh reads.

    Attributes:
        data: the file's bytes.
        tree: the JSON document, rewritten where needed: primitives without POSITION are
            dropped; strips and fans become TRIANGLE_STRIP primitives without indices, and they
            and primitives with integer positions or texture coordinates are tagged with their
            (mesh, primitive) identity (and original indices, raw texture coordinates) so that
            :func:`_finish_gltf_geometry` can finish what trimesh built from them.
        binary: the GLB binary chunk, if any.
        topology: ``{(mesh, primitive): original mode}`` of strips and fans.
        normalized: ``{(mesh, primitive): (position normalised, uv normalised)}`` for primitives
            whose positions or ``TEXCOORD_0`` are integers.
        modes: how many primitives of each mode the file has.
    """

    def __init__(self, path: Path, data: bytes, tree: dict, binary: Optional[bytes]):
        self.path, self.data, self.tree, self.binary = path, data, tree, binary
        self.topology: Dict[Tuple[int, int], int] = {}
        self.normalized: Dict[Tuple[int, int], Tuple[bool, bool]] = {}
        self.modes: Counter = Counter()
        self.points = 0
        #: Whether :attr:`tree` differs from the file's document.
        self.rewritten = False
        #: Warnings for the caller of :func:`load_mesh` (issued there, so they point at its line).
        self.notes: List[str] = []


def _corrupt(path: Path, problem: str) -> CorruptFileError:
    kind = path.suffix.lower()[1:].upper() or "mesh"
    if kind in ("GLB", "GLTF"):
        kind = "glTF"
    return CorruptFileError(path, f"could not be read as {kind}: {problem}")


def _parse_json(path: Path, data: bytes) -> dict:
    try:
        tree = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise _corrupt(path, f"the JSON is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise _corrupt(path, f"invalid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from exc
    if not isinstance(tree, dict):
        raise _corrupt(path, f"the JSON document is a {type(tree).__name__}, not an object")
    return tree


def _split_glb(path: Path, data: bytes) -> Tuple[dict, Optional[bytes]]:
    """The JSON document and binary chunk of a GLB container (glTF 2.0 specification, section 4.4)."""
    if len(data) < 12:
        raise _corrupt(path, f"truncated: {len(data)} bytes, shorter than the 12-byte GLB header")
    _, version, length = struct.unpack_from("<4sII", data)
    if version == 1:
        raise UnsupportedFormatError(path, f"is a GLB 1 (glTF 1.0) file: {_GLTF1_FIX}")
    if version != 2:
        raise _corrupt(path, f"unknown GLB container version {version} (expected 2)")
    if length > len(data):
        raise _corrupt(path, f"truncated: the GLB header declares {length} bytes but the file has {len(data)}")
    chunks, offset = [], 12
    while offset + 8 <= length:
        size, kind = struct.unpack_from("<I4s", data, offset)
        if offset + 8 + size > length:
            raise _corrupt(path, f"truncated: GLB chunk {len(chunks)} declares {size} bytes, past the end of the file")
        chunks.append((kind, data[offset + 8:offset + 8 + size]))
        offset += 8 + size
    if not chunks or chunks[0][0] != b"JSON":
        raise _corrupt(path, "the GLB container's first chunk is not its JSON chunk")
    binary = next((body for kind, body in chunks[1:] if kind == b"BIN\0"), None)
    return _parse_json(path, chunks[0][1]), binary


def _pack_glb(tree: dict, binary: Optional[bytes]) -> bytes:
    """A GLB container holding ``tree`` and, if given, ``binary`` as its BIN chunk."""
    text = json.dumps(tree, separators=(",", ":")).encode("utf-8")
    text += b" " * ((-len(text)) % 4)
    body = struct.pack("<I4s", len(text), b"JSON") + text
    if binary is not None:
        binary = binary + b"\0" * ((-len(binary)) % 4)
        body += struct.pack("<I4s", len(binary), b"BIN\0") + binary
    return struct.pack("<4sII", b"glTF", 2, 12 + len(body)) + body


def _array(path: Path, owner: dict, key: str, where: str = "") -> list:
    value = owner.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise _corrupt(path, f"{where}'{key}' must be an array of objects, got {json.dumps(value)[:60]}")
    return value


def _index(path: Path, value, count: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _corrupt(path, f"{what} is {json.dumps(value)[:40]}, not an index")
    if not 0 <= value < count:
        raise _corrupt(path, f"{what} is {value}, out of range ({count} available)")
    return value


def _size(path: Path, value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _corrupt(path, f"{what} is {json.dumps(value)[:40]}, not a byte count")
    return value


def _have_dracopy() -> bool:
    try:
        import DracoPy  # noqa: F401
    except ImportError:
        return False
    return True


def _check_buffers(doc: _Gltf) -> List[int]:
    """The byte size of each buffer, checking that side files exist and hold what is declared."""
    path, sizes = doc.path, []
    for i, buffer in enumerate(_array(path, doc.tree, "buffers")):
        uri = buffer.get("uri")
        if uri is None:
            if i != 0 or doc.binary is None:
                raise _corrupt(path, f"buffer {i} has no uri and the file has no GLB binary chunk to stand for it")
            size = len(doc.binary)
        elif not isinstance(uri, str):
            raise _corrupt(path, f"buffer {i}'s uri is not a string")
        elif uri.startswith("data:"):
            head, sep, payload = uri.partition(",")
            if not sep or not head.endswith(";base64"):
                raise _corrupt(path, f"buffer {i}'s data URI is not base64")
            payload = payload.strip()
            size = len(payload) * 3 // 4 - len(payload[-2:]) + len(payload[-2:].rstrip("="))
        else:
            side = path.parent / unquote(uri)
            if not side.is_file():
                raise AssetNotFoundError(side, f"buffer file of {path.name} not found; keep a .gltf's .bin and "
                                               f"texture files next to it, or use a single .glb")
            size = side.stat().st_size
        declared = _size(path, buffer.get("byteLength"), f"buffer {i}'s byteLength")
        if declared > size:
            raise _corrupt(path, f"buffer {i} declares {declared} bytes but holds {size}")
        sizes.append(size)
    return sizes


def _check_gltf(doc: _Gltf) -> None:
    """Check the structure trimesh relies on (indices in range, byte ranges inside their buffers,
    a node tree without cycles) and refuse what it cannot read correctly, each with the reason."""
    path, tree = doc.path, doc.tree
    buffer_sizes = _check_buffers(doc)
    views = _array(path, tree, "bufferViews")
    for i, view in enumerate(views):
        b = _index(path, view.get("buffer"), len(buffer_sizes), f"bufferView {i}'s buffer")
        start = _size(path, view.get("byteOffset", 0), f"bufferView {i}'s byteOffset")
        length = _size(path, view.get("byteLength"), f"bufferView {i}'s byteLength")
        if start + length > buffer_sizes[b]:
            raise _corrupt(path, f"bufferView {i} (bytes {start} to {start + length}) runs past the end of "
                                 f"buffer {b} ({buffer_sizes[b]} bytes)")
        if "byteStride" in view and not _size(path, view["byteStride"], f"bufferView {i}'s byteStride"):
            raise _corrupt(path, f"bufferView {i}'s byteStride is 0")
    accessors = _array(path, tree, "accessors")
    for i, acc in enumerate(accessors):
        component, kind = acc.get("componentType"), acc.get("type")
        if component not in _COMPONENT_BYTES or kind not in _TYPE_WIDTHS:
            raise _corrupt(path, f"accessor {i} has an unknown componentType/type ({component!r}, {kind!r})")
        count = _size(path, acc.get("count"), f"accessor {i}'s count")
        if "bufferView" in acc:
            v = _index(path, acc["bufferView"], len(views), f"accessor {i}'s bufferView")
            element = _COMPONENT_BYTES[component] * _TYPE_WIDTHS[kind]
            stride = views[v].get("byteStride") or element
            end = _size(path, acc.get("byteOffset", 0), f"accessor {i}'s byteOffset")
            end += (count - 1) * stride + element if count else 0
            if end > views[v]["byteLength"]:
                raise _corrupt(path, f"accessor {i} ({count} x {kind}) reads {end} bytes from bufferView {v}, "
                                     f"which holds {views[v]['byteLength']}")
    materials = _array(path, tree, "materials")
    transformed = []
    textures = _array(path, tree, "textures")
    images = _array(path, tree, "images")
    for i, texture in enumerate(textures):
        if "source" in texture:
            _index(path, texture["source"], len(images), f"texture {i}'s source")
    for i, material in enumerate(materials):
        pbr = material.get("pbrMetallicRoughness", {})
        if not isinstance(pbr, dict):
            raise _corrupt(path, f"material {i}'s pbrMetallicRoughness is not an object")
        base = pbr.get("baseColorTexture")
        if base is not None:
            if not isinstance(base, dict):
                raise _corrupt(path, f"material {i}'s baseColorTexture is not an object")
            _index(path, base.get("index"), len(textures), f"material {i}'s baseColorTexture index")
            extensions = base.get("extensions")
            if isinstance(extensions, dict) and "KHR_texture_transform" in extensions:
                transformed.append(str(i))
    if transformed:
        doc.notes.append(f"{path}: the base-colour texture of material(s) {', '.join(transformed)} uses "
                         f"KHR_texture_transform, which is ignored; the texture may be misplaced on the surface")
    for i, image in enumerate(images):
        uri = image.get("uri")
        if isinstance(uri, str) and not uri.startswith("data:") and not (path.parent / unquote(uri)).is_file():
            doc.notes.append(f"{path}: texture file {uri!r} (image {i}) is missing; read without it")
    required = tree.get("extensionsRequired", [])
    required = set(required) if isinstance(required, list) and all(isinstance(r, str) for r in required) else set()
    if "EXT_meshopt_compression" in required:
        raise UnsupportedFormatError(path, "its geometry is compressed with the glTF extension EXT_meshopt_compression, "
                                           "which sharpit cannot decode; re-export the asset without meshopt "
                                           "compression")
    unknown = sorted(required - _KNOWN_REQUIRED - {"EXT_meshopt_compression"})
    if unknown:
        doc.notes.append(f"{path}: requires glTF extension(s) {', '.join(unknown)}, which sharpit does not "
                         f"interpret; its geometry is read, its appearance may differ")
    _check_meshes(doc, accessors, materials)
    _check_nodes(doc)


def _check_meshes(doc: _Gltf, accessors: list, materials: list) -> None:
    """Check primitives and rewrite strips and fans (see :class:`_Gltf`)."""
    path = doc.path
    for m, mesh in enumerate(_array(path, doc.tree, "meshes")):
        primitives = _array(path, mesh, "primitives", f"mesh {m}'s ")
        kept = []
        for p, prim in enumerate(primitives):
            what = f"mesh {m} primitive {p}"
            attributes = prim.get("attributes")
            if not isinstance(attributes, dict):
                raise _corrupt(path, f"{what}'s attributes are not an object")
            for name, value in attributes.items():
                _index(path, value, len(accessors), f"{what}'s {name} accessor")
            mode = prim.get("mode", 4)
            if isinstance(mode, bool) or not isinstance(mode, int) or mode not in _MODE_NAMES:
                raise _corrupt(path, f"{what} has an unknown mode {json.dumps(mode)[:20]}")
            if "indices" in prim:
                _index(path, prim["indices"], len(accessors), f"{what}'s indices accessor")
            if "material" in prim:
                _index(path, prim["material"], len(materials), f"{what}'s material")
            if "POSITION" not in attributes:
                doc.rewritten = True
                continue    # nothing to draw (glTF 2.0 specification, section 3.7.2.1)
            doc.modes[mode] += 1
            position = accessors[attributes["POSITION"]]
            if mode == 0:
                doc.points += position["count"]
            if mode not in _TRIANGLE_MODES:
                kept.append(prim)
                continue
            draco = (prim.get("extensions") or {}).get("KHR_draco_mesh_compression")
            if draco is not None and "bufferView" not in position and not _have_dracopy():
                raise UnsupportedFormatError(path, f"its geometry is compressed with the glTF extension "
                                                   f"KHR_draco_mesh_compression: {_DRACO_FIX}")
            uv = attributes.get("TEXCOORD_0")
            geometry = [("POSITION", attributes["POSITION"]), ("indices", prim.get("indices")), ("TEXCOORD_0", uv)]
            for name, a in geometry:
                if a is not None and "sparse" in accessors[a]:
                    raise UnsupportedFormatError(path, f"{what}'s {name} accessor is sparse, which sharpit does not "
                                                       f"read; re-export the asset without sparse accessors")
            count = accessors[prim["indices"]]["count"] if "indices" in prim else position["count"]
            if mode == 4 and count % 3:
                raise _corrupt(path, f"{what} is a triangle list of {count} {'indices' if 'indices' in prim else 'vertices'}, "
                                     f"not a multiple of 3")
            uv_int = uv is not None and accessors[uv]["componentType"] != 5126
            if mode in (5, 6) or position["componentType"] != 5126 or uv_int:
                doc.rewritten = True
                prim = dict(prim, attributes=dict(attributes))
                prim["attributes"][_TAG.format("ID", m, p)] = attributes["POSITION"]
            if mode in (5, 6):
                if "indices" in prim:
                    prim["attributes"][_TAG.format("IDX", m, p)] = prim.pop("indices")
                prim["mode"] = 5
                doc.topology[(m, p)] = mode
            if position["componentType"] != 5126 or uv_int:
                doc.normalized[(m, p)] = (bool(position.get("normalized")),
                                          bool(uv_int and accessors[uv].get("normalized")))
                if uv_int:
                    prim["attributes"][_TAG.format("UV", m, p)] = uv
            kept.append(prim)
        mesh["primitives"] = kept


def _check_nodes(doc: _Gltf) -> None:
    path, tree = doc.path, doc.tree
    nodes = _array(path, tree, "nodes")
    meshes = tree.get("meshes", [])
    children = []
    for n, node in enumerate(nodes):
        if "mesh" in node:
            _index(path, node["mesh"], len(meshes), f"node {n}'s mesh")
        kids = node.get("children", [])
        if not isinstance(kids, list):
            raise _corrupt(path, f"node {n}'s children are not an array")
        children.append([_index(path, k, len(nodes), f"node {n}'s child") for k in kids])
    state = [0] * len(nodes)        # 0 unvisited, 1 on the current path, 2 done
    for root in range(len(nodes)):
        stack = [(root, iter(children[root]))] if state[root] == 0 else []
        if stack:
            state[root] = 1
        while stack:
            node, it = stack[-1]
            child = next(it, None)
            if child is None:
                state[node] = 2
                stack.pop()
            elif state[child] == 1:
                raise _corrupt(path, f"its node hierarchy has a cycle (node {node} has node {child} among its "
                                     f"children and ancestors)")
            elif state[child] == 0:
                state[child] = 1
                stack.append((child, iter(children[child])))
    scenes = _array(path, tree, "scenes")
    for s, scene in enumerate(scenes):
        roots = scene.get("nodes", [])
        if not isinstance(roots, list):
            raise _corrupt(path, f"scene {s}'s nodes are not an array")
        for r in roots:
            _index(path, r, len(nodes), f"scene {s}'s node")
    if "scene" in tree:
        _index(path, tree["scene"], len(scenes), "the default scene")


def _open_gltf(path: Path) -> _Gltf:
    data = path.read_bytes()
    if data[:4] == b"glTF":
        tree, binary = _split_glb(path, data)
    elif path.suffix.lower() == ".glb":
        raise _corrupt(path, "not a GLB file: it does not start with the bytes 'glTF'")
    else:
        tree, binary = _parse_json(path, data), None
    asset = tree.get("asset") if isinstance(tree.get("asset"), dict) else {}
    version = str(asset.get("version", "2.0"))
    if version.split(".")[0].strip() in ("0", "1"):
        raise UnsupportedFormatError(path, f"is a glTF {version} file: {_GLTF1_FIX}")
    doc = _Gltf(path, data, tree, binary)
    _check_gltf(doc)
    return doc


def _strip_or_fan(order: np.ndarray, mode: int) -> np.ndarray:
    """(F, 3) triangles of a TRIANGLE_STRIP (5) or TRIANGLE_FAN (6) over the vertex ``order``, in
    the glTF 2.0 specification's order (section 3.7.2.1), without triangles that repeat a vertex
    (the joints of stitched strips)."""
    order = np.asarray(order, dtype=np.int64).reshape(-1)
    i = np.arange(max(len(order) - 2, 0))
    if mode == 5:
        odd = i % 2
        faces = np.stack([order[i], order[i + 1 + odd], order[i + 2 - odd]], axis=1)
    else:
        faces = np.stack([order[i + 1], order[i + 2], np.full(len(i), order[0] if len(order) else 0)], axis=1)
    keep = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])
    return faces[keep].reshape(-1, 3)


def _finish_gltf_geometry(doc: _Gltf, geom: dict) -> None:
    """Undo the tagging of :func:`_check_meshes` on one geometry trimesh built: triangles of
    strips and fans, dequantised positions and texture coordinates."""
    attributes = geom.get("vertex_attributes") or {}
    tags = {}
    for key in [k for k in attributes if _TAG_RE.match(k)]:
        kind, m, p = _TAG_RE.match(key).groups()
        tags[kind] = attributes.pop(key)
        tags["key"] = (int(m), int(p))
    if not attributes:
        geom.pop("vertex_attributes", None)
    if "key" not in tags:
        return
    key = tags["key"]
    if key in doc.topology:
        order = tags.get("IDX")
        geom["faces"] = _strip_or_fan(np.arange(len(geom["vertices"])) if order is None else order,
                                      doc.topology[key])
    if key in doc.normalized:
        position_normalized, uv_normalized = doc.normalized[key]
        geom["vertices"] = _dequantized(geom["vertices"], position_normalized)
        visual = geom.get("visual")
        if "UV" in tags and getattr(visual, "uv", None) is not None:
            uv = _dequantized(tags["UV"], uv_normalized)
            uv[:, 1] = 1.0 - uv[:, 1]    # trimesh's flip to a bottom-left origin, redone on the raw values
            visual.uv = uv


class _LogCapture(logging.Handler):
    """Collects trimesh's log records (warnings and worse) while a file is parsed."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: List[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _read_gltf_scene(path: Path):
    """Read a glTF/GLB scene: checked and rewritten by :func:`_open_gltf`, parsed by trimesh's glTF
    loader, then finished by :func:`_finish_gltf_geometry`. ``COLOR_0`` (float, or normalised
    unsigned byte or short, always linear) is taken from the raw accessors before trimesh interprets
    it: trimesh would keep linear values as if they were display values and mis-scale
    unsigned-short ones. Colours of a primitive without a material become sRGB here (trimesh then
    stores them as 8-bit); colours next to a material stay linear floats for
    :func:`_part_from_trimesh`, which multiplies them by the material's linear ``baseColorFactor``
    first."""
    import trimesh
    from trimesh.exchange.gltf import load_glb, load_gltf

    doc = _open_gltf(path)
    resolver = trimesh.resolvers.FilePathResolver(str(path))
    capture, logger = _LogCapture(), logging.getLogger("trimesh")
    logger.addHandler(capture)
    binary = doc.data[:4] == b"glTF"
    if binary and not doc.rewritten:
        data = doc.data     # the common case: no copy
    elif binary:
        data = _pack_glb(doc.tree, doc.binary)
    else:
        data = json.dumps(doc.tree).encode("utf-8")
    try:
        kwargs = (load_glb if binary else load_gltf)(io.BytesIO(data), resolver=resolver, process=False)
    finally:
        logger.removeHandler(capture)
    draco = [m for m in capture.messages if "KHR_draco_mesh_compression" in m]
    if any("didn't decode" in m for m in draco):
        raise _corrupt(path, "its Draco-compressed geometry (KHR_draco_mesh_compression) could not be decoded: "
                             + "; ".join(draco))
    doc.notes.extend(f"{path}: trimesh: {m}" for m in capture.messages if m not in draco)
    for geom in (kwargs.get("geometry") or {}).values():
        if not isinstance(geom, dict):
            continue
        _finish_gltf_geometry(doc, geom)
        if geom.get("vertex_colors") is not None:
            colors = _normalized_colors(geom["vertex_colors"])
            colors[:, :3] = linear_to_srgb(colors[:, :3])
            geom["vertex_colors"] = colors
        attributes = getattr(geom.get("visual"), "vertex_attributes", None)
        if attributes is not None and attributes.get("color") is not None:
            attributes["color"] = _normalized_colors(attributes["color"])
    return trimesh.load_scene(kwargs), doc


# -- headers of formats without a glTF pre-pass -------------------------------------------------


def _ply_counts(path: Path) -> Optional[Dict[str, int]]:
    """``{element name: count}`` from a PLY header, or None if the header cannot be parsed here."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    end = head.find(b"end_header")
    if not head.startswith(b"ply") or end < 0:
        return None
    counts = {}
    for line in head[:end].decode("ascii", "replace").splitlines():
        words = line.split()
        if len(words) >= 3 and words[0] == "element":
            try:
                counts[words[1]] = int(words[2])
            except ValueError:
                return None
    return counts


def _off_counts(path: Path) -> Optional[Tuple[int, int]]:
    """``(vertices, faces)`` declared by an OFF header, or None if it cannot be parsed here."""
    with open(path, "rb") as f:
        head = f.read(1 << 12).decode("ascii", "replace")
    words = " ".join(line.split("#")[0] for line in head.splitlines()).split()
    if not words or not words[0].upper().endswith("OFF"):
        return None
    try:
        return int(words[1]), int(words[2])
    except (IndexError, ValueError):
        return None


def _obj_counts(path: Path) -> Counter:
    """How many lines of each statement an OBJ file has (``v``, ``f``, ``l``, ``p``...)."""
    counts: Counter = Counter()
    with open(path, "rb") as f:
        for line in f:
            word = line.split(None, 1)[:1]
            if word:
                counts[word[0].decode("ascii", "replace")] += 1
    return counts


def _point_cloud(path: Path, points: int) -> UnsupportedFormatError:
    return UnsupportedFormatError(path, f"has {points} points and no faces: a point cloud, not a mesh; sharpit "
                                        f"needs a surface (reconstruct one first, e.g. Poisson surface "
                                        f"reconstruction in Open3D or MeshLab)")


def _lines_only(path: Path, what: str) -> UnsupportedFormatError:
    return UnsupportedFormatError(path, f"holds only {what} and no faces: lines, not a surface mesh")


def _no_triangles(path: Path, scene, doc: Optional[_Gltf]) -> SharpItError:
    """The error for a file that was read but holds no triangle: a point cloud, lines, a header
    whose faces could not be read, or nothing at all."""
    import trimesh

    geometry = list(scene.geometry.values())
    points = sum(len(g.vertices) for g in geometry
                 if isinstance(g, trimesh.PointCloud) or (isinstance(g, trimesh.Trimesh) and not len(g.faces)))
    ext = path.suffix.lower()
    if doc is not None:
        if not doc.modes:
            return MeshError("mesh is empty: the file holds no mesh primitives", path)
        lines = {_MODE_NAMES[m]: n for m, n in doc.modes.items() if m in (1, 2, 3)}
        if lines:
            return _lines_only(path, "line primitives (" + ", ".join(f"{n} {k}" for k, n in sorted(lines.items())) + ")")
        if set(doc.modes) == {0}:
            return _point_cloud(path, doc.points)
        if not any(isinstance(g, trimesh.Trimesh) and len(g.faces) for g in geometry) and not scene.graph.nodes_geometry:
            return MeshError("mesh is empty: no node of the scene shows a triangle primitive", path)
        return MeshError("mesh is empty: its triangle primitives have fewer than three distinct vertices", path)
    if ext == ".ply":
        counts = _ply_counts(path) or {}
        if counts.get("face", 0) > 0:
            return _corrupt(path, f"the header declares {counts['face']} faces but none could be read")
    if ext == ".off":
        counts = _off_counts(path)
        if counts is not None and counts[1] > 0:
            return _corrupt(path, f"the header declares {counts[1]} faces but none could be read")
    if ext == ".obj":
        counts = _obj_counts(path)
        if counts["f"]:
            return _corrupt(path, f"it has {counts['f']} face lines but none could be read")
        if counts["l"]:
            return _lines_only(path, f"{counts['l']} polylines ('l' lines)")
    if any(hasattr(g, "entities") for g in geometry):    # a trimesh Path (lines or curves)
        return _lines_only(path, "lines")
    if points:
        return _point_cloud(path, points)
    return MeshError("mesh is empty: the file holds no geometry", path)


def _read_scene(path: Path):
    """The trimesh scene of ``path`` and, for glTF, the checked document."""
    import trimesh

    if path.suffix.lower() in _GLTF_EXTS:
        return _read_gltf_scene(path)
    if path.suffix.lower() == ".ply":
        counts = _ply_counts(path)
        if counts is not None and counts.get("vertex", 0) > 0 and not counts.get("face", 0) \
                and not counts.get("tristrips", 0):
            raise _point_cloud(path, counts["vertex"])
    try:
        return trimesh.load(str(path), file_type=path.suffix.lower()[1:], force="scene", process=False), None
    except Exception as exc:  # trimesh raises many unrelated types on malformed input
        if isinstance(exc, IndexError) and "out of bounds" in str(exc):
            # numpy's message when trimesh indexes the vertices with the file's faces
            raise MeshError(f"face indices out of range ({exc})", path) from exc
        raise


def _describe(exc: BaseException) -> str:
    """``Type: message`` of a parser's exception; for a bare assertion, the check that failed."""
    text = str(exc).strip()
    if not text:
        frames = traceback.extract_tb(exc.__traceback__)
        if frames:
            last = frames[-1]
            module = Path(last.filename).parent.name + "/" + Path(last.filename).name
            return f"{type(exc).__name__} in the parser ({module}, line {last.lineno}: `{(last.line or '').strip()}`)"
    return f"{type(exc).__name__}: {text if len(text) <= 300 else text[:300] + '...'}"


def _load(path: Path, y_up: bool) -> Mesh:
    import trimesh

    if path.stat().st_size == 0:
        raise MeshError("mesh is empty: the file has 0 bytes", path)
    scene, doc = _read_scene(path)
    for note in doc.notes if doc is not None else ():
        warn(note)
    gltf = path.suffix.lower() in _GLTF_EXTS
    parts = []
    for node in scene.graph.nodes_geometry:
        transform, name = scene.graph[node]
        geom = scene.geometry.get(name)
        if isinstance(geom, trimesh.Trimesh) and len(geom.faces):
            parts.append(_part_from_trimesh(geom, np.asarray(transform, dtype=np.float64), gltf))
    if not parts:
        raise _no_triangles(path, scene, doc)
    part = _merge(parts)
    vertices = torch.from_numpy(np.ascontiguousarray(part.vertices)).float()
    if y_up:
        vertices = gltf_to_sharpit(vertices)
    mesh = Mesh(vertices, torch.from_numpy(np.ascontiguousarray(part.faces)),
                vertex_colors=None if part.colors is None else torch.from_numpy(np.ascontiguousarray(part.colors)),
                uvs=None if part.uvs is None else torch.from_numpy(np.ascontiguousarray(part.uvs)),
                texture=None if part.texture is None else torch.from_numpy(np.ascontiguousarray(part.texture)),
                source=str(path))
    return mesh.validate()


def load_mesh(path: PathLike, frame: str = "auto", up_axis: str = "auto") -> Mesh:
    """Read a triangle mesh, flattening a scene's nodes with their transforms.

    Args:
        path: a ``.glb``, ``.gltf``, ``.obj``, ``.ply``, ``.stl`` or ``.off`` file (what is read of
            each: the module docstring).
        frame: "auto", "gltf" or "sharpit" (see the module docstring).
        up_axis: the up axis of an OBJ, PLY, STL or OFF file: "auto" (default: glTF y-up, other
            formats z-up, sharpit's frame), "y" (y-up, front +Z, converted as glTF is) or "z".
            A glTF file is y-up by its specification and accepts only "auto" or "y".
    Returns:
        a validated :class:`~sharpit.mesh.Mesh` in the sharpit world frame with ``source`` set.
        A base-colour texture (glTF) or diffuse map (OBJ) becomes ``uvs`` + ``texture``
        (several textures are packed side by side into one); per-vertex colours, per-face
        colours and uniform material colours become ``vertex_colors``.
    Raises:
        InputError for a bad ``frame``/``up_axis``; for the file, naming it: AssetNotFoundError
        (also a glTF's missing buffer file), UnsupportedFormatError (unknown suffix, point
        clouds, lines only, glTF 1.0, Draco without DracoPy, ...), CorruptFileError (cannot be
        parsed) or MeshError (empty, NaN/inf, bad indices, degenerate). No other exception type.
    """
    path = Path(path)
    y_up = _is_gltf_frame(path, frame, up_axis)
    if not path.is_file():
        raise AssetNotFoundError(path, None if not path.exists() else "is not a file")
    if path.suffix.lower() not in READ_FORMATS:
        raise UnsupportedFormatError(path, f"unknown mesh format {path.suffix or '(no extension)'!r}; "
                                           f"expected one of {', '.join(READ_FORMATS)}")
    try:
        return _load(path, y_up)
    except SharpItError:
        raise
    except MemoryError as exc:
        raise _corrupt(path, f"ran out of memory ({path.stat().st_size} bytes on disk; a header may declare "
                             f"impossible counts)") from exc
    except Exception as exc:  # noqa: BLE001 -- a parser's own exception never escapes
        raise _corrupt(path, _describe(exc)) from exc


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
    """Point the single primitive's ``COLOR_0`` at a new float32 VEC4 accessor holding
    ``srgb_to_linear(srgb)`` and alpha 1, appended to ``buffer``; returns the new buffer (``tree``
    is edited). VEC4 rather than VEC3 (both valid glTF): trimesh re-exports a VEC3 ``COLOR_0`` it
    loaded as a broken RGBA array, which breaks its notebook viewer and load-and-save scripts."""
    primitives = [p for m in tree.get("meshes", []) for p in m.get("primitives", [])]
    if len(primitives) != 1:
        raise MeshError(f"internal: expected one glTF primitive to colour, found {len(primitives)}")
    rgb = srgb_to_linear(srgb.detach().float().cpu())
    linear = torch.cat([rgb, torch.ones_like(rgb[:, :1])], 1).numpy().astype("<f4")
    if tree["accessors"][primitives[0]["attributes"]["POSITION"]]["count"] != len(linear):
        raise MeshError("internal: the exported glTF reordered the vertices; cannot attach COLOR_0")
    offset = len(buffer) + (-len(buffer)) % 4
    data = linear.tobytes()
    buffer = buffer + b"\0" * (offset - len(buffer)) + data
    tree.setdefault("bufferViews", []).append({"buffer": 0, "byteOffset": offset, "byteLength": len(data),
                                               "target": 34962})
    tree["accessors"].append({"bufferView": len(tree["bufferViews"]) - 1, "componentType": 5126,
                              "count": len(linear), "type": "VEC4"})
    primitives[0]["attributes"]["COLOR_0"] = len(tree["accessors"]) - 1
    tree["buffers"][0]["byteLength"] = len(buffer)
    return buffer


def _glb_with_color(glb: bytes, srgb: torch.Tensor) -> bytes:
    json_len = struct.unpack_from("<I", glb, 12)[0]
    tree = json.loads(glb[20:20 + json_len])
    bin_start = 20 + json_len
    bin_len = struct.unpack_from("<I", glb, bin_start)[0]
    buffer = _add_linear_color_0(tree, glb[bin_start + 8:bin_start + 8 + bin_len], srgb)
    return _pack_glb(tree, buffer)


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


def save_mesh(mesh: Mesh, path: PathLike, frame: str = "auto", overwrite: bool = True,
              up_axis: str = "auto") -> Path:
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
        up_axis: the up axis to write an OBJ or PLY in, as :func:`load_mesh` reads it ("auto":
            glTF y-up, other formats sharpit's z-up; "y": y-up, front +Z; "z"); glTF accepts
            only "auto" or "y".
    Returns:
        the path written.
    """
    if not isinstance(mesh, Mesh):
        raise InputError(f"expected a sharpit.mesh.Mesh, got {type(mesh).__name__}")
    path = Path(path)
    ext = path.suffix.lower()
    to_gltf = _is_gltf_frame(path, frame, up_axis)
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
