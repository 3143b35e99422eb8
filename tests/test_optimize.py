"""Texture refinement under the refiner prior (sharpit.optimize) on tiny models.

The prior of most tests is sharpit.testing.optimize's closed-form one: it predicts exactly the
noise towards the latent of the cube rendered in one colour, so SDS must turn the texture to it.
"""

import pytest
import torch

from sharpit.errors import ConfigError, InputError
from sharpit.optimize import RefinerPrior, TextureOptimizeOptions, refine_texture, timestep_range
from sharpit.refine import NULL_PROMPT
from sharpit.render import render_views
from sharpit.testing.meshes import colored_cube, uv_sphere
from sharpit.testing.optimize import colour_prior_refiner
from sharpit.testing.refine import tiny_sharpit_pipeline

COLOUR = (0.2, 0.6, 0.9)
FAST = TextureOptimizeOptions(texture_size=32, guidance_scale=1.0, supersample=1, learning_rate=0.05)


@pytest.fixture(scope="module")
def prior():
    torch.manual_seed(0)
    refiner, grid = colour_prior_refiner(colored_cube(), COLOUR)
    refiner.set_progress_bar_config(disable=True)
    return refiner, grid


def colour_error(mesh) -> float:
    render = render_views(mesh, size=64)
    covered = render.alpha[:, 0] > 0.99
    return float((render.images.permute(0, 2, 3, 1)[covered] - torch.tensor(COLOUR)).abs().mean())


@pytest.mark.parametrize("target", ["sds", "sdedit"])
def test_texture_converges_to_the_colour_the_prior_prefers(prior, target):
    refiner, grid = prior
    mesh = colored_cube()
    before = colour_error(mesh)
    result = refine_texture(refiner, mesh, grid, "a cube", 16, options=FAST.replace(target=target, sdedit_steps=1),
                            seed=0)
    assert before > 0.4
    assert colour_error(result.mesh) < 0.12
    residuals = [s["residual"] for s in result.stats]
    assert len(residuals) == 16 and residuals[-1] < 0.2 * residuals[0]     # the loss decreases
    assert result.mesh.has_texture and float(result.mesh.texture.min()) >= 0 and float(result.mesh.texture.max()) <= 1


def test_v_prediction_is_converted_to_the_exact_noise(prior):
    refiner, grid = prior
    p = RefinerPrior(refiner, "a cube", guidance_scale=3.0)
    target = refiner.unet.target
    noise = torch.randn(target.shape, generator=torch.Generator().manual_seed(1))
    cond = p.condition_latents(p.condition_posterior(grid), torch.Generator().manual_seed(2))
    for t in (50, 500, 950):
        # the render's latent is the prior's target: the guided prediction is the noise added
        torch.testing.assert_close(p.predict_noise(p.noise(target, t, noise), t, cond), noise, rtol=1e-4, atol=1e-4)


def test_zero_steps_return_the_mesh_unchanged(prior):
    refiner, grid = prior
    mesh = colored_cube()
    assert refine_texture(refiner, mesh, grid, "a cube", 0).mesh is mesh


def test_seed_reproduces_and_resume_matches_an_uninterrupted_run(prior, tmp_path):
    refiner, grid = prior
    run = lambda **kw: refine_texture(refiner, colored_cube(), grid, "a cube", 4, options=FAST.replace(save_every=2),  # noqa: E731
                                      **kw)
    full = run(seed=7)
    assert torch.equal(run(seed=7).mesh.texture, full.mesh.texture)
    assert not torch.equal(run(seed=8).mesh.texture, full.mesh.texture)

    class Stop(Exception):
        pass

    def interrupt(step, _stats):
        if step == 2:
            raise Stop

    state = tmp_path / "state.pt"
    with pytest.raises(Stop):
        run(seed=7, state_path=state, callback_on_step_end=interrupt)
    resumed = run(seed=7, state_path=state)
    assert resumed.resumed_from == 2
    assert torch.equal(resumed.mesh.texture, full.mesh.texture)
    assert [s["t"] for s in resumed.stats] == [s["t"] for s in full.stats]
    with pytest.raises(InputError, match="another mesh, prompt"):
        run(seed=8, state_path=state)


def test_rig_rotations_render_the_condition_at_turned_rigs(prior):
    refiner, grid = prior
    seen = []

    def condition(cameras):
        seen.append(float(cameras.azimuth_deg[0]))
        return grid

    result = refine_texture(refiner, colored_cube(), condition, "a cube", 6,
                            options=FAST.replace(rig_rotations=3), seed=0)
    assert {s["rig_offset_deg"] for s in result.stats} <= {0.0, 40.0, 80.0}
    # each offset rendered once; the canonical one (30 deg) always, for the resume fingerprint
    assert sorted(seen) == sorted({30.0} | {30.0 + s["rig_offset_deg"] for s in result.stats})


def test_real_tiny_refiner_runs_one_step():
    refiner = tiny_sharpit_pipeline("concat")
    refiner.set_progress_bar_config(disable=True)
    mesh = colored_cube()
    grid = torch.rand(3, 960, 640, generator=torch.Generator().manual_seed(0))
    result = refine_texture(refiner, mesh, grid, "a cube", 1, options=FAST.replace(guidance_scale=4.0), seed=0)
    assert result.mesh.texture.shape == (32, 32, 3) and bool(torch.isfinite(result.mesh.texture).all())
    assert all(p.requires_grad for p in refiner.vae.parameters())   # frozen only while optimising


def test_timestep_schedule_anneals():
    opts = TextureOptimizeOptions()
    assert timestep_range(opts, 0, 100, 1000) == (20, 600)
    assert timestep_range(opts, 99, 100, 1000) == (20, 200)
    assert timestep_range(opts.replace(timestep_schedule="uniform"), 99, 100, 1000) == (20, 600)


def test_bad_inputs_raise_sharpit_errors(prior):
    refiner, grid = prior
    mesh = colored_cube()
    with pytest.raises(InputError, match="steps must be an integer >= 0"):
        refine_texture(refiner, mesh, grid, "a cube", -1)
    with pytest.raises(InputError, match="960x640"):
        refine_texture(refiner, mesh, torch.rand(3, 480, 320), "a cube", 1)
    with pytest.raises(InputError, match="3x2 grid"):
        refine_texture(refiner, mesh, "grid.png", "a cube", 1)
    with pytest.raises(ConfigError, match="concat UNet"):
        refine_texture(tiny_sharpit_pipeline("reference"), mesh, grid, "a cube", 1)
    with pytest.raises(ConfigError, match="SharpItRefinePipeline"):
        refine_texture(object(), mesh, grid, "a cube", 1)
    with pytest.raises(InputError, match="too small"):
        refine_texture(refiner, uv_sphere(16, 32), grid, "a cube", 1, options=FAST.replace(texture_size=16))
    with pytest.raises(InputError, match="rig_rotations=2"):
        refine_texture(refiner, mesh, grid, "a cube", 1, options=FAST.replace(rig_rotations=2))
    with pytest.raises(ConfigError, match="t_min"):
        TextureOptimizeOptions(t_min=0.7)
    with pytest.raises(ConfigError, match="target"):
        TextureOptimizeOptions(target="vsd")


def test_guided_estimate_matches_the_refiners_own_cfg_and_scheduler():
    """On the real tiny concat refiner (text and condition matter): the prior's guided noise, turned
    into a clean estimate, equals the one the refiner's own path gives (its prompt and condition
    batches [unconditional, conditional], its UNet call, CFG, and its Euler scheduler's v-prediction
    x0 at the same timestep). A swapped CFG order or another noise convention fails this."""
    refiner = tiny_sharpit_pipeline("concat")
    grid = torch.rand(1, 3, 960, 640, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(1, 4, 120, 80, generator=g), torch.randn(1, 4, 120, 80, generator=g)
    scheduler = refiner.scheduler
    scheduler.set_timesteps(4)
    t = scheduler.timesteps[1]
    sigma = scheduler.sigmas[1]
    sample = x0 + sigma * eps                                  # the Euler scheduler's latent at t
    with torch.no_grad():
        embeds = refiner.encode_prompt(["blurry", "a cube"])
        cond = refiner.prepare_condition_latents(grid, torch.Generator().manual_seed(5), guidance=True)
        uncond, c = refiner.predict(scheduler.scale_model_input(torch.cat([sample, sample]), t), t, embeds,
                                    cond).chunk(2)
    reference = scheduler.step(uncond + 3.0 * (c - uncond), t, sample).pred_original_sample

    p = RefinerPrior(refiner, "a cube", negative_prompt="blurry", guidance_scale=3.0)
    step = int(round(float(t)))
    x_t = p.noise(x0, step, eps)
    eps_hat = p.predict_noise(x_t, step, p.condition_latents(p.condition_posterior(grid),
                                                             torch.Generator().manual_seed(5)))
    a = p.alphas_cumprod[step]
    torch.testing.assert_close((x_t - (1 - a).sqrt() * eps_hat) / a.sqrt(), reference, rtol=1e-4, atol=1e-4)


def test_sdedit_target_calls_the_unet_once_per_distinct_timestep(prior, monkeypatch):
    """More SDEdit steps than timesteps below t: the rounded schedule 3, 3, 2, 2, 1, 1, 0 would
    repeat UNet calls (and a zero-length DDIM step); each timestep is visited once."""
    refiner, grid = prior
    p = RefinerPrior(refiner, "a cube", guidance_scale=1.0)
    cond = p.condition_latents(p.condition_posterior(grid), torch.Generator().manual_seed(2))
    target = refiner.unet.target
    noise = torch.randn(target.shape, generator=torch.Generator().manual_seed(1))
    seen = []
    real = p.predict_noise
    monkeypatch.setattr(p, "predict_noise", lambda x, t, c: seen.append(t) or real(x, t, c))
    p.sdedit_target(target, 3, noise, cond, steps=6)
    assert seen == [3, 2, 1]
    seen.clear()
    p.sdedit_target(target, 600, noise, cond, steps=3)
    assert seen == [600, 400, 200]


def test_a_state_is_refused_for_another_refiner_or_condition(prior, tmp_path):
    """The resume fingerprint covers the refiner (its UNet's or VAE's weights, here one parameter
    changed) and, for a condition function, its render of the canonical rig."""
    refiner, grid = prior
    opts = FAST.replace(rig_rotations=1)
    state = tmp_path / "state.pt"
    run = lambda cond: refine_texture(refiner, colored_cube(), cond, "a cube", 1, options=opts, seed=0,  # noqa: E731
                                      state_path=state)
    assert run(lambda cams: grid).resumed_from == 0
    assert run(lambda cams: grid).resumed_from == 1          # the same inputs resume (nothing left to do)
    with pytest.raises(InputError, match="coarse condition or refiner"):
        run(lambda cams: 1.0 - grid)
    for module in (refiner.unet, refiner.vae):
        param = next(module.parameters())
        with torch.no_grad():
            param.mul_(1.01)
        try:
            with pytest.raises(InputError, match="coarse condition or refiner"):
                run(lambda cams: grid)
        finally:
            with torch.no_grad():
                param.div_(1.01)
    assert run(lambda cams: grid).resumed_from == 1


def test_the_default_negative_prompt_is_the_refiners_null_prompt(prior, monkeypatch):
    """refine_texture and RefinerPrior take their default unconditional text from
    sharpit.refine.NULL_PROMPT (one place), not a literal of their own."""
    import sharpit.optimize.loop

    refiner, grid = prior
    p = RefinerPrior(refiner, "a cube", guidance_scale=3.0)
    torch.testing.assert_close(p.prompt_embeds, refiner.encode_prompt([NULL_PROMPT, "a cube"]).to(p.dtype))
    seen = []
    monkeypatch.setattr(sharpit.optimize.loop, "NULL_PROMPT", "blurry")
    monkeypatch.setattr(sharpit.optimize.loop, "RefinerPrior", lambda r, prompt, negative, scale: seen.append(negative))
    refine_texture(refiner, colored_cube(), grid, "a cube", 0)
    assert seen == ["blurry"]
