"""Stock Zero123++ in sharpit equals the official Zero123++ pipeline on identical tiny weights.

The fixtures (``tests/fixtures/parity/zero123plus_*.safetensors``) hold a tiny repository in the
``sudo-ai/zero123plus-v1.2`` layout and what the official code made of it, written by
``scripts/parity/zero123plus.py``: ``Zero123PlusPipeline`` (``diffusers-support/pipeline.py``,
EulerAncestral "trailing") on one RGBA condition image with and without CFG, and InstantMesh's
``MVDiffusion.encode_condition_image(torch.zeros_like(cond_imgs))`` (``zero123plus/model.py``). The
official global-RNG draws were routed through the run's generator in the official order, which is
the order ``SharpItRefinePipeline`` draws in, so one seed gives both sides the same noise.
"""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from sharpit.refine import (SharpItRefinePipeline, null_condition_latents, null_condition_posterior, scale_latents,
                            unscale_latents)

FIXTURES = Path(__file__).parent / "fixtures" / "parity"
TOLERANCE = 1e-4  # relative L2


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


@pytest.fixture(scope="module")
def golden():
    with safe_open(str(FIXTURES / "zero123plus_outputs.safetensors"), framework="pt") as f:
        return json.loads(f.metadata()["settings"]), {k: f.get_tensor(k) for k in f.keys()}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """The fixture's tiny Zero123++ repository written back to disk, file for file."""
    root = tmp_path_factory.mktemp("zero123plus-v1.2")
    weights = {}
    with safe_open(str(FIXTURES / "zero123plus_repo.safetensors"), framework="pt") as f:
        files = json.loads(f.metadata()["files"])
        for key in f.keys():
            rel, name = key.split("|", 1)
            weights.setdefault(rel, {})[name] = f.get_tensor(key).float()
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    for rel, tensors in weights.items():
        save_file(tensors, str(root / rel), metadata={"format": "pt"})
    return root


@pytest.fixture(scope="module")
def pipe(repo):
    pipe = SharpItRefinePipeline.from_zero123plus(repo, unet=None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("run", ["cfg", "no_cfg"])
def test_stock_zero123plus_matches_the_official_pipeline(pipe, golden, run):
    settings, tensors = golden
    config = settings["runs"][run]
    assert pipe.conditioning_mode == "reference" and pipe.config.null_condition == "grey"
    seen = []
    hook = pipe.unet.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["encoder_hidden_states"].clone()), with_kwargs=True)
    try:
        out = pipe(Image.fromarray(tensors["condition_image"].numpy(), "RGBA"), prompt=config["prompt"],
                   guidance_scale=config["guidance_scale"], num_inference_steps=settings["steps"],
                   generator=torch.Generator().manual_seed(config["seed"]), output_type="latent")
    finally:
        hook.remove()
    # the prompt rows the UNet sees: [negative, prompt + ramped CLIP image embedding] (CFG) or the latter alone
    assert _rel(seen[0], tensors[f"{run}.prompt_embeds"]) <= TOLERANCE
    # the official pipeline returns unscale_latents(z) for output_type="latent"
    assert _rel(unscale_latents(out.images), tensors[f"{run}.latents"]) <= TOLERANCE


def test_black_null_condition_is_instantmesh_training_null(pipe, golden):
    """InstantMesh's dropped samples get encode_condition_image(torch.zeros_like(cond_imgs)): a black
    image through feature_extractor_vae (512x512 -> a 64x64 latent), one posterior sample."""
    settings, tensors = golden
    posterior = null_condition_posterior(pipe.vae, "black", (64, 64))
    ours = null_condition_latents(posterior, 1, torch.Generator().manual_seed(settings["instantmesh_seed"]))
    assert _rel(ours, tensors["instantmesh.null_latents"]) <= TOLERANCE


def test_null_conditions_are_the_official_formulas(pipe):
    """grey: Zero123PlusPipeline.__call__ encodes torch.zeros_like(image) of the NORMALISED image
    (pixel 0.5); black: MVDiffusion.encode_condition_image runs feature_extractor_vae on a black image
    (pixel 0 -> -0.625). Both are a posterior sample; "scaled" maps it like a target latent."""
    vae = pipe.vae
    black = pipe.feature_extractor_vae(images=Image.new("RGB", (40, 40)), return_tensors="pt").pixel_values
    assert black.shape == (1, 3, 512, 512) and bool((black == -0.625).all())
    official = {"black": black, "grey": torch.zeros(1, 3, 512, 512)}
    for name, image in official.items():
        with torch.no_grad():
            expected = vae.encode(image).latent_dist.sample(torch.Generator().manual_seed(5))
        posterior = null_condition_posterior(vae, name, (64, 64))
        assert torch.equal(null_condition_latents(posterior, 1, torch.Generator().manual_seed(5)), expected)
        scaled = null_condition_latents(posterior, 1, torch.Generator().manual_seed(5), "scaled",
                                        vae.config.scaling_factor)
        assert torch.equal(scaled, scale_latents(expected * vae.config.scaling_factor))
    # a batch draws one sample per row, as encode(zeros_like(batch)) does
    two = null_condition_latents(null_condition_posterior(vae, "grey", (8, 8)), 2, torch.Generator().manual_seed(0))
    assert two.shape == (2, 4, 8, 8) and not torch.equal(two[0], two[1])
