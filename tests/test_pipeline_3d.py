"""SharpIt3DPipeline as a diffusers pipeline: one saved folder, reload with identical outputs,
dtype moves, model CPU offload, options, generators, callbacks, and the deprecated names."""

import json
import shutil
import warnings

import numpy as np
import pytest
import torch

from sharpit import (AssetNotFoundError, CheckpointError, ConfigError, InputError, SharpIt3DPipeline,
                     WeightsNotFoundError)
from sharpit.options import TINY_OPTIONS, GenerationOptions, OptionError
from sharpit.result import SharpIt3DPipelineOutput

FAST = dict(coarse_steps=2, refine_steps=2, coarse_grid_size=24, mesh_resolution=32)


def _quiet(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="module")
def pipe(tiny_dir):
    return _quiet(SharpIt3DPipeline.from_tiny(tiny_dir))


@pytest.fixture(scope="module")
def result(pipe):
    return pipe.generate("a red chair", seed=5, **FAST)


@pytest.fixture(scope="module")
def saved(pipe, tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved") / "sharpit-3d"
    pipe.save_pretrained(folder)
    return folder


def _same(a, b):
    assert torch.equal(a.mesh.vertices, b.mesh.vertices) and torch.equal(a.mesh.faces, b.mesh.faces)
    assert list(a.refined_grid.getdata()) == list(b.refined_grid.getdata())
    assert torch.equal(a.latent, b.latent)


def test_save_pretrained_writes_one_diffusers_folder(saved):
    index = json.loads((saved / "model_index.json").read_text())
    assert index["_class_name"] == "SharpIt3DPipeline"
    for name in ("vae", "text_encoder", "tokenizer", "unet", "scheduler", "reconstructor", "prior",
                 "prior_text_encoder", "prior_tokenizer", "prior_scheduler", "shap_e_renderer"):
        assert (saved / name).is_dir(), name
        assert index[name][0] is not None
    assert index["reconstructor"] == ["sharpit.reconstruct.model", "InstantMeshReconstructor"]
    assert index["vision_encoder"] == [None, None]          # optional, absent for Sharp-It
    assert index["null_condition"] == "black" and index["condition_latent_space"] == "raw"
    assert index["generation_defaults"] == TINY_OPTIONS.to_dict()
    assert list((saved / "reconstructor").glob("*.safetensors"))


def test_a_new_process_loads_the_saved_folder(saved):
    """diffusers imports only its own libraries: sharpit's component modules named in
    model_index.json must be imported by from_pretrained itself, not by whatever ran before."""
    import subprocess
    import sys

    code = ("import sys; from sharpit import SharpIt3DPipeline; pipe = SharpIt3DPipeline.from_pretrained(sys.argv[1]); "
            "print(type(pipe.reconstructor).__name__, type(pipe.shap_e_encoder).__name__)")
    proc = subprocess.run([sys.executable, "-c", code, str(saved)], capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["InstantMeshReconstructor", "ShapEEncoder"]


def test_reload_gives_identical_outputs_for_a_seed(saved, result):
    reloaded = _quiet(SharpIt3DPipeline.from_pretrained(saved))
    assert reloaded.config.generation_defaults == TINY_OPTIONS.to_dict()
    again = reloaded.generate("a red chair", seed=5, **FAST)
    _same(result, again)
    assert again.models["pipeline"] == str(saved)
    assert again.models["tiny"] == "random weights (smoke test)"


def _close(a, b):
    """Equal up to float32 rounding: the same latent and mesh faces, vertices within 1e-4, grid
    pixels within 2 of 255 (mean under 0.05)."""
    assert torch.equal(a.latent, b.latent)
    for x, y in ((a.mesh, b.mesh), (a.coarse_mesh, b.coarse_mesh)):
        assert torch.equal(x.faces, y.faces) and torch.allclose(x.vertices, y.vertices, atol=1e-4)
    for x, y in ((a.coarse_grid, b.coarse_grid), (a.refined_grid, b.refined_grid)):
        diff = (torch.tensor(np.asarray(x), dtype=torch.int16) - torch.tensor(np.asarray(y), dtype=torch.int16)).abs()
        assert diff.max() <= 2 and diff.float().mean() < 0.05, (int(diff.max()), float(diff.float().mean()))


def test_dtype_by_either_name_without_diffusers_deprecation_warnings(saved):
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)   # diffusers >= 0.40 deprecates torch_dtype
        for key in ("dtype", "torch_dtype"):
            pipe = SharpIt3DPipeline.from_pretrained(saved, **{key: torch.bfloat16})
            assert pipe.unet.dtype == torch.bfloat16 and pipe.shap_e_renderer.dtype == torch.float32, key
    with pytest.raises(InputError, match="not both"):
        SharpIt3DPipeline.from_pretrained(saved, dtype=torch.bfloat16, torch_dtype=torch.bfloat16)


def test_callbacks_that_are_not_functions_are_refused_before_anything_runs(pipe):
    for name in ("callback_on_step_end", "optimize_callback"):
        with pytest.raises(InputError, match=f"{name} must be a function"):
            pipe.generate("a chair", seed=0, **{name: 3})
        with pytest.raises(InputError, match=f"{name} must be a function"):
            pipe.edit(torch.zeros(1, pipe.coarse.latent_width), "a chair", seed=0, **{name: "f"})


def test_stage_seeds_never_repeat_across_stages_or_batch_items():
    from sharpit.pipeline import SEED_STAGES, stage_seed

    seeds = [stage_seed(seed, stage) for seed in range(1000) for stage in SEED_STAGES]
    assert len(set(seeds)) == len(seeds) and all(0 <= s < 2 ** 64 for s in seeds)
    assert stage_seed(0, "refine") != stage_seed(1, "coarse")   # the former seed + stage aliased these
    assert 0 <= stage_seed(2 ** 70, "coarse") < 2 ** 64            # any seed fits torch's generators
    with pytest.raises(ValueError, match="unknown stage"):
        stage_seed(0, "render")


def test_model_cpu_offload_gives_the_same_outputs(saved, result):
    """Up to rounding, not bit for bit: offloading re-allocates the weights (64-byte aligned, where
    the loaded ones are views into the safetensors buffer), and some CPUs' float32 kernels round
    differently by alignment (AMD EPYC: the Shap-E texture field's colours moved by 0.005)."""
    offloaded = _quiet(SharpIt3DPipeline.from_pretrained(saved))
    offloaded.enable_model_cpu_offload(device="cpu")   # the hooks' logic, on the only device here
    assert hasattr(offloaded.unet, "_hf_hook") and hasattr(offloaded.reconstructor, "_hf_hook")
    _close(result, offloaded.generate("a red chair", seed=5, **FAST))


def _unrounded(part, reference):
    assert part.dtype == torch.float32
    for (name, a), b in zip(reference.state_dict().items(), part.state_dict().values()):
        assert torch.equal(a, b), name


def test_to_dtype_keeps_the_shap_e_renderer_and_encoder_float32_unrounded(saved):
    reference = SharpIt3DPipeline.from_pretrained(saved)
    half = SharpIt3DPipeline.from_pretrained(saved, torch_dtype=torch.float16)
    assert half.unet.dtype == torch.float16 and half.prior.dtype == torch.float16
    back = half.to(torch.bfloat16)
    assert back is half and half.reconstructor.dtype == torch.bfloat16
    # loaded in float32, and a cast after loading leaves them alone: not rounded through float16
    cast = reference.to("cpu", torch.float16)
    assert cast.unet.dtype == torch.float16 and cast.config.shap_e_encoder[1] == "ShapEEncoder"
    fresh = SharpIt3DPipeline.from_pretrained(saved)
    for loaded in (half, cast):
        for name in ("shap_e_renderer", "shap_e_encoder"):
            _unrounded(getattr(loaded, name), getattr(fresh, name))


def test_load_errors_name_the_source(saved, tmp_path):
    with pytest.raises(AssetNotFoundError):
        SharpIt3DPipeline.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(WeightsNotFoundError, match="nobody/no-such-pipeline"):
        SharpIt3DPipeline.from_pretrained("nobody/no-such-pipeline")
    broken = tmp_path / "broken"
    shutil.copytree(saved, broken)
    shutil.rmtree(broken / "unet")
    with pytest.raises(CheckpointError, match="broken"):
        SharpIt3DPipeline.from_pretrained(broken)


def test_output_is_a_base_output(result):
    assert isinstance(result, SharpIt3DPipelineOutput)
    assert result["mesh"] is result.mesh and result.to_tuple()[0] == "a red chair"
    assert result.parameters["refine_steps"] == 2 and result.parameters["mode"] == "generate"


def test_call_generator_and_callbacks(pipe, result):
    steps = []

    def on_step(refiner, i, t, tensors):
        steps.append(i)
        return tensors

    called = pipe("a red chair", seed=5, callback_on_step_end=on_step, **FAST)
    _same(result, called)                      # pipe(prompt) is generate
    assert steps == [0, 1]
    a = pipe.generate("a red chair", generator=torch.Generator().manual_seed(7), **FAST)
    b = pipe.generate("a red chair", generator=torch.Generator().manual_seed(7), **FAST)
    _same(a, b)
    assert a.seed == b.seed
    with pytest.raises(InputError, match="seed or generator"):
        pipe.generate("a red chair", seed=1, generator=torch.Generator(), **FAST)


def test_options_validate_before_any_model_runs(pipe, monkeypatch):
    monkeypatch.setattr(pipe.coarse, "sample_latents", lambda *a, **k: pytest.fail("a model ran"))
    for bad, match in [(dict(refine_steps=0), "refine_steps must be an integer >= 1"),
                       (dict(guidance_scale=-1.0), "guidance_scale must be a finite number >= 0"),
                       (dict(strength=1.5), r"strength must be a finite number in \(0.0, 1.0\]"),
                       (dict(mesh_resolution=2), "mesh_resolution"),
                       (dict(refine_step=3), "refine_step is not a generation option")]:
        with pytest.raises(OptionError, match=match):
            pipe.generate("a chair", seed=0, **bad)
    with pytest.raises(InputError, match="options must be a sharpit.GenerationOptions"):
        pipe.generate("a chair", options={"refine_steps": 3})


def test_options_objects_and_saved_defaults(tiny_dir, tmp_path):
    opts = GenerationOptions(refine_steps=30)
    assert opts.replace(guidance_scale=3).guidance_scale == 3.0 and opts.replace().refine_steps == 30
    assert GenerationOptions.from_dict(opts.to_dict()) == opts
    fresh = SharpIt3DPipeline.from_tiny(tiny_dir)
    fresh.set_default_options(refine_steps=3)
    assert fresh.default_options == TINY_OPTIONS.replace(refine_steps=3)
    fresh.save_pretrained(tmp_path / "p")
    assert SharpIt3DPipeline.from_pretrained(tmp_path / "p").default_options.refine_steps == 3


def test_progress_bar_config_reaches_every_stage(pipe, result):
    assert pipe.refiner._progress_bar_config == {"disable": True}
    assert pipe.coarse._progress_kwargs == {"disable": True}


def test_stages_share_the_pipelines_modules(pipe):
    assert pipe.refiner.unet is pipe.unet and pipe.coarse.prior is pipe.prior
    assert pipe.refiner is pipe.refiner                                  # built once
    assert pipe.refiner.config.null_condition == pipe.config.null_condition


def test_edit_only_pipeline_saves_and_loads(pipe, tmp_path):
    parts = {k: v for k, v in pipe.components.items() if not k.startswith(("prior", "shap_e"))}
    edit_only = SharpIt3DPipeline(**parts)
    assert edit_only.coarse is None
    with pytest.raises(InputError, match="without Shap-E"):
        edit_only.generate("a chair")
    edit_only.save_pretrained(tmp_path / "edit-only")
    assert SharpIt3DPipeline.from_pretrained(tmp_path / "edit-only").coarse is None
    with pytest.raises(ConfigError, match="missing prior_scheduler"):
        SharpIt3DPipeline(**parts, prior=pipe.prior, prior_text_encoder=pipe.prior_text_encoder,
                          prior_tokenizer=pipe.prior_tokenizer, shap_e_renderer=pipe.shap_e_renderer)


def test_old_refiner_name_is_a_deprecated_alias():
    import sharpit
    from sharpit.refine import SharpItRefinePipeline

    with pytest.warns(FutureWarning, match="renamed SharpItRefinePipeline") as caught:
        from sharpit.refine import SharpItPipeline
    assert SharpItPipeline is SharpItRefinePipeline
    with pytest.warns(FutureWarning) as caught_too:
        assert sharpit.SharpItPipeline is SharpItRefinePipeline
    # attributed to the line that used the old name (sharpit.warn.warn), not to a line of sharpit
    assert {w.filename for w in caught.list + caught_too.list} == {__file__}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sharpit.SharpItRefinePipeline is SharpItRefinePipeline


def test_cli_runs_a_saved_pipeline_folder(saved, tmp_path, capsys):
    from inference import generate

    out = tmp_path / "chair"
    assert generate.main(["--prompt", "a chair", "--out", str(out), "--pipeline", str(saved), "--dtype", "fp32",
                          "--refine-steps", "2", "--coarse-steps", "2", "--mesh-resolution", "32"]) == 0
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["models"]["pipeline"] == str(saved)
    assert meta["parameters"]["coarse_grid_size"] == TINY_OPTIONS.coarse_grid_size   # the folder's saved default


@pytest.mark.parametrize("flags, needle", [
    (["--refine-steps", "0"], "--refine-steps must be an integer >= 1"),
    (["--guidance-scale", "-1"], "--guidance-scale must be a finite number >= 0"),
    (["--strength", "0"], "--strength must be a finite number in (0.0, 1.0]"),
    (["--mesh-resolution", "0"], "--mesh-resolution must be an integer >= 8"),
    (["--coarse-steps", "0"], "--coarse-steps must be an integer >= 1"),
])
def test_cli_option_errors_name_the_flag(flags, needle, tmp_path, capsys):
    from inference import generate

    assert generate.main(["--prompt", "a chair", "--out", str(tmp_path / "o"), *flags]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_optimize_is_one_switch(tiny_dir, monkeypatch):
    fresh = _quiet(SharpIt3DPipeline.from_tiny(tiny_dir))
    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: compiled.append(type(self).__name__))
    fresh.optimize(compile=True)
    assert sorted(compiled) == ["InstantMeshReconstructor", "UNet2DConditionModel"]
    weight = fresh.unet.conv_in.weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    assert fresh.generate("a red chair", seed=5, **FAST).mesh.num_faces > 0   # still runs (eager here)
