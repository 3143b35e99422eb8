"""Editing through Shap-E's latent space (issue 11) and texture optimisation (issue 18) in the
pipeline, with tiny random models: the routes, what they record, and their errors."""

import json

import pytest
import torch

from sharpit import InputError, SharpIt3DPipeline
from sharpit.coarse import CoarseRenderOptions
from sharpit.mesh import Similarity
from sharpit.mesh_io import load_mesh, save_mesh
from sharpit.testing.meshes import colored_cube

TINY_STEPS = dict(refine_steps=2, coarse_grid_size=32, mesh_resolution=48)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    pipe = SharpIt3DPipeline.from_tiny(tmp_path_factory.mktemp("tiny-models"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def asset(tmp_path_factory):
    """A cube placed away from the origin, turned and scaled, saved as GLB."""
    rot = torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]], dtype=torch.float64)
    placed = Similarity(rot, 3.0, torch.tensor([5.0, -2.0, 1.0], dtype=torch.float64))
    return save_mesh(colored_cube().transformed(placed), tmp_path_factory.mktemp("asset") / "rough.glb")


@pytest.fixture(scope="module")
def kept(pipe, asset):
    """The default route for a mesh with an encoder: encode, keep the latent, decode, refine."""
    return pipe.edit(asset, "a blue cube", seed=0, **TINY_STEPS)


def test_mesh_edit_goes_through_the_latent_by_default(pipe, asset, kept):
    assert kept.parameters["via"] == "latent" and kept.parameters["source_prompt"] is None
    assert {"encode", "decode"} <= set(kept.timings) and "invert" not in kept.timings
    assert kept.latent.shape == (1, pipe.coarse.latent_width)
    # the encoder's latent, encoded as the pipeline does (its "encode" stage seed), is what was decoded
    again = pipe.shap_e_encoder.encode(load_mesh(asset), generator=pipe._generator(0, "encode"), progress=False)
    assert torch.equal(kept.latent, again)
    # the latent-edit options did not act, so they are not recorded as if they had
    assert kept.parameters["latent_strength"] is None and kept.parameters["inversion_steps"] is None


def test_latent_route_returns_meshes_in_the_assets_frame(asset, kept):
    source = load_mesh(asset)
    lo, hi = source.bounds()
    center, radius = (lo + hi) / 2, float((hi - lo).norm()) / 2
    for mesh in (kept.mesh, kept.coarse_mesh):
        clo, chi = mesh.bounds()
        # the decoded object is framed like the asset: same centre and size, up to what the
        # (random, tiny) encoder and decoder change and the reconstructor's margin
        assert float(((clo + chi) / 2 - center).norm()) < 0.5 * radius
        assert 0.2 * radius < float((chi - clo).norm()) / 2 < 2.0 * radius


def test_latent_route_differs_from_rendering_the_mesh(pipe, asset, kept):
    rendered = pipe.edit(asset, "a blue cube", seed=0, via="render", **TINY_STEPS)
    assert rendered.parameters["via"] == "render" and rendered.latent is None and "encode" not in rendered.timings
    assert list(rendered.coarse_grid.getdata()) != list(kept.coarse_grid.getdata())


@pytest.fixture(scope="module")
def edited(pipe, asset):
    """The latent edited from a source prompt (edit-friendly DDPM inversion at strength 1)."""
    return pipe.edit(asset, "a blue cube", seed=0, source_prompt="a cube", latent_strength=1.0, **TINY_STEPS)


def test_source_prompt_edits_the_latent(pipe, asset, kept, edited):
    assert "invert" in edited.timings
    assert edited.parameters["source_prompt"] == "a cube"
    assert edited.parameters["latent_strength"] == 1.0 and edited.parameters["inversion_steps"] == 4
    assert not torch.allclose(edited.latent, kept.latent)
    # strength 0 regenerates nothing: the encoded latent comes back unchanged
    unchanged = pipe.edit(asset, "a blue cube", seed=0, source_prompt="a cube", latent_strength=0.0,
                          **TINY_STEPS)
    assert torch.equal(unchanged.latent, kept.latent)
    # and the same call again is reproducible
    twice = pipe.edit(asset, "a blue cube", seed=0, source_prompt="a cube", latent_strength=1.0, **TINY_STEPS)
    assert torch.equal(twice.latent, edited.latent)


def test_a_latent_asset_can_be_edited_with_a_source_prompt(pipe, kept, tmp_path):
    out = kept.save(tmp_path / "kept")
    edited = pipe.edit(out / "latent.safetensors", "a red cube", seed=1, source_prompt="a blue cube",
                       latent_strength=0.5, **TINY_STEPS)
    assert edited.parameters["via"] == "latent" and edited.latent.shape == kept.latent.shape
    assert not torch.equal(edited.latent, kept.latent)


def test_nerf_coarse_views_work_on_the_latent_route(pipe, asset, monkeypatch):
    """A mesh on the latent route has a latent, so its NeRF can be rendered (volume rendering
    itself is tested elsewhere; here the call is stopped once the route hands the latent over)."""
    class Stop(Exception):
        pass

    def render(latent, cameras=None, mode=None, **kwargs):
        assert mode == "nerf" and latent.shape == (1, pipe.coarse.latent_width)
        raise Stop

    monkeypatch.setattr(pipe.coarse, "render_views", render)
    with pytest.raises(Stop):
        pipe.edit(asset, "a cube", seed=0, coarse_render=CoarseRenderOptions(mode="nerf", supersample=1),
                  **TINY_STEPS)


def test_route_errors(pipe, asset, kept):
    with pytest.raises(InputError, match="via must be one of"):
        pipe.edit(asset, "a cube", via="nerf")
    with pytest.raises(InputError, match="source_prompt.*via='render'"):
        pipe.edit(asset, "a cube", via="render", source_prompt="a box")
    with pytest.raises(InputError, match="source_prompt must be a non-empty string"):
        pipe.edit(asset, "a cube", source_prompt="  ")
    with pytest.raises(InputError, match="latent asset has no mesh"):
        pipe.edit(kept.latent, "a cube", via="render")
    with pytest.raises(InputError, match="latent_strength"):
        pipe.edit(asset, "a cube", source_prompt="a box", latent_strength=1.5)
    with pytest.raises(InputError, match="inversion_steps, latent_strength act only in a latent edit"):
        pipe.edit(asset, "a cube", latent_strength=0.3, inversion_steps=8)
    without = SharpIt3DPipeline(**{**pipe.components, "shap_e_encoder": None})
    with pytest.raises(InputError, match="without: pass SharpIt3DPipeline.from_released\\(shap_e_encoder"):
        without.edit(asset, "a cube", via="latent")
    no_shap_e = SharpIt3DPipeline(**{**pipe.components, **{k: None for k in (
        "prior", "prior_text_encoder", "prior_tokenizer", "prior_scheduler", "shap_e_renderer")}})
    with pytest.raises(InputError, match="shap_e=None"):
        no_shap_e.edit(asset, "a cube", via="latent")
    assert no_shap_e._edit_route(None, is_latent=False) == "render"   # no Shap-E: the mesh as it is


@pytest.mark.parametrize("via,is_latent,encoder,shap_e,expected", [
    (None, False, True, True, ("latent", None)),        # the paper's path when both models are there
    (None, False, True, False, ("render", None)),
    (None, False, False, True, ("render", None)),
    ("render", False, True, True, ("render", None)),
    ("latent", False, False, True, ("latent", "no_encoder")),
    ("latent", False, True, False, ("latent", "no_shap_e")),
    (None, True, False, False, ("latent", None)),       # a latent needs no encoder
    ("render", True, True, True, ("latent", "latent_asset")),
    ("mesh", False, True, True, ("", "unknown")),
])
def test_edit_route_rule(via, is_latent, encoder, shap_e, expected):
    from sharpit.coarse.edit_defaults import edit_route

    assert edit_route(via, is_latent, encoder, shap_e) == expected


@pytest.fixture(scope="module")
def saved(pipe, tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved") / "pipeline"
    pipe.save_pretrained(folder)
    return folder


def test_the_encoder_is_saved_with_the_pipeline_and_stays_float32(pipe, saved):
    from sharpit.coarse import ShapEEncoder

    index = json.loads((saved / "model_index.json").read_text())
    assert index["shap_e_encoder"][1] == "ShapEEncoder"
    loaded = SharpIt3DPipeline.from_pretrained(saved, torch_dtype=torch.float16)
    assert isinstance(loaded.shap_e_encoder, ShapEEncoder)
    assert loaded.shap_e_encoder.dtype == torch.float32 and loaded.unet.dtype == torch.float16
    for (name, a), b in zip(pipe.shap_e_encoder.state_dict().items(), loaded.shap_e_encoder.state_dict().values()):
        assert torch.equal(a, b), name


def test_model_cpu_offload_leaves_the_encoder_on_the_device(saved, asset, kept):
    """The encoder and renderer are used outside forward: excluded from the offload hooks, they
    stay on the execution device, and the latent route gives the same result."""
    offloaded = SharpIt3DPipeline.from_pretrained(saved)
    offloaded.set_progress_bar_config(disable=True)
    offloaded.enable_model_cpu_offload(device="cpu")   # the hooks' logic, on the only device here
    assert hasattr(offloaded.unet, "_hf_hook") and hasattr(offloaded.prior, "_hf_hook")
    assert not hasattr(offloaded.shap_e_encoder, "_hf_hook") and not hasattr(offloaded.shap_e_renderer, "_hf_hook")
    again = offloaded.edit(asset, "a blue cube", seed=0, **TINY_STEPS)
    assert again.parameters["via"] == "latent" and torch.equal(again.latent, kept.latent)
    assert torch.equal(again.mesh.vertices, kept.mesh.vertices)


def test_the_command_line_expects_what_a_latent_edit_records(asset, kept, edited, tmp_path):
    """``inference.edit`` skips a finished item only when the parameters it expects (computed
    without loading a model) equal those the result recorded: with and without a latent edit."""
    from inference.common import Item, done_state, expected_parameters, generation_overrides
    from inference.edit import build_parser

    flags = ["--asset", str(asset), "--prompt", "a blue cube", "--out", "unused", "--tiny", "--refine-steps", "2",
             "--coarse-grid-size", "32", "--mesh-resolution", "48"]
    for result, extra, source in ((kept, [], None), (edited, ["--latent-strength", "1.0"], "a cube")):
        args = build_parser().parse_args(flags + extra)
        overrides = generation_overrides(args, latent_strength=args.latent_strength)
        expected = expected_parameters(args, overrides, latent_edit=source is not None, mode="edit",
                                       up_axis="auto", via="latent", source_prompt=source)
        recorded = json.loads(json.dumps(result.parameters))   # as metadata.json holds them
        assert {key: recorded.get(key) for key in expected} == expected
        if source is None:
            without_source = expected
    # a rerun that drops --source-prompt over the edited result names the route, not the options it turned off
    out = tmp_path / "done"
    out.mkdir()
    (out / "metadata.json").write_text(json.dumps({"prompt": "a blue cube", "seed": 0, "parameters": edited.parameters}))
    assert done_state(Item(0, "a blue cube", 0, out), without_source) == "source_prompt 'a cube' (now None)"


def test_optimize_steps_texture_the_result(pipe, tmp_path):
    state = tmp_path / "state.pt"
    cube = save_mesh(colored_cube(), tmp_path / "c.glb")
    result = pipe.edit(cube, "a cube", seed=0, via="render", optimize_steps=1, optimize_state=state,
                       face_budget=300, texture_size=64, **TINY_STEPS)
    assert "optimize" in result.timings and result.mesh.has_texture
    recorded = result.parameters
    assert recorded["optimize_steps"] == 1 and recorded["optimize"]["guidance_scale"] == 7.5
    assert recorded["texture_size"] == 64          # the optimised texture is the baked one
    assert state.is_file()                         # the state of the last step, to resume from
    plain = pipe.edit(cube, "a cube", seed=0, via="render", face_budget=300, texture_size=64,
                      textured=True, **TINY_STEPS)
    assert plain.parameters["optimize"] is None and "optimize" not in plain.timings
    assert not torch.equal(plain.mesh.texture, result.mesh.texture)   # the step changed the texture


def test_a_latent_written_by_sharpit_encode_is_an_edit_asset(pipe, asset, tmp_path):
    """``python -m inference.encode`` writes what edit() (and prepare_pairs' --latents) read."""
    from inference import encode
    from sharpit.formats import find_latents

    out = tmp_path / "latents" / "rough.safetensors"
    out.parent.mkdir()
    assert encode.main(["--asset", str(asset), "--out", str(out), "--tiny", "--device", "cpu"]) == 0
    assert find_latents(out.parent) == {"rough": out}
    result = pipe.edit(out, "a blue cube", seed=0, **TINY_STEPS)
    assert result.parameters["via"] == "latent" and result.latent.shape == (1, pipe.coarse.latent_width)
