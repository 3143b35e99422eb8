"""Camera conventions: poses, OpenGL frames, projection, rays, InstantMesh vectors, frame changes."""

import json
import math
from pathlib import Path

import pytest
import torch

from sharpit import cameras as C
from sharpit.errors import InputError

MANIFESTS = Path(__file__).resolve().parents[1].parent / "shared" / "manifests"


def _expected_position(az, el, r):
    a, e = math.radians(az), math.radians(el)
    return [r * math.cos(e) * math.cos(a), r * math.cos(e) * math.sin(a), r * math.sin(e)]


def test_v12_poses_match_spec():
    cams = C.zero123plus_cameras("v1.2")
    assert len(cams) == 6
    assert cams.azimuth_deg.tolist() == [30, 90, 150, 210, 270, 330]
    assert cams.elevation_deg.tolist() == [20, -10, 20, -10, 20, -10]
    assert torch.allclose(cams.fov_deg, torch.full((6,), 30.0))
    assert torch.allclose(cams.distance, torch.full((6,), 0.5 / math.tan(math.radians(15))))
    assert abs(float(cams.distance[0]) - 1.866) < 1e-3
    for i in range(6):
        exp = _expected_position(cams.azimuth_deg[i].item(), cams.elevation_deg[i].item(), 1.8660254)
        assert torch.allclose(cams.position[i], torch.tensor(exp), atol=1e-5)


def test_v11_poses():
    cams = C.zero123plus_cameras("v1.1")
    assert cams.elevation_deg.tolist() == [30, -20, 30, -20, 30, -20]
    assert abs(float(cams.fov_deg[0]) - 49.13) < 0.01


def test_c2w_is_opengl_look_at():
    cams = C.zero123plus_cameras()
    for i in range(len(cams)):
        m = cams.c2w[i]
        rot = m[:3, :3]
        assert torch.allclose(rot.T @ rot, torch.eye(3), atol=1e-5)
        assert abs(float(torch.det(rot)) - 1.0) < 1e-5
        forward = -rot[:, 2]  # the camera looks along its -z
        to_origin = -m[:3, 3] / m[:3, 3].norm()
        assert torch.allclose(forward, to_origin, atol=1e-5)
        assert float(rot[2, 1]) > 0  # camera up has a positive world-z component
        assert abs(float(rot[2, 0])) < 1e-6  # camera right is horizontal


def test_projection_of_origin_and_known_point():
    cams = C.zero123plus_cameras()
    uv, depth = cams.project(torch.zeros(1, 3), 320)
    assert torch.allclose(uv, torch.full_like(uv, 160.0), atol=1e-4)
    assert torch.allclose(depth[:, 0], cams.distance, atol=1e-5)
    # A point on the world z-axis appears above the centre for a camera at elevation 0.
    cam = C.orbit_cameras([0.0], [0.0], 2.0, 30.0)
    uv, depth = cam.project(torch.tensor([[0.0, 0.1, 0.2]]), 320)
    f = 160.0 / math.tan(math.radians(15))
    # camera at +x looking at -x: world +y is image left? right = cross(up, back) = cross(z, x) = +y
    assert torch.allclose(uv[0, 0], torch.tensor([160 + f * 0.1 / 2.0, 160 - f * 0.2 / 2.0]), atol=1e-3)
    assert torch.allclose(depth, torch.tensor([[2.0]]), atol=1e-6)


def test_rays_pass_through_projected_pixels():
    cams = C.zero123plus_cameras()
    origins, dirs = cams.rays(32)
    assert origins.shape == dirs.shape == (6, 32, 32, 3)
    assert torch.allclose(dirs.norm(dim=-1), torch.ones(6, 32, 32), atol=1e-5)
    point = origins[:, 7, 19] + 1.5 * dirs[:, 7, 19]
    uv, _ = cams.project(point[:, None], 32)
    assert torch.allclose(uv[:, 0], torch.tensor([19.5, 7.5]).expand(6, 2), atol=1e-3)


def test_projection_matrix_agrees_with_project():
    cams = C.zero123plus_cameras()
    pts = torch.tensor([[0.1, -0.2, 0.3], [-0.25, 0.1, -0.1]])
    clip = torch.cat([pts, torch.ones(2, 1)], -1) @ cams.full_projection().transpose(1, 2)
    ndc = clip[..., :2] / clip[..., 3:]
    uv_from_ndc = torch.stack([(ndc[..., 0] + 1) * 160, (1 - ndc[..., 1]) * 160], -1)
    uv, _ = cams.project(pts, 320)
    assert torch.allclose(uv_from_ndc, uv, atol=1e-3)


def test_instantmesh_vectors_match_manifest_and_independent_math():
    vec = C.instantmesh_input_cameras().instantmesh_vectors()
    assert vec.shape == (6, 16)
    f = 0.5 / math.tan(math.radians(15))
    for i, (az, el) in enumerate(zip([30, 90, 150, 210, 270, 330], [20, -10, 20, -10, 20, -10])):
        pos = torch.tensor(_expected_position(az, el, 4.0))
        z = pos / pos.norm()
        x = torch.linalg.cross(torch.tensor([0.0, 0.0, 1.0]), z)
        x = x / x.norm()
        y = torch.linalg.cross(z, x)
        c2w = torch.stack([x, y, z, pos], dim=1)
        expected = torch.cat([c2w.flatten(), torch.tensor([f, f, 0.5, 0.5])])
        assert torch.allclose(vec[i], expected, atol=1e-5)
    manifest = MANIFESTS / "instantmesh_nerf_large.json"
    if manifest.exists():
        ref = json.loads(manifest.read_text())["camera_vector"]["reference_vectors_radius4_fov30"]
        assert torch.allclose(vec, torch.tensor(ref), atol=1e-5)


def test_gltf_frame_round_trip_and_axes():
    pts = torch.randn(100, 3, dtype=torch.float64)
    assert torch.allclose(C.sharpit_to_gltf(C.gltf_to_sharpit(pts)), pts, atol=1e-12)
    assert torch.allclose(C.gltf_to_sharpit(C.sharpit_to_gltf(pts)), pts, atol=1e-12)
    # glTF front (+Z) -> sharpit front (+x), glTF up (+Y) -> sharpit up (+z)
    assert C.gltf_to_sharpit(torch.tensor([0.0, 0.0, 1.0])).tolist() == [1.0, 0.0, 0.0]
    assert C.gltf_to_sharpit(torch.tensor([0.0, 1.0, 0.0])).tolist() == [0.0, 0.0, 1.0]
    assert abs(float(torch.det(C.GLTF_TO_SHARPIT)) - 1.0) < 1e-6  # proper rotation


def test_shap_e_offset_is_consistent():
    # A sharpit camera at azimuth a sees what a Shap-E camera at a + offset sees: rotating the
    # Shap-E-frame camera position into sharpit must land at azimuth a.
    a = 30.0
    shap_e_cam = C.orbit_cameras([a + C.SHAP_E_AZIMUTH_OFFSET_DEG], [20.0], 2.0).position
    in_sharpit = C.shap_e_to_sharpit(shap_e_cam)
    expected = C.orbit_cameras([a], [20.0], 2.0).position
    assert torch.allclose(in_sharpit, expected, atol=1e-5)
    pts = torch.randn(10, 3)
    assert torch.allclose(C.sharpit_to_shap_e(C.shap_e_to_sharpit(pts)), pts, atol=1e-6)


def test_camera_batch_indexing_and_device():
    cams = C.zero123plus_cameras()
    one = cams[2]
    assert len(one) == 1 and one.azimuth_deg.item() == 150
    assert len(cams[1:4]) == 3
    assert cams.to("cpu", torch.float64).c2w.dtype == torch.float64


def test_turntable_and_looking_straight_down():
    tt = C.turntable_cameras(8, elevation_deg=15)
    assert len(tt) == 8 and float(tt.azimuth_deg[1]) == 45.0
    top = C.orbit_cameras([0.0], [90.0], 2.0)
    assert torch.isfinite(top.c2w).all()
    assert torch.allclose(-top.c2w[0, :3, 2], torch.tensor([0.0, 0.0, -1.0]), atol=1e-5)


@pytest.mark.parametrize("kwargs", [
    dict(azimuth_deg=[0, 1], elevation_deg=[0, 1, 2], distance=1.0),
    dict(azimuth_deg=[0], elevation_deg=[0], distance=0.0),
    dict(azimuth_deg=[0], elevation_deg=[0], distance=1.0, fov_deg=180.0),
    dict(azimuth_deg=[float("nan")], elevation_deg=[0], distance=1.0),
    dict(azimuth_deg=[], elevation_deg=[], distance=1.0),
])
def test_bad_camera_arguments(kwargs):
    with pytest.raises(InputError):
        C.orbit_cameras(**kwargs)


def test_unknown_version():
    with pytest.raises(InputError, match="v1.2"):
        C.zero123plus_cameras("v2")
