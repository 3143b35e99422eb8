"""The reconstructor equals the official InstantMesh code on identical tiny weights.

The fixtures (``tests/fixtures/parity/instantmesh.{ckpt,safetensors}``) hold the official
``InstantNeRF``'s re-drawn weights in the released checkpoint layout and its outputs, made by
``scripts/parity/instantmesh.py`` (see its docstring for the scratch environment and command).
sharpit loads the weights through ``from_instantmesh_checkpoint`` and builds every input itself
(its own v1.2 camera vectors, its own image normalisation, its own frame scale), so a broken
convention anywhere on the way shows up as a mismatch here.
"""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from sharpit.cameras import instantmesh_input_cameras, orbit_cameras
from sharpit.isosurface import grid_points
from sharpit.reconstruct import TRIPLANE_TO_SHARPIT_SCALE, InstantMeshReconstructor, config
from sharpit.reconstruct.inputs import camera_vectors, cameras_to_triplane_frame
from sharpit.reconstruct.volume import render_rays

FIXTURES = Path(__file__).parent / "fixtures" / "parity"
CKPT = FIXTURES / "instantmesh.ckpt"
GOLDEN = FIXTURES / "instantmesh.safetensors"
TOL = 1e-4


def _rel(ours: torch.Tensor, ref: torch.Tensor) -> float:
    assert ours.shape == ref.shape, (tuple(ours.shape), tuple(ref.shape))
    return float((ours.double() - ref.double()).norm() / ref.double().norm())


@pytest.fixture(scope="module")
def golden():
    with safe_open(str(GOLDEN), framework="pt") as f:
        meta = json.loads(f.metadata()["meta"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return meta, tensors


@pytest.fixture(scope="module")
def model(golden):
    meta, _ = golden
    with pytest.MonkeyPatch.context() as mp:   # the tiny config as a variant, through the real loader
        mp.setitem(config.VARIANTS, "parity", dict(meta["sharpit_config"]))
        return InstantMeshReconstructor.from_instantmesh_checkpoint(CKPT, variant="parity").float()


@pytest.fixture(scope="module")
def ours(model, golden):
    """sharpit's encoder tokens and planes from sharpit's own camera vectors."""
    _, t = golden
    images = t["images_uint8"].float() / 255.0
    cams = camera_vectors(None, images.shape[0])
    with torch.no_grad():
        tokens = model.encoder(images.flatten(0, 1), cams.flatten(0, 1))
        planes = model(images, cams).planes
    return {"tokens": tokens, "planes": planes}


def test_fixture_is_what_the_docs_say(golden):
    """The weights are dense and the cameras modulate the encoder (adaLN re-drawn, not zero)."""
    meta, _ = golden
    sd = torch.load(CKPT, map_location="cpu", weights_only=True)["state_dict"]
    assert all(k.startswith("lrm_generator.") for k in sd)
    ada = [v for k, v in sd.items() if "adaLN_modulation" in k]
    assert ada and all(float(v.abs().min()) > 0 for v in ada)
    assert meta["image_mean"] == list(config.DINO_IMAGE_MEAN) and meta["image_std"] == list(config.DINO_IMAGE_STD)
    assert CKPT.stat().st_size + GOLDEN.stat().st_size < 1_000_000


def test_input_camera_vectors_match_official(golden):
    ref = golden[1]["input_cameras"]
    assert _rel(camera_vectors(None, 1)[0], ref) <= TOL
    assert _rel(instantmesh_input_cameras().instantmesh_vectors(), ref) <= TOL
    assert torch.allclose(camera_vectors(None, 1)[0], ref, rtol=0, atol=1e-5)


def test_encoder_tokens_match_official(ours, golden):
    assert _rel(ours["tokens"], golden[1]["tokens"]) <= TOL


def test_triplanes_match_official(ours, golden):
    ref = golden[1]["planes"]
    assert _rel(ours["planes"], ref) <= TOL
    for b in range(ref.shape[0]):                       # batch order, not just the batch as a whole
        assert _rel(ours["planes"][b], ref[b]) <= TOL


def test_cameras_and_views_change_the_planes(model, ours, golden):
    """The fixture can see a camera or view-order convention break (sanity of the test itself)."""
    _, t = golden
    images = t["images_uint8"].float() / 255.0
    cams = camera_vectors(None, images.shape[0])
    with torch.no_grad():
        flipped = model(images, -cams).planes
        rolled = model(images, cams.roll(1, dims=1)).planes
    assert _rel(flipped, t["planes"]) > 1e-2
    assert _rel(rolled, t["planes"]) > 1e-2


def test_density_and_colour_at_points_match_official(model, ours, golden):
    _, t = golden
    for b in range(t["points"].shape[0]):
        density, rgb = model.query(ours["planes"][b:b + 1], t["points"][b] * TRIPLANE_TO_SHARPIT_SCALE)
        assert _rel(density, t["density"][b]) <= TOL
        assert _rel(rgb, t["rgb"][b]) <= TOL


def test_density_grid_matches_official(model, ours, golden):
    meta, t = golden
    pts = grid_points(meta["grid_size"]).reshape(-1, 3) * TRIPLANE_TO_SHARPIT_SCALE
    density, _ = model.query(ours["planes"][:1], pts)
    assert _rel(density.reshape(t["grid_density"].shape), t["grid_density"]) <= TOL


def test_mesh_vertices_match_official_marching_cubes(model, ours, golden):
    """scikit-image (sharpit) and PyMCubes (official) put the same vertices on the same grid edges.
    Lewiner's method may add a vertex inside an ambiguous cell and triangulates those cells its
    own way, so only edge vertices must be official ones and face counts differ slightly."""
    meta, t = golden
    mesh = model.extract_mesh(ours["planes"][:1], resolution=meta["grid_size"], threshold=meta["mesh_level"])
    verts = mesh.vertices.double() / TRIPLANE_TO_SHARPIT_SCALE
    ref = t["mesh_vertices"].double()
    step = 2.0 / (meta["grid_size"] - 1)
    index = (verts + 1.0) / step                                    # grid-index coordinates
    on_edge = ((index - index.round()).abs() < 1e-3).sum(dim=1) >= 2
    dist = torch.cdist(verts, ref)
    nearest_ref, idx = dist.min(dim=1)
    assert float(dist.min(dim=0).values.max()) <= 1e-4 * step       # every official vertex is ours
    assert float(nearest_ref[on_edge].max()) <= 1e-4 * step         # every edge vertex of ours is official
    assert int(on_edge.sum()) == ref.shape[0]                       # one to one
    assert int((~on_edge).sum()) <= 0.05 * ref.shape[0]             # few cell-interior extras
    ours_u8 = (mesh.vertex_colors[on_edge] * 255).to(torch.uint8).int()
    assert int((ours_u8 - t["mesh_vertex_colors"][idx[on_edge]].int()).abs().max()) <= 1
    assert abs(mesh.num_faces - meta["mesh_faces"]) <= 0.05 * meta["mesh_faces"]


def test_novel_view_matches_official_renderer(model, ours, golden):
    """One view, coarse (stratified) samples only, the official jitter reproduced by seeding (one
    chunk of rays, so one sample-major draw, as the official renderer's); sharpit's importance sampler is its own (other bins and weights
    than the official ``sample_pdf``), so the fine pass is not compared."""
    meta, t = golden
    r = meta["render"]
    cams = orbit_cameras([r["azimuth_deg"]], [r["elevation_deg"]], r["radius"] * TRIPLANE_TO_SHARPIT_SCALE,
                         r["fov_deg"])
    tri = cameras_to_triplane_frame(cams)
    ref_cam = t["render_camera"]
    assert torch.allclose(tri.c2w[0].flatten(), ref_cam[:16], rtol=0, atol=1e-5)
    assert torch.allclose(tri.focal_normalized(), ref_cam[16:17], rtol=0, atol=1e-6)
    origins, dirs = tri.rays(r["size"])
    gen = torch.Generator().manual_seed(r["seed"])
    rgb, depth, alpha = render_rays(model.synthesizer, ours["planes"][:1], origins.reshape(-1, 3),
                                    dirs.reshape(-1, 3), r["coarse_samples"], r["importance_samples"],
                                    generator=gen, point_budget=1 << 20)
    size = r["size"]
    assert _rel(rgb.view(size, size, 3).permute(2, 0, 1), t["render_rgb"]) <= TOL
    assert _rel(alpha.view(size, size), t["render_alpha"]) <= TOL
    # The official depth is clamped to the range of all depth samples; compare where it is not.
    ref_depth, depth = t["render_depth"], depth.view(size, size)
    clamped = ref_depth <= ref_depth.min() + 1e-6
    assert 0 < int(clamped.sum()) < clamped.numel() // 2
    assert _rel(depth[~clamped], ref_depth[~clamped]) <= TOL
    assert bool((depth[clamped] <= ref_depth[clamped] + 1e-4).all())
