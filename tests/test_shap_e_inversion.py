"""Edit-friendly DDPM inversion of Shap-E latents (sharpit.coarse.inversion, ShapEGenerator.invert /
edit_latents).

Two kinds of evidence:

* properties on the tiny random Shap-E: source-prompt regeneration reproduces the input to float
  rounding (measured: max |error| 6e-8 on latents of |max| ~1.1), another prompt changes it, strength
  0 is the input, strength 1 starts at x_N, saved subsets re-run the same edits, bad input is named;
* parity with the official ``GaussianDiffusion`` (``tests/fixtures/parity/shap_e_ddpm.safetensors``,
  made by ``scripts/parity/shap_e_ddpm.py`` on shared tiny weights): respacing, posterior
  coefficients, per-step posterior mean and (learned) variance with and without guidance, and whole
  ancestral chains, each to <= 1e-4 relative.
"""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from sharpit.coarse import ShapEDiffusionClock, ShapEGenerator
from sharpit.coarse.inversion import ShapEInversion, regenerate_ddpm, restart_step
from sharpit.coarse.sampling import RespacedDDPM, respaced_timesteps
from sharpit.errors import CorruptFileError, InputError, OutputExistsError
from sharpit.testing.shap_e import tiny_shap_e_components
from sharpit.testing.tokenizers import tiny_clip_tokenizer

FIXTURE = Path(__file__).parent / "fixtures" / "parity" / "shap_e_ddpm.safetensors"
PROMPTS = ["a wooden chair", "a red car"]
STEPS = 32           # the tiny tests run 32 DDPM steps (SPEC: 128; the algorithm does not depend on N)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _generator(prior, tmp_path_factory) -> ShapEGenerator:
    parts = tiny_shap_e_components()
    tokenizer = tiny_clip_tokenizer(tmp_path_factory.mktemp("tok"))
    gen = ShapEGenerator(prior.eval(), parts["text_encoder"], tokenizer, parts["scheduler"], parts["shap_e_renderer"])
    gen.set_progress_bar_config(disable=True)
    return gen


@pytest.fixture(scope="module")
def gen(tmp_path_factory):
    return _generator(tiny_shap_e_components()["prior"], tmp_path_factory)


@pytest.fixture(scope="module")
def source(gen):
    """Two latents sampled by the Heun sampler, and their inversion with their own prompts."""
    latents = gen.sample_latents(PROMPTS, guidance_scale=12.0, num_inference_steps=6, seed=0)
    inv = gen.invert(latents, PROMPTS, num_inference_steps=STEPS, guidance_scale=12.0,
                     generator=torch.Generator().manual_seed(1))
    return latents, inv


# -- properties ---------------------------------------------------------------------------------
@pytest.mark.parametrize("strength", [1.0, 0.5])
def test_source_prompt_regeneration_reproduces_the_input(gen, source, strength):
    latents, inv = source
    out = gen.edit_latents(inv, PROMPTS, strength=strength, guidance_scale=12.0)
    assert out.shape == latents.shape
    assert float((out - latents).abs().max()) <= 1e-6 * max(1.0, float(latents.abs().max()))


def test_inversion_records_its_settings(gen, source):
    latents, inv = source
    assert inv.noise_maps.shape == (STEPS, 2, gen.latent_width)
    assert inv.restart_steps == list(range(STEPS + 1))
    assert inv.prompts == PROMPTS and inv.guidance_scale == 12.0 and inv.num_inference_steps == STEPS
    assert torch.equal(inv.timesteps, torch.from_numpy(respaced_timesteps(1024, STEPS)))
    assert torch.equal(inv.latents, latents)
    # the path was drawn from q(x_n | x_0): x_N is almost pure noise, not the input
    assert _rel(inv.path[STEPS], latents) > 0.9


def test_another_prompt_or_guidance_changes_the_result(gen, source):
    latents, inv = source
    edited = gen.edit_latents(inv, ["a tall lamp", "a small boat"], strength=1.0, guidance_scale=12.0)
    assert _rel(edited, latents) > 1e-2
    other_scale = gen.edit_latents(inv, PROMPTS, strength=1.0, guidance_scale=3.0)
    assert _rel(other_scale, latents) > 1e-2


def test_strength_zero_returns_the_input_exactly(gen, source):
    latents, inv = source
    assert torch.equal(gen.edit_latents(inv, "anything else", strength=0.0), latents)


def test_strength_one_regenerates_from_x_T(gen, source):
    """Strength 1 starts at x_N: the same result as running the DDPM by hand from path[N]."""
    _, inv = source
    out = gen.edit_latents(inv, "a tall lamp", strength=1.0, guidance_scale=12.0)
    schedule = RespacedDDPM(ShapEDiffusionClock(1024), STEPS)
    denoise = gen._denoiser(gen.encode_prompts(["a tall lamp"] * 2), 12.0)
    shape = (2,) + gen._latent_shape(1)[1:]
    by_hand = regenerate_ddpm(denoise, schedule, inv.path[STEPS].reshape(shape), STEPS,
                              inv.noise_maps.reshape((STEPS,) + shape))
    assert torch.equal(out, by_hand.reshape(2, -1))
    assert restart_step(128, 0.5) == 64 and restart_step(128, 0.64) == 81


def test_final_residual_is_what_makes_it_exact(gen, source):
    """The paper's code zeroes the last map: then the source prompt is off by that step's residual."""
    latents, inv = source
    paper = gen.edit_latents(inv, PROMPTS, strength=1.0, guidance_scale=12.0, final_residual=False)
    assert torch.allclose(paper + inv.noise_maps[0], latents, atol=1e-6)
    assert float(inv.noise_maps[0].abs().max()) > 1e-2


def test_learned_variance_inverts_exactly_too(gen, source):
    latents, _ = source
    inv = gen.invert(latents[:1], PROMPTS[0], num_inference_steps=8, generator=torch.Generator().manual_seed(2),
                     variance="learned")
    assert inv.variance == "learned"
    out = gen.edit_latents(inv, PROMPTS[0], strength=1.0)
    assert float((out - latents[:1]).abs().max()) <= 1e-6


def test_one_inversion_many_targets_and_one_prompt_for_all(gen, source):
    latents, inv = source
    one = inv.subset([1.0])
    one = ShapEInversion(one.noise_maps[:, :1], {n: x[:1] for n, x in one.path.items()}, one.timesteps,
                         one.prompts[:1], one.guidance_scale, one.num_inference_steps)
    both = gen.edit_latents(one, [PROMPTS[0], "a tall lamp"], strength=1.0, guidance_scale=12.0)
    assert both.shape == (2, gen.latent_width)
    assert float((both[0] - latents[0]).abs().max()) <= 1e-6
    assert gen.edit_latents(inv, "a tall lamp", strength=0.5).shape == (2, gen.latent_width)


def test_inversion_is_reproducible_with_a_generator(gen, source):
    latents, inv = source
    again = gen.invert(latents, PROMPTS, num_inference_steps=STEPS, generator=torch.Generator().manual_seed(1))
    assert torch.equal(again.noise_maps, inv.noise_maps)


def test_save_load_round_trip_and_subsets(gen, source, tmp_path):
    latents, inv = source
    full = inv.save(tmp_path / "inv.safetensors")
    loaded = ShapEInversion.load(full)
    assert loaded.prompts == PROMPTS and loaded.restart_steps == inv.restart_steps
    assert torch.equal(loaded.noise_maps, inv.noise_maps)
    part = inv.save(tmp_path / "half.safetensors", strengths=[0.5])
    small = ShapEInversion.load(part)
    assert small.restart_steps == [0, STEPS // 2] and small.noise_maps.shape[0] == STEPS // 2
    assert part.stat().st_size < 0.6 * full.stat().st_size
    target = ["a tall lamp", "a small boat"]
    assert torch.equal(gen.edit_latents(small, target, strength=0.5), gen.edit_latents(inv, target, strength=0.5))
    with pytest.raises(InputError, match="did not keep"):
        gen.edit_latents(small, target, strength=1.0)
    with pytest.raises(OutputExistsError):
        inv.save(full)
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CorruptFileError):
        ShapEInversion.load(tmp_path / "junk.safetensors")


def test_ddpm_sampling_from_fresh_noise_matches_the_heun_range(gen):
    """A sanity bound, not the proof (the parity tests below are): the DDPM run from fresh noise (no
    inversion) ends at latents of the Heun sampler's scale (measured ratios 1.06 std, 1.10 max). On
    random tiny weights the final guided clamped predictions dominate, so only gross errors fail it
    (swapped posterior-mean coefficients: max ratio 1.76)."""
    g = torch.Generator().manual_seed(3)
    shape = (4,) + gen._latent_shape(1)[1:]
    schedule = RespacedDDPM(ShapEDiffusionClock(1024), 64)
    denoise = gen._denoiser(gen.encode_prompts(PROMPTS * 2), 12.0)
    ddpm = regenerate_ddpm(denoise, schedule, torch.randn(shape, generator=g), 64,
                           torch.randn((64,) + shape, generator=g), final_residual=False).reshape(4, -1)
    heun = gen.sample_latents(PROMPTS * 2, guidance_scale=12.0, num_inference_steps=32, seed=3)
    for stat in (lambda x: x.std(), lambda x: x.abs().amax(dim=1).mean()):
        ratio = float(stat(ddpm) / stat(heun))
        assert 0.7 < ratio < 1.4, ratio


@pytest.mark.parametrize("call, match", [
    (lambda g, inv, lat: g.invert(lat[:, :-1], "x"), r"shape \(B, 512\)"),
    (lambda g, inv, lat: g.invert(lat, ["a", "b", "c"]), "3 prompts for 2 latents"),
    (lambda g, inv, lat: g.invert(lat, "x", num_inference_steps=1), "at least 2 steps"),
    (lambda g, inv, lat: g.invert(lat, "x", guidance_scale=-1.0), "guidance_scale"),
    (lambda g, inv, lat: g.invert(lat, "x", variance="large"), "variance must be one of"),
    (lambda g, inv, lat: g.edit_latents(inv, "x", strength=1.5), r"strength must be a number in \[0, 1\]"),
    (lambda g, inv, lat: g.edit_latents(inv, "x", strength=-0.1), r"strength must be a number in \[0, 1\]"),
    (lambda g, inv, lat: g.edit_latents(inv, "x", guidance_scale=float("nan")), "guidance_scale"),
    (lambda g, inv, lat: g.edit_latents(inv, ["a", "b", "c"]), "3 target prompts for an inversion of 2"),
    (lambda g, inv, lat: g.edit_latents(lat, "x"), "must be a ShapEInversion"),
])
def test_bad_input_is_named(gen, source, call, match):
    latents, inv = source
    with pytest.raises(InputError, match=match):
        call(gen, inv, latents)


def test_inversion_of_another_model_or_schedule_is_refused(gen, source):
    _, inv = source
    wide = ShapEInversion(torch.zeros(4, 1, 1024), {0: torch.zeros(1, 1024)}, inv.timesteps, ["x"], 12.0, STEPS)
    with pytest.raises(InputError, match="latents of 1024 values but this Shap-E prior makes 512"):
        gen.edit_latents(wide, "x")
    other = ShapEInversion(inv.noise_maps, inv.path, inv.timesteps.flip(0), inv.prompts, 12.0, STEPS)
    with pytest.raises(InputError, match="timesteps are not this prior's"):
        gen.edit_latents(other, "x")


def test_inconsistent_inversions_are_refused(source):
    _, inv = source
    with pytest.raises(InputError, match="32 steps need 32 timesteps"):
        ShapEInversion(inv.noise_maps, inv.path, inv.timesteps[:-1], inv.prompts, 12.0, STEPS)
    with pytest.raises(InputError, match="33 noise maps for 32 steps"):
        ShapEInversion(torch.cat([inv.noise_maps, inv.noise_maps[:1]]), {0: inv.latents}, inv.timesteps,
                       inv.prompts, 12.0, STEPS)
    with pytest.raises(InputError, match="path step 32 has no noise maps"):
        ShapEInversion(inv.noise_maps[:4], inv.path, inv.timesteps, inv.prompts, 12.0, STEPS)
    with pytest.raises(InputError, match="need 2 source prompts"):
        ShapEInversion(inv.noise_maps, inv.path, inv.timesteps, ["one"], 12.0, STEPS)


# -- parity with the official GaussianDiffusion ------------------------------------------------
@pytest.fixture(scope="module")
def golden():
    with safe_open(str(FIXTURE), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return meta, tensors


@pytest.fixture(scope="module")
def official_gen(golden, tmp_path_factory):
    from diffusers import PriorTransformer

    meta, tensors = golden
    prior = PriorTransformer(**json.loads(meta["prior_config"]))
    prior.load_state_dict({k[len("prior."):]: v for k, v in tensors.items() if k.startswith("prior.")}, strict=True)
    return _generator(prior, tmp_path_factory)


def test_respacing_and_coefficients_match_official(golden):
    _, tensors = golden
    for key in (k for k in tensors if k.startswith("timesteps_")):
        n = int(key.split("_")[1])
        assert torch.equal(torch.from_numpy(respaced_timesteps(1024, n)), tensors[key]), key
    ddpm = RespacedDDPM(ShapEDiffusionClock(1024), 128)
    pairs = {"posterior_variance_128": ddpm.posterior_variance,
             "posterior_log_variance_clipped_128": ddpm.posterior_log_variance_clipped,
             "posterior_mean_coef1_128": ddpm.mean_coef_x0, "posterior_mean_coef2_128": ddpm.mean_coef_xt}
    for key, ours in pairs.items():
        assert torch.allclose(ours.double(), tensors[key], rtol=1e-6, atol=0), key
    assert torch.allclose(ddpm.log_betas.double(), tensors["betas_128"].log(), rtol=1e-6)


@pytest.mark.parametrize("guided", [False, True])
def test_posterior_mean_and_variance_match_official_per_step(official_gen, golden, guided):
    meta, tensors = golden
    scale = float(meta["guidance"]) if guided else 1.0
    g = "g_" if guided else ""
    denoise = official_gen._denoiser(tensors["embeds"], scale)
    ddpm = RespacedDDPM(official_gen._clock, 128)
    shape = (2,) + official_gen._latent_shape(1)[1:]
    for k in json.loads(meta["steps"]):
        xt = tensors[f"xt_{k}"].reshape(shape)
        with torch.no_grad():
            x0, values = denoise(xt, ddpm.timesteps[k])
        mean = ddpm.mean_coef_x0[k] * x0 + ddpm.mean_coef_xt[k] * xt
        assert _rel(x0.reshape(2, -1), tensors[f"pred_xstart_{g}{k}"]) <= 1e-4, k
        assert _rel(mean.reshape(2, -1), tensors[f"mean_{g}{k}"]) <= 1e-4, k
        learned = ddpm.std(k, values) ** 2
        assert _rel(learned.reshape(2, -1), tensors[f"variance_{g}{k}"]) <= 1e-4, k


def test_clamping_after_guidance_would_miss_official(official_gen, golden):
    """The fixture tells the clamp convention apart: clamping the guided prediction (diffusers'
    convention) instead of each branch misses the official guided clean prediction at step 16 by
    2.5e-2 and its posterior mean by 1.2e-3 (ours: 1.6e-6)."""
    meta, tensors = golden
    ddpm = RespacedDDPM(official_gen._clock, 128)
    xt = tensors["xt_16"].reshape((2,) + official_gen._latent_shape(1)[1:])
    t = ddpm.timesteps[16].expand(4)
    rows = torch.cat([tensors["embeds"], torch.zeros_like(tensors["embeds"])])
    with torch.no_grad():
        pred = official_gen.prior(torch.cat([xt, xt]), timestep=t, proj_embedding=rows).predicted_image_embedding
    c, u = pred[..., :16].chunk(2)
    x0 = (u + float(meta["guidance"]) * (c - u)).clamp(-1, 1)
    mean = ddpm.mean_coef_x0[16] * x0 + ddpm.mean_coef_xt[16] * xt
    assert _rel(x0.reshape(2, -1), tensors["pred_xstart_g_16"]) > 1e-2
    assert _rel(mean.reshape(2, -1), tensors["mean_g_16"]) > 5e-4


@pytest.mark.parametrize("variance", ["posterior", "learned"])
def test_ancestral_chain_matches_official_p_sample_loop(official_gen, golden, variance):
    """regenerate_ddpm with the official loop's own noises (loop order N-1 .. 0) is p_sample_loop."""
    meta, tensors = golden
    steps = int(meta["chain_steps"])
    shape = (2,) + official_gen._latent_shape(1)[1:]
    denoise = official_gen._denoiser(tensors["embeds"], 1.0)
    ddpm = RespacedDDPM(official_gen._clock, steps)
    maps = tensors[f"chain_{variance}_noise"].flip(0).reshape((steps,) + shape)   # row n-1 = noise of step n
    x0 = regenerate_ddpm(denoise, ddpm, tensors[f"chain_{variance}_xT"].reshape(shape), steps, maps,
                         variance=variance, final_residual=False)
    assert _rel(x0.reshape(2, -1), tensors[f"chain_{variance}_x0"]) <= 1e-4
    other = "learned" if variance == "posterior" else "posterior"
    wrong = regenerate_ddpm(denoise, ddpm, tensors[f"chain_{variance}_xT"].reshape(shape), steps, maps,
                            variance=other, final_residual=False)
    assert _rel(wrong.reshape(2, -1), tensors[f"chain_{variance}_x0"]) > 1e-3

