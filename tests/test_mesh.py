"""The Mesh structure: validation, normalisation to the v1.2 scale and back."""

import pytest
import torch

from sharpit.errors import MeshError
from sharpit.mesh import Mesh, Similarity, normalize_mesh


def _tetra(**kw):
    v = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    f = torch.tensor([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    return Mesh(v, f, **kw)


def test_dtypes_are_normalised():
    m = Mesh(torch.zeros(3, 3, dtype=torch.float64), torch.tensor([[0, 1, 2]], dtype=torch.int32))
    assert m.vertices.dtype == torch.float32 and m.faces.dtype == torch.int64


@pytest.mark.parametrize("mutate, match", [
    (lambda m: Mesh(m.vertices[:0], m.faces[:0], source="a.obj"), "empty"),
    (lambda m: Mesh(m.vertices.index_fill(0, torch.tensor([1]), float("nan")), m.faces, source="a.obj"), "NaN"),
    (lambda m: Mesh(m.vertices, m.faces + 10, source="a.obj"), "face indices"),
    (lambda m: Mesh(m.vertices * torch.tensor([1.0, 0, 0]), m.faces, source="a.obj"), "degenerate"),
    (lambda m: Mesh(m.vertices, m.faces, vertex_colors=torch.ones(2, 3), source="a.obj"), "vertex_colors"),
    (lambda m: Mesh(m.vertices, m.faces, uvs=torch.zeros(4, 2), source="a.obj"), "together"),
    (lambda m: Mesh(m.vertices[:, :2], m.faces, source="a.obj"), r"\(V, 3\)"),
])
def test_validate_rejects_bad_meshes_naming_the_file(mutate, match):
    with pytest.raises(MeshError, match=match) as info:
        mutate(_tetra()).validate()
    assert "a.obj" in str(info.value)


def test_normalize_and_back():
    m = _tetra(vertex_colors=torch.rand(4, 3))
    big = m.transformed(Similarity(torch.eye(3, dtype=torch.float64), 7.0, torch.tensor([3.0, -2, 5], dtype=torch.float64)))
    norm, tf = normalize_mesh(big)
    center = (norm.vertices.min(0).values + norm.vertices.max(0).values) / 2
    assert torch.allclose(center, torch.zeros(3), atol=1e-6)
    assert abs(float(norm.vertices.norm(dim=-1).max()) - 0.5) < 1e-6
    back = norm.transformed(tf.inverse())
    assert torch.allclose(back.vertices, big.vertices, atol=1e-5)
    assert torch.equal(back.vertex_colors, m.vertex_colors)


def test_similarity_compose_and_matrix():
    angle = torch.tensor(0.3, dtype=torch.float64)
    rot = torch.tensor([[angle.cos(), -angle.sin(), 0], [angle.sin(), angle.cos(), 0], [0, 0, 1]], dtype=torch.float64)
    a = Similarity(rot, 2.0, torch.tensor([1.0, 0, 0], dtype=torch.float64))
    b = Similarity(rot.T, 0.5, torch.tensor([0.0, 2, 0], dtype=torch.float64))
    p = torch.randn(5, 3, dtype=torch.float64)
    assert torch.allclose(a.compose(b).apply(p), a.apply(b.apply(p)))
    homo = torch.cat([p, torch.ones(5, 1, dtype=torch.float64)], 1) @ a.to_matrix().T
    assert torch.allclose(homo[:, :3], a.apply(p))
    assert torch.allclose(a.inverse().apply(a.apply(p)), p)
