"""Tests of mesh loading and saving: round trips, frames, scenes and every bad input."""

import os
import sys
from collections import Counter

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from sharpit.cameras import gltf_to_sharpit, orbit_cameras, sharpit_to_gltf
from sharpit.colors import linear_to_srgb
from sharpit.errors import (AssetNotFoundError, CorruptFileError, InputError, MeshError, OutputExistsError,
                            OutputNotWritableError, UnsupportedFormatError)
from sharpit.mesh import Mesh, normalize_mesh
from sharpit.mesh_io import load_mesh, save_mesh
from sharpit.render import render_views
from sharpit.render.shading import sample_texture
from sharpit.testing.meshes import colored_cube, quadrant_texture, textured_cube


def _asset(kind: str) -> Mesh:
    """An off-centre, off-scale asset so that normalisation does something."""
    mesh = colored_cube() if kind == "colors" else textured_cube()
    return Mesh(mesh.vertices * torch.tensor([3.0, 2.0, 1.0]) + torch.tensor([5.0, -1.0, 2.0]), mesh.faces,
                vertex_colors=mesh.vertex_colors, uvs=mesh.uvs, texture=mesh.texture)


CASES = [(ext, kind) for ext in (".glb", ".gltf", ".obj", ".ply") for kind in ("colors", "texture")
         if not (ext == ".ply" and kind == "texture")]


@pytest.mark.parametrize("ext,kind", CASES)
def test_load_normalize_unnormalize_save_reload_round_trip(tmp_path, ext, kind):
    original = _asset(kind)
    first = save_mesh(original, tmp_path / f"asset{ext}")
    loaded = load_mesh(first)
    assert loaded.source == str(first)
    assert torch.allclose(loaded.vertices, original.vertices, atol=1e-5)

    normalized, transform = normalize_mesh(loaded)
    centre = (normalized.vertices.min(0).values + normalized.vertices.max(0).values) / 2
    assert torch.allclose(centre, torch.zeros(3), atol=1e-5)
    assert abs(float(normalized.vertices.norm(dim=-1).max()) - 0.5) < 1e-5
    restored = normalized.transformed(transform.inverse())
    second = save_mesh(restored, tmp_path / "out" / f"restored{ext}")
    again = load_mesh(second)

    assert torch.equal(again.faces, original.faces)
    assert torch.allclose(again.vertices, original.vertices, atol=1e-4)
    if kind == "colors":
        assert again.vertex_colors is not None and not again.has_texture
        assert torch.allclose(again.vertex_colors, original.vertex_colors, atol=1 / 255)
    else:
        assert again.has_texture
        assert torch.allclose(again.uvs, original.uvs, atol=1e-6)
        assert torch.allclose(again.texture, original.texture, atol=1 / 255)
    # Nothing but the outputs (and the OBJ material files) is left in the folder.
    names = sorted(os.listdir(tmp_path / "out"))
    textured_obj = ext == ".obj" and kind == "texture"
    expected = ["restored.mtl", "restored.obj", "restored.png"] if textured_obj else [f"restored{ext}"]
    assert names == sorted(expected)


def test_gltf_frame_conversion_round_trip():
    points = torch.randn(100, 3)
    assert torch.allclose(sharpit_to_gltf(gltf_to_sharpit(points)), points, atol=1e-6)
    # glTF front (+Z) -> sharpit front (+x); glTF up (+Y) -> sharpit up (+z).
    assert torch.allclose(gltf_to_sharpit(torch.tensor([0.0, 0.0, 1.0])), torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(gltf_to_sharpit(torch.tensor([0.0, 1.0, 0.0])), torch.tensor([0.0, 0.0, 1.0]))


def _box_with_red_front(path):
    """A box written by trimesh (not by sharpit) with per-face colours: +Z face red, +Y face
    blue, others grey (y-up for glTF). Vertices are unmerged so that GLB, whose colours are per
    vertex, keeps each face's colour."""
    box = trimesh.creation.box(extents=(0.6, 0.6, 0.6))
    box.unmerge_vertices()
    normals = box.face_normals
    colors = np.full((len(box.faces), 4), 128, dtype=np.uint8)
    colors[normals[:, 2] > 0.9] = (255, 0, 0, 255)
    colors[normals[:, 1] > 0.9] = (0, 0, 255, 255)
    box.visual = trimesh.visual.ColorVisuals(box, face_colors=colors)
    path.write_bytes(trimesh.Scene(box).export(file_type=path.suffix[1:]))
    return path


def test_gltf_asset_front_faces_azimuth_zero(tmp_path):
    mesh = load_mesh(_box_with_red_front(tmp_path / "box.glb"))
    cams = orbit_cameras([0.0, 0.0], [0.0, 89.0], 2.0)
    out = render_views(mesh, cams, size=32)
    assert torch.allclose(out.images[0, :, 16, 16], torch.tensor([1.0, 0.0, 0.0]), atol=1e-3)  # front
    assert torch.allclose(out.images[1, :, 16, 16], torch.tensor([0.0, 0.0, 1.0]), atol=1e-3)  # top
    # Read in the glTF frame instead, the front is where glTF puts it (+z here).
    raw = load_mesh(tmp_path / "box.glb", frame="sharpit")
    red = (raw.vertex_colors - torch.tensor([1.0, 0.0, 0.0])).abs().sum(-1) < 1e-3
    assert torch.allclose(raw.vertices[red][:, 2], torch.full((int(red.sum()),), 0.3))


def test_save_writes_gltf_frame(tmp_path):
    mesh = colored_cube()
    path = save_mesh(mesh, tmp_path / "cube.glb")
    scene = trimesh.load(str(path), force="scene", process=False)
    raw = np.concatenate([g.vertices for g in scene.geometry.values()])
    assert np.allclose(raw, sharpit_to_gltf(mesh.vertices).numpy(), atol=1e-6)
    kept = save_mesh(mesh, tmp_path / "cube_sharpit.glb", frame="sharpit")
    assert torch.allclose(load_mesh(kept, frame="sharpit").vertices, mesh.vertices, atol=1e-6)


def test_scene_nodes_are_flattened_with_their_transforms(tmp_path):
    scene = trimesh.Scene()
    for dx in (-1.0, 1.0):
        scene.add_geometry(trimesh.creation.box(extents=(0.2, 0.2, 0.2)),
                           transform=trimesh.transformations.translation_matrix((dx, 0.0, 0.0)))
    path = tmp_path / "two.glb"
    path.write_bytes(scene.export(file_type="glb"))
    mesh = load_mesh(path, frame="sharpit")
    assert mesh.num_faces == 24
    assert torch.allclose(mesh.bounds(), torch.tensor([[-1.1, -0.1, -0.1], [1.1, 0.1, 0.1]]), atol=1e-6)


def test_several_textures_are_packed_into_one_atlas(tmp_path):
    scene = trimesh.Scene()
    textures = [quadrant_texture(16), quadrant_texture(8, colors=((0, 0, 0), (1, 0, 1), (0, 1, 1), (1, 1, 0)))]
    uvs = np.array([[0.1, 0.1], [0.9, 0.1], [0.9, 0.9], [0.1, 0.9]])
    for i, tex in enumerate(textures):
        quad = trimesh.Trimesh([[2 * i, 0, 0], [2 * i + 1, 0, 0], [2 * i + 1, 1, 0], [2 * i, 1, 0]], [[0, 1, 2], [0, 2, 3]],
                               process=False)
        image = Image.fromarray((tex.numpy() * 255).astype(np.uint8))
        quad.visual = trimesh.visual.TextureVisuals(
            uv=uvs, material=trimesh.visual.material.PBRMaterial(baseColorTexture=image))
        scene.add_geometry(quad)
    plain = trimesh.creation.box(extents=(0.1, 0.1, 0.1))
    plain.visual = trimesh.visual.ColorVisuals(plain, face_colors=(255, 128, 0, 255))
    scene.add_geometry(plain)
    path = tmp_path / "multi.glb"
    path.write_bytes(scene.export(file_type="glb"))
    mesh = load_mesh(path, frame="sharpit")
    assert mesh.has_texture and mesh.vertex_colors is None
    assert mesh.texture.shape == (16, 16 + 8 + 4, 3)
    # Sampling the atlas at each vertex's remapped uv gives the original texture's colour there
    # (the original uv of a quad vertex follows from its position).
    x, y, z = mesh.vertices.T
    for i, tex in enumerate(textures):
        rows = (z.abs() < 1e-6) & (x >= 2 * i - 1e-6) & (x <= 2 * i + 1 + 1e-6)
        assert int(rows.sum()) == 4
        original_uv = torch.stack([0.1 + 0.8 * (x[rows] - 2 * i), 0.1 + 0.8 * y[rows]], -1)
        expect = sample_texture(tex, original_uv)
        assert torch.allclose(sample_texture(mesh.texture, mesh.uvs[rows]), expect, atol=1e-5)
    box = z.abs() > 1e-6          # trimesh wrote its colour as COLOR_0, which glTF defines as linear
    assert torch.allclose(sample_texture(mesh.texture, mesh.uvs[box]),
                          linear_to_srgb(torch.tensor([1.0, 128 / 255, 0.0])).expand(int(box.sum()), 3), atol=0.5 / 255)


def test_face_colors_become_per_corner_vertex_colors(tmp_path):
    path = tmp_path / "box.ply"
    box = trimesh.creation.box(extents=(0.6, 0.6, 0.6))
    colors = np.full((12, 4), 128, dtype=np.uint8)
    colors[box.face_normals[:, 0] > 0.9] = (255, 0, 0, 255)
    box.visual = trimesh.visual.ColorVisuals(box, face_colors=colors)
    path.write_bytes(box.export(file_type="ply"))
    assert trimesh.load(str(path), process=False).visual.kind == "face"
    mesh = load_mesh(path)
    assert mesh.num_vertices == 3 * mesh.num_faces
    red = (mesh.vertex_colors - torch.tensor([1.0, 0.0, 0.0])).abs().sum(-1) < 1e-3
    assert int(red.sum()) == 6  # two triangles on the front
    assert torch.allclose(mesh.vertices[red][:, 0], torch.full((6,), 0.3))


# -- bad inputs -------------------------------------------------------------------------------

TRIANGLE = "v 0 0 0\nv 1 0 0\nv 0 1 0\n"
PLY_HEADER = ("ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
              "property float z\nelement face 1\nproperty list uchar int vertex_indices\nend_header\n")

BAD_FILES = [
    ("corrupt.glb", b"glTF\x02\x00\x00\x00garbage", CorruptFileError, "could not be read"),
    ("corrupt.ply", b"not a ply file at all\n\x00\x01", CorruptFileError, "could not be read"),
    ("corrupt.obj", b"v 0 0 0\nf 1 2 3 x\n\x00\x01", CorruptFileError, "could not be read"),
    ("empty.obj", b"", MeshError, "empty"),
    ("points.obj", TRIANGLE.encode(), UnsupportedFormatError, "has 3 points and no faces: a point cloud, not a mesh"),
    ("zero.glb", b"", MeshError, "0 bytes"),
    ("zero.ply", b"", MeshError, "0 bytes"),
    ("lines.obj", (TRIANGLE + "l 1 2 3\n").encode(), UnsupportedFormatError, "only 1 polylines"),
    ("nofaces.off", b"OFF\n3 2 0\n0 0 0\n1 0 0\n0 1 0\n", CorruptFileError, "declares 2 faces but none"),
    ("json.glb", b'{"asset": {"version": "2.0"}}', CorruptFileError, "not a GLB file"),
    ("badjson.gltf", b'{"asset": ', CorruptFileError, "invalid JSON"),
    ("truncated.glb", b"glTF\x02\x00\x00\x00\xff\x00\x00\x00", CorruptFileError, "truncated"),
    ("nan.obj", b"v 0 0 nan\nv 1 0 0\nv 0 1 0\nf 1 2 3\n", MeshError, "NaN or inf"),
    ("inf.obj", b"v 0 0 inf\nv 1 0 0\nv 0 1 0\nf 1 2 3\n", MeshError, "NaN or inf"),
    ("index.obj", (TRIANGLE + "f 1 2 9\n").encode(), MeshError, "out of range"),
    ("index.ply", (PLY_HEADER + "0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n").encode(), MeshError, "face indices"),
    ("flat.obj", b"v 0 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\n", MeshError, "degenerate"),
]


@pytest.mark.parametrize("name,data,error,message", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_files_raise_errors_naming_the_file(tmp_path, name, data, error, message):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(error, match=message) as info:
        load_mesh(path)
    assert str(path) in str(info.value)


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(AssetNotFoundError, match="missing.glb"):
        load_mesh(tmp_path / "missing.glb")
    with pytest.raises(AssetNotFoundError, match="not a file"):
        load_mesh(tmp_path)
    odd = tmp_path / "mesh.fbx"
    odd.write_bytes(b"whatever")
    with pytest.raises(UnsupportedFormatError, match="mesh.fbx.*unknown mesh format '.fbx'"):
        load_mesh(odd)
    with pytest.raises(UnsupportedFormatError, match="cannot write '.fbx'"):
        save_mesh(colored_cube(), odd)
    with pytest.raises(InputError, match="frame"):
        load_mesh(odd, frame="y-up")


def test_save_errors(tmp_path):
    with pytest.raises(UnsupportedFormatError, match="PLY cannot hold a texture"):
        save_mesh(textured_cube(), tmp_path / "t.ply")
    path = save_mesh(colored_cube(), tmp_path / "c.glb")
    with pytest.raises(OutputExistsError, match="c.glb"):
        save_mesh(colored_cube(), path, overwrite=False)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputNotWritableError, match="could not write"):
        save_mesh(colored_cube(), blocker / "c.glb")
    bad = colored_cube()
    bad.faces[0, 0] = 99
    with pytest.raises(MeshError, match="face indices"):
        save_mesh(bad, tmp_path / "bad.glb")
    assert sorted(os.listdir(tmp_path)) == ["c.glb", "file"]  # no temporary files left behind


# -- real-world files: glTF topologies, compression, quantisation, malformed structure ------------

import base64  # noqa: E402
import json  # noqa: E402
import struct  # noqa: E402

import sharpit.mesh_io as mesh_io  # noqa: E402
from sharpit.errors import SharpItError  # noqa: E402

_COMPONENT = {np.dtype("int8"): 5120, np.dtype("uint8"): 5121, np.dtype("int16"): 5122,
              np.dtype("uint16"): 5123, np.dtype("uint32"): 5125, np.dtype("float32"): 5126}
_TYPE = {1: "SCALAR", 2: "VEC2", 3: "VEC3", 4: "VEC4"}


def _gltf_document(attributes, indices=None, mode=None, normalized=(), material=None):
    """A one-primitive glTF 2.0 document ``(tree, buffer)`` written here, independently of
    sharpit: ``attributes`` maps names to arrays whose dtype sets the component type;
    ``normalized`` names the attributes flagged ``normalized``."""
    tree = {"asset": {"version": "2.0"}, "scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0}],
            "meshes": [{"primitives": [{"attributes": {}}]}], "accessors": [], "bufferViews": [],
            "buffers": [{"byteLength": 0}]}
    prim = tree["meshes"][0]["primitives"][0]
    buffer = b""

    def add(array, normalized_flag=False, target=34962):
        nonlocal buffer
        array = np.ascontiguousarray(array)
        data = array.tobytes()
        buffer += b"\0" * ((-len(buffer)) % 4)
        tree["bufferViews"].append({"buffer": 0, "byteOffset": len(buffer), "byteLength": len(data), "target": target})
        accessor = {"bufferView": len(tree["bufferViews"]) - 1, "componentType": _COMPONENT[array.dtype],
                    "count": len(array), "type": _TYPE[1 if array.ndim == 1 else array.shape[1]]}
        if normalized_flag:
            accessor["normalized"] = True
        if array.ndim == 2 and array.shape[1] == 3 and "POSITION" not in prim["attributes"]:
            accessor["min"] = array.min(0).astype(float).tolist()
            accessor["max"] = array.max(0).astype(float).tolist()
        buffer += data
        tree["accessors"].append(accessor)
        return len(tree["accessors"]) - 1

    for name, array in attributes.items():
        prim["attributes"][name] = add(array, name in normalized)
    if indices is not None:
        prim["indices"] = add(np.asarray(indices), target=34963)
    if mode is not None:
        prim["mode"] = mode
    if material is not None:
        tree["materials"] = [material]
        prim["material"] = 0
    buffer += b"\0" * ((-len(buffer)) % 4)
    tree["buffers"][0]["byteLength"] = len(buffer)
    return tree, buffer


def _glb(tree, buffer) -> bytes:
    text = json.dumps(tree).encode()
    text += b" " * ((-len(text)) % 4)
    body = struct.pack("<I4s", len(text), b"JSON") + text + struct.pack("<I4s", len(buffer), b"BIN\0") + buffer
    return struct.pack("<4sII", b"glTF", 2, 12 + len(body)) + body


def _embedded_gltf(tree, buffer) -> bytes:
    tree = json.loads(json.dumps(tree))
    tree["buffers"][0]["uri"] = "data:application/octet-stream;base64," + base64.b64encode(buffer).decode()
    return json.dumps(tree).encode()


def _write(path, tree, buffer):
    path.write_bytes(_glb(tree, buffer) if path.suffix == ".glb" else _embedded_gltf(tree, buffer))
    return path


@pytest.fixture
def gltf_validate_optional(request):
    """Assert a hand-built test file is valid glTF with the Khronos validator when it is installed
    (the fixtures must be right for the tests to mean anything); a no-op otherwise."""
    try:
        validate = request.getfixturevalue("gltf_validate")
    except pytest.skip.Exception:
        return lambda path: None

    def check(path):
        report = validate(path)
        assert report["numErrors"] == 0, report["messages"]

    return check


# A fan around vertex 0 and a strip over a zig-zag row, both covering the same square with four
# triangles, all facing +Z (glTF frame). The strip is written as two strips stitched by repeated
# indices, whose degenerate joint triangles must disappear.
_FAN_POSITIONS = np.array([[0, 0, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0], [-1, -1, 0], [1, -1, 0]], np.float32)
_STRIP_POSITIONS = np.array([[-1, -1, 0], [0, -1, 0], [-1, 1, 0], [0, 1, 0], [1, -1, 0], [1, 1, 0]], np.float32)
_STRIP_INDICES = np.array([0, 1, 2, 3, 3, 1, 1, 4, 3, 5], np.uint16)


def _normals(mesh):
    tri = mesh.vertices[mesh.faces]
    return torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])


@pytest.mark.parametrize("suffix", [".glb", ".gltf"])
@pytest.mark.parametrize("case", ["fan", "fan-indexed", "strip", "strip-indexed"])
def test_gltf_triangle_fans_and_strips_become_triangles(tmp_path, suffix, case, gltf_validate_optional):
    if case.startswith("fan"):
        positions, mode = _FAN_POSITIONS, 6
        indices = np.arange(6, dtype=np.uint32) if case.endswith("indexed") else None
        expected_faces = 4
    else:
        positions, mode = _STRIP_POSITIONS, 5
        # the stitched strip only makes sense with indices; the plain one is the first 4 vertices
        indices = _STRIP_INDICES if case.endswith("indexed") else None
        positions = positions if indices is not None else positions[:4]
        expected_faces = 4 if indices is not None else 2
    path = _write(tmp_path / f"{case}{suffix}", *_gltf_document({"POSITION": positions}, indices, mode))
    gltf_validate_optional(path)
    mesh = load_mesh(path, frame="sharpit")
    assert mesh.num_faces == expected_faces
    normals = _normals(mesh)
    assert bool((normals[:, 2] > 0).all()), "every triangle keeps the primitive's winding (+Z)"
    area = float(normals.norm(dim=-1).sum() / 2)
    assert area == pytest.approx(4.0 if expected_faces == 4 else 2.0)


def test_strip_and_fan_orders_follow_the_gltf_specification():
    strip = mesh_io._strip_or_fan(np.arange(5), 5)
    assert strip.tolist() == [[0, 1, 2], [1, 3, 2], [2, 3, 4]]
    fan = mesh_io._strip_or_fan(np.array([7, 8, 9, 10]), 6)
    assert fan.tolist() == [[8, 9, 7], [9, 10, 7]]
    assert mesh_io._strip_or_fan(np.arange(2), 5).shape == (0, 3)


def test_gltf_strip_keeps_material_and_texture_coordinates(tmp_path):
    uv = np.array([[0, 1], [1, 1], [0, 0], [1, 0]], np.float32)
    tree, buffer = _gltf_document({"POSITION": _STRIP_POSITIONS[:4], "TEXCOORD_0": uv}, None, 5,
                                  material={"pbrMetallicRoughness": {"baseColorFactor": [1, 0, 0, 1]}})
    mesh = load_mesh(_write(tmp_path / "strip.glb", tree, buffer))
    assert mesh.num_faces == 2
    assert torch.allclose(mesh.vertex_colors, torch.tensor([1.0, 0.0, 0.0]).expand(4, 3))


@pytest.mark.parametrize("modes,message", [((0,), "has 6 points and no faces: a point cloud, not a mesh"),
                                           ((3,), "only line primitives \\(1 LINE_STRIP\\)")])
def test_gltf_points_or_lines_only_are_refused_as_such(tmp_path, modes, message):
    path = _write(tmp_path / "x.glb", *_gltf_document({"POSITION": _FAN_POSITIONS}, None, modes[0]))
    with pytest.raises(UnsupportedFormatError, match=message):
        load_mesh(path)


def test_quantized_gltf_positions_and_texcoords_are_dequantized(tmp_path):
    """KHR_mesh_quantization / core glTF: normalised ushort positions and texture coordinates
    are decoded to [0, 1] (trimesh alone would keep the raw integers)."""
    positions = np.array([[0, 0, 0], [65535, 0, 0], [0, 65535, 0]], np.uint16)
    uv = np.array([[0, 65535], [65535, 65535], [0, 0]], np.uint16)
    texture = Image.fromarray(np.full((4, 4, 3), 200, np.uint8))
    png = io_png(texture)
    tree, buffer = _gltf_document({"POSITION": positions, "TEXCOORD_0": uv}, None, None,
                                  normalized=("POSITION", "TEXCOORD_0"),
                                  material={"pbrMetallicRoughness": {"baseColorTexture": {"index": 0}}})
    tree["extensionsUsed"] = tree["extensionsRequired"] = ["KHR_mesh_quantization"]
    tree["textures"] = [{"source": 0}]
    tree["images"] = [{"uri": "data:image/png;base64," + base64.b64encode(png).decode()}]
    mesh = load_mesh(_write(tmp_path / "q.gltf", tree, buffer), frame="sharpit")
    assert torch.allclose(mesh.vertices, torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]]))
    # glTF uv (0, 1) is the image's bottom-left: sharpit's (origin bottom-left) (0, 0)
    assert mesh.has_texture
    assert torch.allclose(mesh.uvs, torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))


def test_integer_gltf_positions_that_are_not_normalized_stay_integers(tmp_path):
    positions = np.array([[0, 0, 0], [3, 0, 0], [0, -2, 0]], np.int16)
    mesh = load_mesh(_write(tmp_path / "i.glb", *_gltf_document({"POSITION": positions})), frame="sharpit")
    assert torch.equal(mesh.vertices, torch.tensor([[0.0, 0, 0], [3, 0, 0], [0, -2, 0]]))


def io_png(image) -> bytes:
    import io

    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _draco_tree():
    """A document whose only primitive is Draco-compressed (its accessors have no bufferView)."""
    tree, buffer = _gltf_document({"POSITION": _FAN_POSITIONS[:3]}, np.arange(3, dtype=np.uint16))
    for accessor in tree["accessors"]:
        del accessor["bufferView"]
    tree["meshes"][0]["primitives"][0]["extensions"] = {
        "KHR_draco_mesh_compression": {"bufferView": 0, "attributes": {"POSITION": 0}}}
    tree["bufferViews"] = [{"buffer": 0, "byteOffset": 0, "byteLength": 8}]
    tree["extensionsUsed"] = tree["extensionsRequired"] = ["KHR_draco_mesh_compression"]
    tree["buffers"] = [{"byteLength": 8}]
    return tree, b"\x01" * 8


def test_draco_without_the_decoder_is_refused_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "DracoPy", None)     # makes `import DracoPy` fail
    path = _write(tmp_path / "draco.glb", *_draco_tree())
    with pytest.raises(UnsupportedFormatError, match="KHR_draco_mesh_compression.*pip install DracoPy") as info:
        load_mesh(path)
    assert str(path) in str(info.value)


def test_draco_is_decoded_when_dracopy_is_installed(tmp_path):
    pytest.importorskip("DracoPy")
    box = trimesh.creation.box(extents=(0.6, 0.4, 0.2))
    path = tmp_path / "draco.glb"
    path.write_bytes(trimesh.exchange.gltf.export_glb(trimesh.Scene(box), extension_draco=True))
    assert b"KHR_draco_mesh_compression" in path.read_bytes()[:4000]
    mesh = load_mesh(path, frame="sharpit")
    assert mesh.num_faces == 12
    assert torch.allclose(mesh.bounds(), torch.tensor([[-0.3, -0.2, -0.1], [0.3, 0.2, 0.1]]), atol=1e-3)


def test_undecodable_draco_data_is_a_corrupt_file(tmp_path):
    pytest.importorskip("DracoPy")
    with pytest.raises(CorruptFileError, match="Draco-compressed geometry .* could not be decoded"):
        load_mesh(_write(tmp_path / "draco.glb", *_draco_tree()))


def test_gltf_structure_errors_name_the_problem(tmp_path):
    tree, buffer = _gltf_document({"POSITION": _FAN_POSITIONS[:3]})
    bad = json.loads(json.dumps(tree))
    bad["bufferViews"][0]["byteLength"] += 100                # the IncorrectVertexArrays case
    with pytest.raises(CorruptFileError, match="bufferView 0 .* runs past the end of buffer 0"):
        load_mesh(_write(tmp_path / "view.glb", bad, buffer))
    bad = json.loads(json.dumps(tree))
    bad["accessors"][0]["count"] = 4
    with pytest.raises(CorruptFileError, match="accessor 0 \\(4 x VEC3\\) reads 48 bytes from bufferView 0"):
        load_mesh(_write(tmp_path / "accessor.glb", bad, buffer))
    bad = json.loads(json.dumps(tree))
    bad["nodes"] = [{"mesh": 0, "children": [1]}, {"children": [0]}]
    with pytest.raises(CorruptFileError, match="cycle"):
        load_mesh(_write(tmp_path / "cycle.glb", bad, buffer))
    bad = json.loads(json.dumps(tree))
    bad["asset"]["version"] = "1.0"
    with pytest.raises(UnsupportedFormatError, match="glTF 1.0 .*gltf-pipeline"):
        load_mesh(_write(tmp_path / "old.gltf", bad, buffer))
    bad = json.loads(json.dumps(tree))
    bad["extensionsRequired"] = ["EXT_meshopt_compression"]
    with pytest.raises(UnsupportedFormatError, match="EXT_meshopt_compression"):
        load_mesh(_write(tmp_path / "meshopt.glb", bad, buffer))
    bad = json.loads(json.dumps(tree))
    bad["accessors"][0]["sparse"] = {"count": 1}
    with pytest.raises(UnsupportedFormatError, match="POSITION accessor is sparse"):
        load_mesh(_write(tmp_path / "sparse.glb", bad, buffer))
    # a side-file buffer that is missing
    side = json.loads(json.dumps(tree))
    side["buffers"][0]["uri"] = "mesh.bin"
    (tmp_path / "side.gltf").write_text(json.dumps(side))
    with pytest.raises(AssetNotFoundError, match="mesh.bin: buffer file of side.gltf not found"):
        load_mesh(tmp_path / "side.gltf")
    (tmp_path / "mesh.bin").write_bytes(buffer)
    assert load_mesh(tmp_path / "side.gltf").num_faces == 1


def test_bare_parser_assertions_become_corrupt_file_errors(tmp_path, monkeypatch):
    path = _write(tmp_path / "ok.glb", *_gltf_document({"POSITION": _FAN_POSITIONS[:3]}))

    def broken_loader(*args, **kwargs):
        raise AssertionError     # what a bare `assert` in trimesh raises (pytest rewrites asserts here)

    monkeypatch.setattr(trimesh.exchange.gltf, "load_glb", broken_loader)
    with pytest.raises(CorruptFileError, match="AssertionError in the parser .*`raise AssertionError") as info:
        load_mesh(path)
    assert str(path) in str(info.value)


def test_required_extensions_without_geometry_effect_warn(tmp_path):
    tree, buffer = _gltf_document({"POSITION": _FAN_POSITIONS[:3]})
    tree["extensionsUsed"] = tree["extensionsRequired"] = ["KHR_technique_webgl"]
    with pytest.warns(UserWarning, match="KHR_technique_webgl, which sharpit does not interpret"):
        assert load_mesh(_write(tmp_path / "t.glb", tree, buffer)).num_faces == 1


def test_binary_point_cloud_ply_is_refused_as_a_point_cloud(tmp_path):
    points = np.random.default_rng(0).random((50, 3)).astype(np.float32)
    header = ("ply\nformat binary_little_endian 1.0\nelement vertex 50\nproperty float x\nproperty float y\n"
              "property float z\nproperty float psz\nend_header\n").encode()
    path = tmp_path / "cloud.ply"
    path.write_bytes(header + np.concatenate([points, np.ones((50, 1), np.float32)], 1).tobytes())
    with pytest.raises(UnsupportedFormatError, match="has 50 points and no faces: a point cloud, not a mesh"):
        load_mesh(path)
    trimesh.PointCloud(points).export(str(tmp_path / "cloud2.ply"))
    with pytest.raises(UnsupportedFormatError, match="has 50 points and no faces: a point cloud"):
        load_mesh(tmp_path / "cloud2.ply")


def test_obj_without_material_has_no_texture(tmp_path):
    path = tmp_path / "uv.obj"
    path.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 0 1\nf 1/1 2/2 3/3\n")
    assert isinstance(trimesh.load(str(path), process=False).visual, trimesh.visual.TextureVisuals)
    mesh = load_mesh(path)
    assert not mesh.has_texture and mesh.uvs is None and mesh.texture is None and mesh.vertex_colors is None
    # PLY texture coordinates without a texture file: likewise
    ply = tmp_path / "uv.ply"
    ply.write_text("ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n"
                   "property float s\nproperty float t\nelement face 1\nproperty list uchar int vertex_indices\n"
                   "end_header\n0 0 0 0 0\n1 0 0 1 0\n0 1 0 0 1\n3 0 1 2\n")
    assert not load_mesh(ply).has_texture
    # an OBJ whose MTL names a diffuse map stays textured
    textured = save_mesh(textured_cube(), tmp_path / "t.obj")
    assert load_mesh(textured).has_texture


# -- up axis ------------------------------------------------------------------------------------

_Y_UP_OBJ = "v 0 0 0\nv 0 1 0\nv 0 0 1\nv 1 0 0\nf 1 4 2\nf 1 3 4\n"


@pytest.mark.parametrize("ext", [".obj", ".ply", ".stl", ".off"])
def test_up_axis_y_turns_a_y_up_file_into_the_sharpit_frame(tmp_path, ext):
    source = trimesh.load(trimesh.util.wrap_as_stream(_Y_UP_OBJ), file_type="obj", process=False)
    path = tmp_path / f"yup{ext}"
    source.export(str(path))
    raw = load_mesh(path)                                      # auto: z-up, coordinates unchanged
    assert torch.equal(load_mesh(path, up_axis="z").vertices, raw.vertices)
    turned = load_mesh(path, up_axis="y")
    assert torch.allclose(turned.vertices, gltf_to_sharpit(raw.vertices))
    # the file's up (+y) is sharpit's up (+z), its front (+z, as in glTF) is sharpit's front (+x)
    top = raw.vertices[:, 1].argmax()
    front = raw.vertices[:, 2].argmax()
    assert torch.allclose(turned.vertices[top], torch.tensor([0.0, 0.0, 1.0]))
    assert torch.allclose(turned.vertices[front], torch.tensor([1.0, 0.0, 0.0]))
    assert load_mesh(path, up_axis="Y").vertices.equal(turned.vertices)
    assert load_mesh(path, frame="gltf").vertices.equal(turned.vertices)


def test_up_axis_rules_for_gltf_and_bad_values(tmp_path):
    glb = save_mesh(colored_cube(), tmp_path / "c.glb")
    assert torch.equal(load_mesh(glb, up_axis="y").vertices, load_mesh(glb).vertices)
    with pytest.raises(InputError, match="glTF files are y-up by the glTF 2.0 specification"):
        load_mesh(glb, up_axis="z")
    with pytest.raises(InputError, match="up_axis must be one of"):
        load_mesh(glb, up_axis="x")
    with pytest.raises(InputError, match="up_axis must be one of"):
        load_mesh(glb, up_axis=None)
    obj = save_mesh(colored_cube(), tmp_path / "c.obj")
    with pytest.raises(InputError, match="disagree"):
        load_mesh(obj, frame="sharpit", up_axis="y")
    assert torch.equal(load_mesh(obj, frame="sharpit", up_axis="z").vertices, load_mesh(obj).vertices)


def test_save_with_up_axis_y_round_trips(tmp_path):
    mesh = colored_cube()
    path = save_mesh(mesh, tmp_path / "y.obj", up_axis="y")
    written = trimesh.load(str(path), process=False)
    assert np.allclose(written.vertices, sharpit_to_gltf(mesh.vertices).numpy(), atol=1e-6)
    assert torch.allclose(load_mesh(path, up_axis="y").vertices, mesh.vertices, atol=1e-6)
    with pytest.raises(InputError, match="y-up"):
        save_mesh(mesh, tmp_path / "z.glb", up_axis="z")


# -- robustness ---------------------------------------------------------------------------------

def test_module_docstring_lists_every_read_format():
    for ext in mesh_io.READ_FORMATS:
        assert f"``{ext}``" in mesh_io.__doc__, ext
    assert "what trimesh reads" not in mesh_io.__doc__


@pytest.mark.parametrize("ext", [".glb", ".gltf", ".obj", ".ply"])
def test_damaged_files_raise_only_sharpit_errors(tmp_path, ext):
    """Truncations and byte flips of valid files: each loads or raises a SharpItError (a fixed
    random sample, so a failure reproduces)."""
    good = save_mesh(textured_cube() if ext != ".ply" else colored_cube(), tmp_path / f"good{ext}").read_bytes()
    rng = np.random.default_rng(len(ext))
    outcomes = Counter()
    for trial in range(40):
        data = bytearray(good)
        if trial % 2:
            data = data[: int(rng.integers(1, len(data)))]
        else:
            for at in rng.integers(0, len(data), size=4):
                data[at] = int(rng.integers(0, 256))
        path = tmp_path / f"bad{trial}{ext}"
        path.write_bytes(bytes(data))
        try:
            load_mesh(path)
            outcomes["loaded"] += 1
        except SharpItError as exc:
            assert str(path) in str(exc)
            outcomes[type(exc).__name__] += 1
    assert sum(outcomes.values()) == 40
