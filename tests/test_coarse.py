"""Coarse stage: tiny Shap-E components in the real layout, sampling, meshes and renders."""

import json
import math

import pytest
import torch

from sharpit.cameras import SHAP_E_TO_SHARPIT, zero123plus_cameras
from sharpit.coarse import ShapEGenerator, karras_sigmas
from sharpit.coarse.fields import frame_mesh, stf_fields, stf_mesh, load_latent_into_mlp
from sharpit.errors import (AssetNotFoundError, CheckpointError, EmptySurfaceError, InputError,
                            WeightsNotFoundError)
from sharpit.testing.shap_e import TINY_SHAP_E_LATENT_WIDTH, save_tiny_shap_e


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_shap_e(tmp_path_factory.mktemp("shap_e") / "shap-e")


@pytest.fixture(scope="module")
def gen(tiny_dir):
    g = ShapEGenerator.from_pretrained(tiny_dir)
    g.set_progress_bar_config(disable=True)
    return g


@pytest.fixture(scope="module")
def latent(gen):
    return gen.sample_latents("a chair", num_inference_steps=2, seed=0)


def test_tiny_folder_has_the_real_layout(tiny_dir):
    index = json.loads((tiny_dir / "model_index.json").read_text())
    assert index["_class_name"] == "ShapEPipeline"
    for sub, weights in [("prior", "diffusion_pytorch_model.safetensors"),
                         ("shap_e_renderer", "diffusion_pytorch_model.safetensors"),
                         ("text_encoder", "model.safetensors"), ("scheduler", "scheduler_config.json"),
                         ("tokenizer", "vocab.json")]:
        assert sub in index and (tiny_dir / sub / weights).is_file()
    sched = json.loads((tiny_dir / "scheduler" / "scheduler_config.json").read_text())
    assert sched["beta_schedule"] == "exp" and sched["prediction_type"] == "sample"
    assert sched["use_karras_sigmas"] and sched["num_train_timesteps"] == 1024
    renderer = json.loads((tiny_dir / "shap_e_renderer" / "config.json").read_text())
    assert {"param_names", "param_shapes", "d_latent", "d_hidden", "background"} <= set(renderer)


def test_from_pretrained_local(gen, tiny_dir):
    assert gen.device.type == "cpu" and gen.prior.dtype == torch.float32
    assert gen.latent_width == TINY_SHAP_E_LATENT_WIDTH
    assert gen.model_id == str(tiny_dir)
    sigmas = karras_sigmas(64)
    assert len(sigmas) == 65 and sigmas[-1] == 0
    assert sigmas[0].item() == pytest.approx(160.0)
    assert sigmas[-2].item() == pytest.approx(1e-3, rel=1e-3)


def test_prior_sees_integer_timesteps(gen, monkeypatch):
    """The prior was trained on integer timesteps; the official sampler truncates (SPEC section 5)."""
    seen = []
    forward = gen.prior.forward
    monkeypatch.setattr(gen.prior, "forward", lambda x, timestep, **kw: seen.append(timestep) or forward(
        x, timestep, **kw))
    gen.sample_latents("a chair", num_inference_steps=4, seed=0)
    assert len(seen) == 7 and all(t.dtype == torch.long and t.shape == (2,) for t in seen)
    assert [int(t[0]) for t in seen][:3] == sorted([int(t[0]) for t in seen][:3], reverse=True)


@pytest.mark.parametrize("embeds", [torch.zeros(2, 3), torch.zeros(16), torch.zeros(0, 16), "text"])
def test_bad_embeddings(gen, embeds):
    with pytest.raises(InputError, match="embeds must be"):
        gen.sample_from_embeddings(embeds, num_inference_steps=1)


def test_missing_weights_offline_names_hub_id(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(WeightsNotFoundError, match="openai/shap-e.*local DIR"):
        ShapEGenerator.from_pretrained("openai/shap-e")


def test_missing_local_folder_and_component(tmp_path, tiny_dir):
    with pytest.raises(AssetNotFoundError):
        ShapEGenerator.from_pretrained(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text((tiny_dir / "model_index.json").read_text())
    with pytest.raises(CheckpointError, match="prior"):
        ShapEGenerator.from_pretrained(broken)


def test_seeds_are_reproducible_and_leave_global_rng(gen, latent):
    torch.manual_seed(1234)
    state = torch.random.get_rng_state()
    a = gen.sample_latents(["a chair"], num_inference_steps=2, seed=0)
    b = gen.sample_latents(["a chair"], num_inference_steps=2,
                           generator=torch.Generator().manual_seed(0))
    c = gen.sample_latents(["a chair"], num_inference_steps=2, seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert a.shape == (1, TINY_SHAP_E_LATENT_WIDTH) and a.dtype == torch.float32
    assert torch.equal(a, b) and torch.equal(a, latent)
    assert not torch.allclose(a, c)


def test_cfg_is_one_batched_prior_call_per_step(gen):
    calls = []
    handle = gen.prior.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    try:
        out = gen.sample_latents(["a", "b"], num_inference_steps=3, seed=0, num_per_prompt=2)
        assert calls == [8] * 5  # 2 prompts x 2 per prompt, doubled for CFG; 2 * 3 - 1 calls
        calls.clear()
        gen.sample_latents(["a"], guidance_scale=1.0, num_inference_steps=1, seed=0)
        assert calls == [1]
    finally:
        handle.remove()
    assert out.shape == (4, TINY_SHAP_E_LATENT_WIDTH)


@pytest.mark.parametrize("prompts, match", [([], "empty"), (["ok", 3], "prompt 1 is int"),
                                            (None, "string or a list")])
def test_bad_prompts(gen, prompts, match):
    with pytest.raises(InputError, match=match):
        gen.sample_latents(prompts, num_inference_steps=1)


def test_bad_latents(gen, latent):
    with pytest.raises(InputError, match="shape"):
        gen.to_mesh(torch.zeros(3, 7))
    with pytest.raises(InputError, match="floating"):
        gen.to_mesh(torch.zeros(1, gen.latent_width, dtype=torch.int64))
    nan = latent.clone()
    nan[0, 5] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        gen.render_views(nan, mode="nerf")
    with pytest.raises(InputError, match="one latent at a time"):
        gen.to_mesh(latent.repeat(2, 1))
    with pytest.raises(InputError, match="mode"):
        gen.render_views(latent, mode="blender")


def test_marching_cubes_on_analytic_sphere():
    radius = 0.6
    mesh = stf_mesh(lambda p: radius - p.norm(dim=-1), lambda p: (p + 1) / 2, grid_size=48)
    r = mesh.vertices.norm(dim=-1)
    assert (r - radius).abs().max() < 2.0 / 47  # within one grid cell
    assert r.mean().item() == pytest.approx(radius, abs=0.01)
    assert torch.allclose(mesh.vertex_colors, ((mesh.vertices + 1) / 2).clamp(0, 1))
    # outward winding: the signed volume is positive
    v = mesh.vertices[mesh.faces]
    volume = (v[:, 0] * torch.cross(v[:, 1], v[:, 2], dim=-1)).sum() / 6
    assert volume.item() == pytest.approx(4 / 3 * math.pi * radius ** 3, rel=0.03)


def test_framing_rotates_then_normalises():
    # an ellipsoid long along Shap-E's x axis, off centre
    centre = torch.tensor([0.2, -0.1, 0.05])
    axes = torch.tensor([0.6, 0.3, 0.3])
    mesh = stf_mesh(lambda p: 1 - (((p - centre) / axes) ** 2).sum(-1), None, grid_size=40)
    framed, framing = frame_mesh(mesh)
    assert framed.vertices.norm(dim=-1).max().item() == pytest.approx(0.5, abs=1e-4)
    extent = framed.vertices.max(0).values - framed.vertices.min(0).values
    long_axis = SHAP_E_TO_SHARPIT @ torch.tensor([1.0, 0.0, 0.0])
    assert int(extent.argmax()) == int(long_axis.abs().argmax())
    assert torch.allclose(framing.apply(mesh.vertices), framed.vertices, atol=1e-5)
    assert torch.allclose(framing.rotation.float(), SHAP_E_TO_SHARPIT)


def test_stf_field_is_closed_by_the_box(gen, latent):
    load_latent_into_mlp(gen.renderer, latent[0])
    sdf, color = stf_fields(gen.renderer)
    pts = torch.tensor([[1.0, 0.0, 0.0], [0.0, -1.0, 0.3], [0.1, 0.2, 0.3]])
    values = sdf(pts)
    assert values[:2].tolist() == [-1.0, -1.0] and -1 <= values[2] <= 1
    rgb = color(pts)
    assert rgb.shape == (3, 3) and bool(((rgb >= 0) & (rgb <= 1)).all())


def test_to_mesh_is_normalised_and_coloured(gen, latent):
    mesh = gen.to_mesh(latent, grid_size=24)
    assert mesh.vertices.norm(dim=-1).max().item() == pytest.approx(0.5, abs=1e-4)
    assert mesh.vertex_colors.shape == mesh.vertices.shape
    assert bool(((mesh.vertex_colors >= 0) & (mesh.vertex_colors <= 1)).all())
    framing = gen.framing(latent, grid_size=24)
    assert framing.scale > 0 and torch.allclose(framing.rotation.float(), SHAP_E_TO_SHARPIT)


def test_empty_surface_is_a_clear_error(tiny_dir, latent):
    g = ShapEGenerator.from_pretrained(tiny_dir)
    with torch.no_grad():
        g.renderer.mlp.mlp[-1].bias[0] = -100.0  # sdf = tanh(-100) = -1 everywhere: nothing inside
    with pytest.raises(EmptySurfaceError, match="empty object.*no surface"):
        g.to_mesh(latent, grid_size=16)


@pytest.mark.parametrize("mode", ["mesh", "nerf"])
def test_render_six_views(gen, latent, mode):
    torch.manual_seed(7)
    state = torch.random.get_rng_state()
    out = gen.render_views(latent, mode=mode, grid_size=24, n_coarse_samples=2, n_fine_samples=2,
                           ray_batch_size=65536, supersample=1)  # anti-aliasing: test_render_supersampling
    assert torch.equal(torch.random.get_rng_state(), state)  # diffusers' sampler reseeds; we restore
    assert out.images.shape == (6, 3, 320, 320) and out.alpha.shape == (6, 1, 320, 320)
    assert bool(((out.images >= 0) & (out.images <= 1)).all())
    assert 0.0 < out.alpha.mean().item() < 1.0
    covered = out.alpha[:, 0] > 0.5
    depth = out.depth[:, 0][covered]
    # objects of radius 0.5 seen from 1.866: every visible depth lies in [1.366, 2.366]
    assert depth.min().item() > 1.866 - 0.5 - 1e-3 and depth.max().item() < 1.866 + 0.5 + 1e-3
    assert out.grid().shape == (3, 960, 640)
    assert torch.equal(out.cameras.c2w, zero123plus_cameras().c2w)


def test_render_supersampling(gen, latent):
    """Supersampling is a box filter over a render ``supersample`` times larger, in both modes,
    and both default to the shared :data:`DEFAULT_COARSE_RENDER` (2x)."""
    import torch.nn.functional as F

    from sharpit.coarse import DEFAULT_COARSE_RENDER
    from sharpit.render import render_views

    assert DEFAULT_COARSE_RENDER.supersample == 2 and DEFAULT_COARSE_RENDER.mode == "mesh"
    nerf = dict(mode="nerf", grid_size=24, n_coarse_samples=2, n_fine_samples=2, ray_batch_size=65536)
    small = gen.render_views(latent, size=16, supersample=2, **nerf)
    big = gen.render_views(latent, size=32, supersample=1, **nerf)   # the same rays, one per sub-pixel
    assert torch.allclose(small.images, F.avg_pool2d(big.images, 2), atol=1e-6)
    assert torch.allclose(small.alpha, F.avg_pool2d(big.alpha, 2), atol=1e-6)
    weighted = F.avg_pool2d(big.depth * big.alpha, 2) / small.alpha.clamp_min(1e-12)
    covered = small.alpha > 1e-3
    assert covered.any() and torch.allclose(small.depth[covered], weighted[covered], rtol=1e-4)

    default = gen.render_views(latent, size=16, grid_size=24)
    expected = render_views(gen.to_mesh(latent, 24), size=16, supersample=2)
    assert torch.equal(default.images, expected.images) and torch.equal(default.alpha, expected.alpha)
    edge = (default.alpha > 0) & (default.alpha < 1)
    assert edge.any()  # anti-aliased silhouettes: fractional coverage
    with pytest.raises(InputError, match="supersample"):
        gen.render_views(latent, size=16, supersample=0)


def test_nerf_cameras_follow_the_framing(gen, latent):
    """Scaling the world (framing and camera distance together) must not change the views."""
    from sharpit.cameras import orbit_cameras
    from sharpit.coarse.nerf import render_latent_nerf
    from sharpit.mesh import Similarity

    load_latent_into_mlp(gen.renderer, latent[0])
    framing = gen.framing(latent, grid_size=24)
    k = 3.0
    bigger = Similarity(torch.eye(3, dtype=torch.float64), k, torch.tensor([0.2, -0.4, 0.1],
                                                                          dtype=torch.float64)).compose(framing)
    cams = zero123plus_cameras()
    moved = orbit_cameras(cams.azimuth_deg, cams.elevation_deg, cams.distance * k)
    moved = type(moved)(torch.cat([moved.c2w[:, :, :3], moved.c2w[:, :, 3:] + torch.tensor(
        [0.2, -0.4, 0.1, 0.0])[None, :, None]], dim=2), moved.fov_deg, moved.azimuth_deg,
        moved.elevation_deg, moved.distance)
    a = render_latent_nerf(gen.renderer, cams, framing, 32, 8, 8)
    b = render_latent_nerf(gen.renderer, moved, bigger, 32, 8, 8)
    # identical rays in the Shap-E frame up to float rounding, which the random field's 2^14 x
    # positional encoding amplifies at a few pixels
    for x, y in ((a[0], b[0]), (a[1], b[1]), (a[2] * k, b[2])):
        assert ((x - y).abs() > 1e-2).float().mean() < 0.02
    assert 0 < a[1].mean() < 1
