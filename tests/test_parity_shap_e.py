"""Shap-E sampling equals the official ``openai/shap-e`` sampler on identical tiny weights.

The fixture (``tests/fixtures/parity/shap_e.safetensors``) holds the official code's outputs,
made by ``scripts/parity/shap_e_prior.py``: the official prior (``CLIPImagePointDiffusionTransformer``
in ``SplitVectorDiffusion``) with random weights, renamed to diffusers' ``PriorTransformer``,
sampled by ``shap_e.diffusion.sample.sample_latents`` (Karras/Heun, 1e-3 .. 160, clip_denoised).
"""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from sharpit.coarse import ShapEDiffusionClock, ShapEGenerator, karras_sigmas
from sharpit.errors import ConfigError
from sharpit.testing.shap_e import tiny_shap_e_components
from sharpit.testing.tokenizers import tiny_clip_tokenizer

FIXTURE = Path(__file__).parent / "fixtures" / "parity" / "shap_e.safetensors"


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def golden():
    with safe_open(str(FIXTURE), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return meta, tensors


@pytest.fixture(scope="module")
def gen(golden, tmp_path_factory):
    from diffusers import PriorTransformer

    meta, tensors = golden
    prior = PriorTransformer(**json.loads(meta["prior_config"]))
    weights = {k[len("prior."):]: v for k, v in tensors.items() if k.startswith("prior.")}
    prior.load_state_dict(weights, strict=True)          # every converted name, no more, no fewer
    parts = tiny_shap_e_components()
    tokenizer = tiny_clip_tokenizer(tmp_path_factory.mktemp("tok"))
    g = ShapEGenerator(prior.eval(), parts["text_encoder"], tokenizer, parts["scheduler"], parts["shap_e_renderer"])
    g.set_progress_bar_config(disable=True)
    return g


@pytest.mark.parametrize("key", ["latents_8_g15", "latents_64_g15", "latents_8_g1"])
def test_latents_match_official(gen, golden, key):
    meta, tensors = golden
    steps, guidance = json.loads(meta["runs"])[key]
    ours = gen.sample_from_embeddings(tensors["embeds"], guidance_scale=guidance, num_inference_steps=steps,
                                      seed=int(meta["seed"]))
    assert ours.shape == tensors[key].shape
    assert _rel(ours, tensors[key]) <= 1e-4


def test_fixture_tells_diffusers_heun_apart(gen, golden):
    """The fixture is sensitive to what sharpit fixed: diffusers' Heun scheduler (guided result
    clamped, fractional log-sigma timesteps) on the same prior misses the official latents by far."""
    from diffusers import HeunDiscreteScheduler
    from sharpit.testing.shap_e import SCHEDULER_CONFIG

    meta, tensors = golden
    sched = HeunDiscreteScheduler(**SCHEDULER_CONFIG)
    sched.register_to_config(sigma_min=1e-3, sigma_max=160.0)      # what sharpit did before
    sched.set_timesteps(8)
    cond = tensors["embeds"]
    rows = torch.cat([cond, torch.zeros_like(cond)])
    x = torch.randn(2, 32, 16, generator=torch.Generator().manual_seed(int(meta["seed"]))) * sched.init_noise_sigma
    with torch.no_grad():
        for t in sched.timesteps:
            pred = gen.prior(sched.scale_model_input(torch.cat([x, x]), t), timestep=t,
                             proj_embedding=rows).predicted_image_embedding[..., :16]
            c, u = pred.chunk(2)
            x = sched.step(u + 15.0 * (c - u), t, x).prev_sample
    assert _rel(x.reshape(2, -1), tensors["latents_8_g15"]) > 1e-2


def test_integer_timesteps_match_official(golden):
    _, tensors = golden
    sigmas = karras_sigmas(64)
    assert torch.allclose(sigmas[:-1], tensors["sigmas_64"], rtol=0, atol=0)
    assert sigmas[-1] == 0
    clock = ShapEDiffusionClock(1024)
    assert torch.equal(clock.timesteps(sigmas[:-1]), tensors["timesteps_64"])


def test_clock_needs_the_exp_schedule():
    with pytest.raises(ConfigError, match="'exp'"):
        ShapEDiffusionClock.from_scheduler_config({"beta_schedule": "linear", "num_train_timesteps": 1000})
