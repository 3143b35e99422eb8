"""Tests of mesh loading and saving: round trips, frames, scenes and every bad input."""

import os

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from sharpit.cameras import gltf_to_sharpit, orbit_cameras, sharpit_to_gltf
from sharpit.colors import linear_to_srgb, srgb_to_linear
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
    ("points.obj", TRIANGLE.encode(), MeshError, "empty"),
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
