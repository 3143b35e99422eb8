"""Colour spaces: sRGB in sharpit, linear COLOR_0 / baseColorFactor in glTF files."""

import json
import struct

import numpy as np
import pytest
import torch
import trimesh

from sharpit.colors import linear_to_srgb, srgb_to_linear
from sharpit.mesh import Mesh
from sharpit.mesh_io import load_mesh, save_mesh
from sharpit.testing.meshes import colored_cube, textured_cube


def _glb_parts(path):
    data = path.read_bytes()
    json_len = struct.unpack_from("<I", data, 12)[0]
    tree = json.loads(data[20:20 + json_len])
    start = 20 + json_len
    return tree, data[start + 8:start + 8 + struct.unpack_from("<I", data, start)[0]]


def _accessor(tree, buffer, index):
    acc = tree["accessors"][index]
    view = tree["bufferViews"][acc["bufferView"]]
    dtype = {5126: "<f4", 5123: "<u2", 5121: "u1"}[acc["componentType"]]
    width = {"VEC3": 3, "VEC4": 4}[acc["type"]]
    start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    return np.frombuffer(buffer, dtype=dtype, count=acc["count"] * width, offset=start).reshape(-1, width)


def _write_glb(path, tree, buffer):
    text = json.dumps(tree).encode()
    text += b" " * ((-len(text)) % 4)
    buffer += b"\0" * ((-len(buffer)) % 4)
    body = struct.pack("<I4s", len(text), b"JSON") + text + struct.pack("<I4s", len(buffer), b"BIN\0") + buffer
    path.write_bytes(struct.pack("<4sII", b"glTF", 2, 12 + len(body)) + body)


def test_transfer_functions_are_inverse_and_match_the_standard():
    x = torch.linspace(0, 1, 1001)
    assert torch.allclose(linear_to_srgb(srgb_to_linear(x)), x, atol=1e-6)
    assert float(srgb_to_linear(torch.tensor(0.5))) == pytest.approx(0.21404, abs=1e-5)
    assert float(linear_to_srgb(torch.tensor(0.0031308))) == pytest.approx(0.04045, abs=1e-5)
    a = np.linspace(0, 1, 11, dtype=np.float32)
    assert srgb_to_linear(a).dtype == np.float32
    assert np.allclose(srgb_to_linear(a), srgb_to_linear(torch.from_numpy(a)).numpy(), atol=1e-6)


def _dark_cube() -> Mesh:
    mesh = colored_cube()
    levels = torch.tensor([0, 1, 3, 7, 12, 40, 128, 255], dtype=torch.float32).repeat(8)[:len(mesh.vertices)] / 255
    mesh.vertex_colors = torch.stack([levels, levels.flip(0), levels.roll(3)], -1)
    return mesh


@pytest.mark.parametrize("ext", [".glb", ".gltf"])
def test_gltf_stores_linear_float_color_0_and_reads_back_srgb(tmp_path, ext, gltf_validate):
    mesh = _dark_cube()
    path = save_mesh(mesh, tmp_path / f"cube{ext}", frame="sharpit")
    if ext == ".glb":
        tree, buffer = _glb_parts(path)
        prim = tree["meshes"][0]["primitives"][0]
        stored = _accessor(tree, buffer, prim["attributes"]["COLOR_0"])
        assert stored.dtype == np.float32 and stored.shape == (len(mesh.vertices), 4)   # RGBA: see _add_linear_color_0
        assert np.allclose(stored[:, :3], srgb_to_linear(mesh.vertex_colors).numpy(), atol=1e-7)
        assert np.all(stored[:, 3] == 1.0)
        # A white, non-metallic material: without one a viewer uses glTF's fully metallic default.
        pbr = tree["materials"][prim["material"]]["pbrMetallicRoughness"]
        assert pbr["metallicFactor"] == 0.0 and pbr.get("baseColorFactor", [1] * 4) == [1.0] * 4
        report = gltf_validate(path)
        assert report["numErrors"] == 0, report["messages"]
    back = load_mesh(path, frame="sharpit")
    # Float precision, darkest levels included: 8-bit linear storage would turn 1/255 and 3/255 into 0.
    assert torch.allclose(back.vertex_colors, mesh.vertex_colors, atol=1e-5)


def test_color_0_is_multiplied_by_the_material_factor(tmp_path):
    """glTF 2.0, 3.9.2: COLOR_0 is a linear multiplier of the base colour (Blender's exporter
    writes both a material and COLOR_0)."""
    mesh = _dark_cube()
    tree, buffer = _glb_parts(save_mesh(mesh, tmp_path / "cube.glb", frame="sharpit"))
    prim = tree["meshes"][0]["primitives"][0]
    factor = [0.5, 0.25, 1.0, 1.0]
    tree["materials"][prim["material"]]["pbrMetallicRoughness"]["baseColorFactor"] = factor
    _write_glb(tmp_path / "tinted.glb", tree, buffer)
    got = load_mesh(tmp_path / "tinted.glb", frame="sharpit").vertex_colors
    expect = linear_to_srgb(srgb_to_linear(mesh.vertex_colors) * torch.tensor(factor[:3]))
    assert torch.allclose(got, expect, atol=1 / 255)     # trimesh keeps the factor as 8-bit


def test_color_0_tinting_a_texture_is_dropped_with_a_warning(tmp_path):
    mesh = textured_cube()
    tree, buffer = _glb_parts(save_mesh(mesh, tmp_path / "cube.glb", frame="sharpit"))
    prim = tree["meshes"][0]["primitives"][0]
    count = tree["accessors"][prim["attributes"]["POSITION"]]["count"]
    data = np.full((count, 3), 0.5, dtype="<f4").tobytes()
    offset = len(buffer) + (-len(buffer)) % 4
    buffer = buffer + b"\0" * (offset - len(buffer)) + data
    tree["bufferViews"].append({"buffer": 0, "byteOffset": offset, "byteLength": len(data)})
    tree["accessors"].append({"bufferView": len(tree["bufferViews"]) - 1, "componentType": 5126,
                              "count": count, "type": "VEC3"})
    prim["attributes"]["COLOR_0"] = len(tree["accessors"]) - 1
    tree["buffers"][0]["byteLength"] = len(buffer) + (-len(buffer)) % 4
    _write_glb(tmp_path / "tinted.glb", tree, buffer)
    with pytest.warns(UserWarning, match="COLOR_0"):
        got = load_mesh(tmp_path / "tinted.glb", frame="sharpit")
    assert got.has_texture and got.vertex_colors is None
    assert torch.allclose(got.texture, mesh.texture, atol=0.5 / 255 + 1e-6)


@pytest.mark.parametrize("with_material", [True, False])
def test_third_party_unsigned_short_and_byte_color_0_are_linear(tmp_path, with_material):
    mesh = _dark_cube()
    path = save_mesh(mesh, tmp_path / "cube.glb", frame="sharpit")
    tree, buffer = _glb_parts(path)
    if not with_material:           # trimesh reads COLOR_0 of a primitive without material elsewhere
        del tree["meshes"][0]["primitives"][0]["material"], tree["materials"]
    linear = srgb_to_linear(mesh.vertex_colors).numpy()
    for component, dtype, scale in ((5123, "<u2", 65535), (5121, "u1", 255)):
        data = np.round(linear * scale).astype(dtype).tobytes()
        offset = len(buffer) + (-len(buffer)) % 4
        new = buffer + b"\0" * (offset - len(buffer)) + data
        t = json.loads(json.dumps(tree))
        t["bufferViews"].append({"buffer": 0, "byteOffset": offset, "byteLength": len(data)})
        t["accessors"].append({"bufferView": len(t["bufferViews"]) - 1, "componentType": component,
                               "normalized": True, "count": len(linear), "type": "VEC3"})
        t["meshes"][0]["primitives"][0]["attributes"]["COLOR_0"] = len(t["accessors"]) - 1
        t["buffers"][0]["byteLength"] = len(new) + (-len(new)) % 4
        out = tmp_path / f"third_party_{component}.glb"
        _write_glb(out, t, new)
        got = load_mesh(out, frame="sharpit").vertex_colors
        tolerance = 0.5 / 255 + 1e-6 if component == 5123 else 7 / 255   # 8-bit linear loses darks
        assert torch.allclose(got, mesh.vertex_colors, atol=tolerance), component


def test_base_color_factor_is_linear(tmp_path):
    box = trimesh.creation.box(extents=(1, 1, 1))
    material = trimesh.visual.material.PBRMaterial(baseColorFactor=(0.5, 0.2, 1.0, 1.0))
    box.visual = trimesh.visual.TextureVisuals(material=material)
    path = tmp_path / "factor.glb"
    path.write_bytes(trimesh.Scene(box).export(file_type="glb"))
    colors = load_mesh(path).vertex_colors
    expect = linear_to_srgb(torch.tensor([128, 51, 255]) / 255.0)      # trimesh keeps the factor as 8-bit
    assert torch.allclose(colors, expect.expand_as(colors), atol=1e-5)


@pytest.mark.parametrize("ext", [".ply", ".obj"])
def test_obj_and_ply_colours_are_display_values(tmp_path, ext):
    mesh = _dark_cube()
    path = save_mesh(mesh, tmp_path / f"cube{ext}", frame="sharpit")
    raw = trimesh.load(path, force="mesh", process=False).visual.vertex_colors[:, :3]
    assert np.array_equal(raw, np.round(mesh.vertex_colors.numpy() * 255).astype(np.uint8))
    assert torch.allclose(load_mesh(path).vertex_colors, mesh.vertex_colors, atol=0.5 / 255 + 1e-6)


def test_trimesh_can_reload_and_re_export_our_glb(tmp_path):
    """trimesh (and its notebook viewer, used by ``SharpIt3DPipelineOutput.show``) re-exports a GLB it
    loaded; a VEC3 COLOR_0 made that fail (a (N, 3) array reshaped as RGBA)."""
    import trimesh

    mesh = _dark_cube()
    path = save_mesh(mesh, tmp_path / "cube.glb", frame="sharpit")
    (tmp_path / "again.glb").write_bytes(trimesh.load(path).export(file_type="glb"))
    again = load_mesh(tmp_path / "again.glb", frame="sharpit")
    assert again.num_vertices == mesh.num_vertices
    assert again.vertex_colors is not None
