"""The notebook API end to end with tiny random models: generate, edit, save, reproduce."""

import json

import pytest
import torch
import trimesh

from sharpit import InputError, OutputExistsError, SharpIt3DPipeline
from sharpit.coarse import DEFAULT_COARSE_RENDER, CoarseRenderOptions
from sharpit.mesh import Similarity
from sharpit.mesh_io import load_mesh, save_mesh
from sharpit.testing.meshes import colored_cube

TINY_STEPS = dict(refine_steps=3, coarse_grid_size=32, mesh_resolution=48)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    pipe = SharpIt3DPipeline.from_tiny(tmp_path_factory.mktemp("tiny-models"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def generated(pipe):
    return pipe.generate("a red chair", seed=3, coarse_steps=3, **TINY_STEPS)


def test_generate_saves_a_valid_glb_and_complete_metadata(generated, tmp_path, gltf_validate):
    out = generated.save(tmp_path / "chair")
    report = gltf_validate(out / "mesh.glb")
    assert report["numErrors"] == 0, report["messages"]
    loaded = trimesh.load(out / "mesh.glb", force="mesh")
    assert len(loaded.faces) > 0 and len(loaded.vertices) > 0
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["prompt"] == "a red chair" and meta["seed"] == 3
    for key in ("coarse_steps", "coarse_guidance_scale", "coarse_grid_size", "refine_steps", "guidance_scale",
                "strength", "mesh_resolution", "negative_prompt", "textured"):
        assert key in meta["parameters"], key
    assert meta["parameters"]["coarse_render"] == {"mode": "mesh", "supersample": 2} == DEFAULT_COARSE_RENDER.to_dict()
    assert set(meta["models"]) >= {"shap_e", "zero123plus", "sharpit_unet", "instantmesh"}
    assert set(meta["versions"]) >= {"sharpit", "torch", "diffusers", "transformers"}
    assert set(meta["timings_s"]) >= {"coarse", "render", "refine", "reconstruct", "total"}
    for name in ("coarse_mesh.glb", "coarse_grid.png", "refined_grid.png", "latent.safetensors"):
        assert (out / name).is_file(), name
    assert generated.refined_grid.size == (640, 960) and generated.coarse_grid.size == (640, 960)
    assert generated._repr_png_()[:4] == b"\x89PNG"


def test_textured_glb_is_valid_and_keeps_its_texture(pipe, tmp_path, gltf_validate):
    result = pipe.generate("a red chair", seed=4, coarse_steps=2, textured=True, texture_size=64,
                           face_budget=400, **TINY_STEPS)
    assert result.mesh.has_texture and result.mesh.num_faces <= 400
    out = result.save(tmp_path / "textured")
    report = gltf_validate(out / "mesh.glb")
    assert report["numErrors"] == 0, report["messages"]
    reloaded = load_mesh(out / "mesh.glb")
    assert reloaded.has_texture and reloaded.texture.shape == (64, 64, 3)
    assert json.loads((out / "metadata.json").read_text())["parameters"]["face_budget"] == 400


def test_save_never_overwrites_silently(generated, tmp_path):
    out = generated.save(tmp_path / "once")
    with pytest.raises(OutputExistsError, match="once"):
        generated.save(out)
    generated.save(out, overwrite=True)


def test_same_seed_reproduces(pipe, generated):
    again = pipe.generate("a red chair", seed=3, coarse_steps=3, **TINY_STEPS)
    assert torch.equal(again.latent, generated.latent)
    assert list(again.refined_grid.getdata()) == list(generated.refined_grid.getdata())
    assert torch.equal(again.mesh.vertices, generated.mesh.vertices)


def test_edit_returns_mesh_in_the_assets_frame(pipe, tmp_path):
    rot = torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]], dtype=torch.float64)
    placed = Similarity(rot, 4.0, torch.tensor([10.0, -3.0, 2.0], dtype=torch.float64))
    asset = tmp_path / "rough.glb"
    save_mesh(colored_cube().transformed(placed), asset)
    source = load_mesh(asset)
    result = pipe.edit(asset, "a blue cube", seed=0, via="render", **TINY_STEPS)
    lo, hi = source.bounds()
    center, radius = (lo + hi) / 2, float((hi - lo).norm()) / 2
    # The reconstructor's box spans [-1, 1]^3 in its own frame, a little more than the unit
    # sphere of the normalised asset: allow that margin around the input's bounding sphere.
    for mesh in (result.mesh, result.coarse_mesh):
        dist = (mesh.vertices - center).norm(dim=-1)
        assert float(dist.max()) <= 2.0 * radius
    assert torch.allclose(result.coarse_mesh.vertices, source.vertices, atol=1e-4)
    assert result.source == str(asset) and result.latent is None


def test_edit_of_a_saved_latent(pipe, generated, tmp_path):
    out = generated.save(tmp_path / "g")
    result = pipe.edit(out / "latent.safetensors", "a green chair", seed=1, **TINY_STEPS)
    assert torch.equal(result.latent, generated.latent)
    assert result.mesh.num_faces > 0


def test_coarse_views_are_anti_aliased_mesh_renders_by_default(pipe, generated):
    from sharpit.grid import pil_to_tensor
    from sharpit.render import render_views

    expected = render_views(generated.coarse_mesh, supersample=DEFAULT_COARSE_RENDER.supersample).grid()
    assert (pil_to_tensor(generated.coarse_grid) - expected).abs().max() <= 1 / 255 + 1e-6  # 8-bit grid


def test_nerf_coarse_views_of_a_latent(pipe, generated, monkeypatch):
    calls = []
    real = pipe.coarse.render_views

    def cheap_render(latents, **kwargs):   # the real NeRF path with few samples per ray, recorded
        calls.append(kwargs)
        return real(latents, n_coarse_samples=1, n_fine_samples=1, ray_batch_size=1 << 20, **kwargs)

    monkeypatch.setattr(pipe.coarse, "render_views", cheap_render)
    options = CoarseRenderOptions(mode="nerf", supersample=1)
    result = pipe.edit(generated.latent, "a green chair", seed=1, coarse_render=options, **TINY_STEPS)
    assert calls == [dict(mode="nerf", grid_size=TINY_STEPS["coarse_grid_size"], supersample=1)]
    assert result.parameters["coarse_render"] == {"mode": "nerf", "supersample": 1}
    assert list(result.coarse_grid.getdata()) != list(generated.coarse_grid.getdata())


def test_nerf_coarse_views_need_a_latent(pipe, tmp_path):
    asset = tmp_path / "cube.glb"
    save_mesh(colored_cube(), asset)
    with pytest.raises(InputError, match="'nerf'.*mesh asset"):
        pipe.edit(asset, "a cube", via="render", coarse_render=CoarseRenderOptions(mode="nerf"), **TINY_STEPS)
    with pytest.raises(InputError, match="CoarseRenderOptions"):
        pipe.generate("a chair", coarse_render="nerf", **TINY_STEPS)


@pytest.mark.parametrize("prompt", ["", "   ", None, 3])
def test_bad_prompts(pipe, prompt):
    with pytest.raises(InputError, match="prompt"):
        pipe.generate(prompt, seed=0, **TINY_STEPS)


def test_bad_asset(pipe, tmp_path):
    with pytest.raises(InputError, match="asset"):
        pipe.edit(42, "a chair")


def test_uncoloured_mesh_is_shaded_not_a_silhouette(pipe, tmp_path):
    from sharpit.grid import pil_to_tensor
    from sharpit.testing.meshes import uv_sphere

    plain = save_mesh(uv_sphere(12, 24, colored=False), tmp_path / "ball.obj")
    result = pipe.edit(plain, "a marble ball", seed=0, via="render", **TINY_STEPS)
    assert result.parameters["coarse_shading"] == "lambertian"
    grid = pil_to_tensor(result.coarse_grid)
    on_object = grid.min(0).values < 0.99
    assert grid[0][on_object].std() > 0.05          # shading varies across the ball; unlit grey would be flat
    coloured = pipe.edit(_saved_cube(tmp_path), "a cube", seed=0, via="render", **TINY_STEPS)
    assert coloured.parameters["coarse_shading"] == "unlit"


def _saved_cube(tmp_path):
    return save_mesh(colored_cube(), tmp_path / "cube.glb")


def test_edit_up_axis(pipe, tmp_path):
    from sharpit.mesh import Mesh

    tall = colored_cube()
    tall = Mesh(tall.vertices * torch.tensor([0.2, 0.2, 1.0]), tall.faces, vertex_colors=tall.vertex_colors)
    asset = save_mesh(tall, tmp_path / "tall.obj")           # z-up: tall along z
    as_z = pipe.edit(asset, "a post", seed=0, up_axis="z", via="render", **TINY_STEPS)
    as_y = pipe.edit(asset, "a post", seed=0, up_axis="y", via="render", **TINY_STEPS)
    assert as_z.parameters["up_axis"] == "z" and as_y.parameters["up_axis"] == "y"
    assert list(as_z.coarse_grid.getdata()) != list(as_y.coarse_grid.getdata())   # lying down vs standing
    with pytest.raises(InputError, match="up_axis must be one of"):
        pipe.edit(asset, "a post", up_axis="x", **TINY_STEPS)
