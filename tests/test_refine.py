"""SharpItRefinePipeline end to end on tiny random components saved in the real layout."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from sharpit.errors import ConfigError, InputError
from sharpit.refine import (SharpItRefinePipeline, decode_latents, drop_conditions, encode_condition_latents, encode_prompt,
                            encode_target_latents, init_unet_from_zero123plus, null_condition_latents, scale_image,
                            scale_latents, unscale_image, unscale_latents)
from sharpit.refine.reference_attention import (ReferenceAttnProcessor, disable_reference_attention,
                                                enable_reference_attention, reference_unet_forward)
from sharpit.testing.refine import TINY_TEXT_DIM, save_tiny_sharpit_pipeline, tiny_unet, tiny_vae


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(2)


@pytest.fixture(scope="module")
def saved_dirs(tmp_path_factory):
    return {m: save_tiny_sharpit_pipeline(tmp_path_factory.mktemp(m), m) for m in ("concat", "reference")}


@pytest.fixture(scope="module")
def concat_pipe(tmp_path_factory):
    pipe = SharpItRefinePipeline.from_pretrained(save_tiny_sharpit_pipeline(tmp_path_factory.mktemp("c"), "concat"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _grid(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(3, 960, 640, generator=g)


def _count_unet_calls(pipe, monkeypatch):
    calls = []
    forward = pipe.unet.forward

    def counting(sample, *args, **kwargs):
        calls.append((tuple(sample.shape), kwargs.get("encoder_hidden_states")))
        return forward(sample, *args, **kwargs)

    monkeypatch.setattr(pipe.unet, "forward", counting)
    return calls


# ---------------------------------------------------------------- scalings
def test_scalings_invert_each_other_and_match_spec():
    x = torch.linspace(-1, 1, 101)
    assert torch.allclose(unscale_image(scale_image(x)), x, atol=1e-6)
    assert torch.allclose(scale_image(torch.tensor(1.0)), torch.tensor(0.625))
    z = torch.randn(2, 4, 8, 8)
    assert torch.allclose(unscale_latents(scale_latents(z)), z, atol=1e-6)
    assert torch.allclose(scale_latents(torch.tensor(0.22)), torch.tensor(0.0))
    assert torch.allclose(scale_latents(torch.tensor(1.22)), torch.tensor(0.75))


def test_target_latents_round_trip_through_decode():
    vae = tiny_vae()
    pixels = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        z = encode_target_latents(vae, pixels, torch.Generator().manual_seed(0))
        z_raw = vae.encode(pixels * 1.25 - 0.625).latent_dist.sample(torch.Generator().manual_seed(0))
        out = decode_latents(vae, z)
        ref = ((unscale_image(vae.decode(unscale_latents(z) / 0.18215).sample) + 1) / 2).clamp(0, 1)
    assert z.shape == (1, 4, 8, 8)
    assert torch.allclose(z, (z_raw * 0.18215 - 0.22) * 0.75, atol=1e-6)  # SPEC section 3, written out
    assert torch.allclose(out, ref, atol=1e-6)


# ---------------------------------------------------------------- end to end
@pytest.mark.parametrize("mode", ["concat", "reference"])
def test_both_modes_end_to_end_from_pretrained(saved_dirs, mode):
    path = saved_dirs[mode]
    assert (path / "model_index.json").is_file() and (path / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    pipe = SharpItRefinePipeline.from_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.conditioning_mode == mode
    out = pipe(Image.new("RGB", (640, 960), (200, 120, 40)), "a red chair", num_inference_steps=2, seed=0)
    assert len(out.images) == 1 and out.images[0].size == (640, 960)
    assert len(out.views[0]) == 6 and all(v.size == (320, 320) for v in out.views[0])
    # the views are the grid's tiles, row-major
    assert np.array_equal(np.asarray(out.views[0][3]), np.asarray(out.images[0])[320:640, 320:640])


def test_save_pretrained_round_trip_keeps_mode_and_output(concat_pipe, tmp_path):
    concat_pipe.save_pretrained(tmp_path / "again")
    again = SharpItRefinePipeline.from_pretrained(tmp_path / "again")
    again.set_progress_bar_config(disable=True)
    assert again.config.conditioning_mode is None and again.conditioning_mode == "concat"
    assert again.scheduler.config.timestep_spacing == "trailing"
    assert again.scheduler.config.prediction_type == "v_prediction"
    a = concat_pipe(_grid(), "x", num_inference_steps=1, seed=3, output_type="latent").images
    b = again(_grid(), "x", num_inference_steps=1, seed=3, output_type="latent").images
    assert torch.equal(a, b)


def test_same_seed_reproduces_and_other_seed_differs(concat_pipe):
    kw = dict(prompt="a boat", num_inference_steps=1, output_type="latent")
    a = concat_pipe(_grid(), seed=7, **kw)
    b = concat_pipe(_grid(), generator=torch.Generator().manual_seed(7), **kw)
    c = concat_pipe(_grid(), seed=8, **kw)
    assert a.images.shape == (1, 4, 120, 80) and a.views.shape == (1, 6, 4, 40, 40)
    assert torch.equal(a.images, b.images)
    assert not torch.allclose(a.images, c.images)


def test_progress_bar_is_labelled_unless_the_user_labels_it(concat_pipe):
    import io

    kw = dict(prompt="a boat", num_inference_steps=1, output_type="latent", seed=0)
    try:
        for config, label in (({}, "Sharp-It refiner"), ({"desc": "mine"}, "mine")):
            out = io.StringIO()
            concat_pipe.set_progress_bar_config(file=out, **config)
            concat_pipe(_grid(), **kw)
            assert f"{label}: 100%" in out.getvalue(), out.getvalue()
    finally:
        concat_pipe.set_progress_bar_config(disable=True)


def test_cfg_is_one_batched_unet_call_per_step(concat_pipe, monkeypatch):
    calls = _count_unet_calls(concat_pipe, monkeypatch)
    concat_pipe(_grid(), "p", num_inference_steps=2, guidance_scale=1.0, output_type="latent", seed=0)
    assert [c[0] for c in calls] == [(1, 8, 120, 80)] * 2
    calls.clear()
    concat_pipe(_grid(), "p", num_inference_steps=2, guidance_scale=4.0, output_type="latent", seed=0)
    assert [c[0] for c in calls] == [(2, 8, 120, 80)] * 2


def test_unconditional_branch_is_empty_prompt_and_null_condition(concat_pipe, monkeypatch):
    """The pipeline's CFG batch equals what training's drop_conditions feeds for dropped samples."""
    seen = []
    forward = concat_pipe.unet.forward

    def spy(sample, t, encoder_hidden_states=None, **kw):
        seen.append((sample.clone(), encoder_hidden_states.clone()))
        return forward(sample, t, encoder_hidden_states=encoder_hidden_states, **kw)

    monkeypatch.setattr(concat_pipe.unet, "forward", spy)
    concat_pipe(_grid(), "a lamp", negative_prompt=None, num_inference_steps=1, output_type="latent", seed=0)
    sample, embeds = seen[0]
    with torch.no_grad():
        null = encode_prompt(concat_pipe.tokenizer, concat_pipe.text_encoder, "")
        cond_embeds = encode_prompt(concat_pipe.tokenizer, concat_pipe.text_encoder, "a lamp")
    gen = torch.Generator().manual_seed(0)
    cond_lat = encode_condition_latents(concat_pipe.vae, _grid()[None], gen)
    null_lat = null_condition_latents(concat_pipe.null_condition_posterior((120, 80)), 1, gen)
    assert torch.equal(sample[1:, 4:], cond_lat) and torch.equal(sample[:1, 4:], null_lat)
    dropped = drop_conditions(cond_embeds, cond_lat, null, null_lat, torch.tensor([True]))
    assert torch.equal(embeds[:1], dropped[0]) and torch.equal(sample[:1, 4:], dropped[1])
    assert torch.equal(embeds[1:], cond_embeds)


def test_null_condition_defaults_by_mode_and_is_a_saved_setting(concat_pipe, tmp_path):
    # concat (Sharp-It): black, InstantMesh's fine-tune null; reference (stock Zero123++): grey
    assert concat_pipe.config.null_condition == "black" and concat_pipe.config.condition_latent_space == "raw"
    reference = SharpItRefinePipeline(**dict(concat_pipe.components, unet=tiny_unet(4)))
    assert reference.config.null_condition == "grey"
    grey = SharpItRefinePipeline(**concat_pipe.components, null_condition="grey", condition_latent_space="scaled")
    grey.save_pretrained(tmp_path / "grey")
    index = json.loads((tmp_path / "grey" / "model_index.json").read_text())
    assert index["null_condition"] == "grey" and index["condition_latent_space"] == "scaled"
    again = SharpItRefinePipeline.from_pretrained(tmp_path / "grey")
    assert again.config.null_condition == "grey" and again.config.condition_latent_space == "scaled"
    assert SharpItRefinePipeline.from_pretrained(tmp_path / "grey", null_condition="black").config.null_condition == "black"
    with pytest.raises(ConfigError, match="null_condition must be one of"):
        SharpItRefinePipeline(**concat_pipe.components, null_condition="zeros")
    with pytest.raises(ConfigError, match="condition_latent_space must be one of"):
        SharpItRefinePipeline(**concat_pipe.components, condition_latent_space="vae")
    with pytest.raises(ConfigError, match="concat mode"):
        SharpItRefinePipeline(**dict(concat_pipe.components, unet=tiny_unet(4)), condition_latent_space="scaled")


def test_pipelines_saved_without_the_settings_load_with_a_warning(concat_pipe, tmp_path):
    concat_pipe.save_pretrained(tmp_path / "old")
    index_path = tmp_path / "old" / "model_index.json"
    index = json.loads(index_path.read_text())
    for key in ("null_condition", "condition_latent_space", "vision_encoder", "feature_extractor_clip",
                "feature_extractor_vae", "ramping_coefficients"):
        del index[key]
    index_path.write_text(json.dumps(index))
    with pytest.warns(UserWarning, match="saved without the setting.*null_condition='black'"):
        old = SharpItRefinePipeline.from_pretrained(tmp_path / "old")
    assert old.config.null_condition == "black" and old.vision_encoder is None


def test_condition_latent_space_and_null_condition_apply_to_the_cfg_batch(concat_pipe):
    pipe = SharpItRefinePipeline(**concat_pipe.components, null_condition="grey", condition_latent_space="scaled")
    pixels = _grid()[None]
    got = pipe.prepare_condition_latents(pixels, torch.Generator().manual_seed(3), guidance=True)
    gen = torch.Generator().manual_seed(3)
    sf = pipe.vae.config.scaling_factor
    with torch.no_grad():
        cond = pipe.vae.encode(scale_image(pixels * 2 - 1)).latent_dist.sample(gen)
        null = pipe.vae.encode(torch.zeros_like(pixels)).latent_dist.sample(gen)  # grey: VAE input 0
    assert torch.equal(got, torch.cat([scale_latents(null * sf), scale_latents(cond * sf)]))


def test_null_condition_is_encoded_once_per_size_and_device(concat_pipe, monkeypatch):
    pipe = SharpItRefinePipeline(**concat_pipe.components)
    pipe.set_progress_bar_config(disable=True)
    calls = []
    encode = pipe.vae.encode
    monkeypatch.setattr(pipe.vae, "encode", lambda x, *a, **k: calls.append(tuple(x.shape)) or encode(x, *a, **k))
    for seed in (0, 1):
        pipe(_grid(), "p", num_inference_steps=1, guidance_scale=3.0, output_type="latent", seed=seed)
    assert calls == [(1, 3, 960, 640)] * 3  # two conditions, one null grid
    assert pipe.null_condition_posterior((120, 80)) is pipe.null_condition_posterior((120, 80))


def test_strength_runs_sdedit_steps_and_callback(concat_pipe):
    steps = []

    def cb(pipe, i, t, tensors):
        steps.append(float(t))
        return {"latents": tensors["latents"]}

    concat_pipe(_grid(), "p", num_inference_steps=6, strength=0.34, guidance_scale=1.0, output_type="latent",
                seed=0, callback_on_step_end=cb)
    assert len(steps) == 2 and steps == sorted(steps, reverse=True) and steps[0] < 999


def test_renderer_result_and_tensor_batch_are_accepted(concat_pipe):
    class FakeRender:  # duck-typed sharpit.render.MultiViewRender
        def grid(self):
            return _grid(1)

    out = concat_pipe(FakeRender(), "p", num_inference_steps=1, guidance_scale=1.0, output_type="np", seed=0)
    assert out.images.shape == (1, 960, 640, 3) and out.views.shape == (1, 6, 320, 320, 3)
    assert 0.0 <= out.images.min() and out.images.max() <= 1.0


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_inference_steps=0), "num_inference_steps"),
    (dict(strength=0.0), "strength"),
    (dict(strength=1.5), "strength"),
    (dict(num_inference_steps=2, strength=0.2), "no denoising step"),
    (dict(output_type="jpg"), "output_type"),
    (dict(prompt=["a", "b"]), "2 prompts for 1"),
])
def test_bad_arguments_raise_input_error(concat_pipe, kwargs, match):
    with pytest.raises(InputError, match=match):
        concat_pipe(_grid(), **kwargs)


def test_bad_grids_raise_or_resize(concat_pipe):
    with pytest.raises(InputError, match="3:2"):
        concat_pipe(torch.rand(3, 640, 640), "p")
    with pytest.raises(InputError, match="channels"):
        concat_pipe(torch.rand(2, 960, 640), "p")
    bad = _grid()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        concat_pipe(bad, "p")
    from sharpit.refine import coerce_condition

    with pytest.warns(UserWarning, match="resizing"):
        assert coerce_condition(Image.new("RGBA", (64, 96))).shape == (1, 3, 960, 640)


def test_conditioning_mode_override_is_checked_and_saved(concat_pipe, tmp_path):
    SharpItRefinePipeline(**concat_pipe.components, conditioning_mode="concat").save_pretrained(tmp_path)
    assert SharpItRefinePipeline.from_pretrained(tmp_path).config.conditioning_mode == "concat"
    with pytest.raises(ConfigError, match="4 input channels"):
        SharpItRefinePipeline(**concat_pipe.components, conditioning_mode="reference")
    with pytest.raises(ConfigError, match="conditioning_mode must be"):
        SharpItRefinePipeline(**concat_pipe.components, conditioning_mode="sideways")


# ---------------------------------------------------------------- UNet initialisation
def test_init_unet_from_zero123plus_keeps_output_for_any_condition(tmp_path):
    base = tiny_unet(4, seed=1)
    wide = init_unet_from_zero123plus(tiny_unet(4, seed=1))
    assert wide.config.in_channels == 8 and wide.conv_in.weight.shape[1] == 8
    x, e = torch.randn(2, 4, 16, 16), torch.randn(2, 77, TINY_TEXT_DIM)
    with torch.no_grad():
        ref = base(x, 10, encoder_hidden_states=e).sample
        for cond in (torch.zeros(2, 4, 16, 16), 5 * torch.randn(2, 4, 16, 16)):
            assert torch.allclose(wide(torch.cat([x, cond], 1), 10, encoder_hidden_states=e).sample, ref, atol=1e-5)
    wide.save_pretrained(tmp_path / "u")
    from diffusers import UNet2DConditionModel

    assert UNet2DConditionModel.from_pretrained(tmp_path / "u").conv_in.weight.shape[1] == 8
    with pytest.raises(ConfigError, match="already be widened"):
        init_unet_from_zero123plus(wide)


# ---------------------------------------------------------------- reference attention
def test_reference_attention_hooks_attn1_only_and_uses_the_reference():
    unet = tiny_unet(4, seed=2)
    bank = enable_reference_attention(unet)
    procs = unet.attn_processors
    hooked = [n for n, p in procs.items() if isinstance(p, ReferenceAttnProcessor)]
    assert hooked and all(n.endswith("attn1.processor") for n in hooked)
    assert not any(isinstance(p, ReferenceAttnProcessor) for n, p in procs.items() if "attn2" in n)
    assert enable_reference_attention(unet) is bank  # idempotent
    x, e = torch.randn(1, 4, 16, 16), torch.randn(1, 77, TINY_TEXT_DIM)
    with torch.no_grad():
        plain = unet(x, 10, encoder_hidden_states=e).sample  # mode "off": plain self-attention
        r1 = reference_unet_forward(unet, bank, x, 10, e, torch.randn(1, 4, 16, 16))
        r2 = reference_unet_forward(unet, bank, x, 10, e, torch.randn(1, 4, 16, 16))
        self_ref = reference_unet_forward(unet, bank, x, 10, e, x)
    assert not bank.states and bank.mode == "off"
    assert not torch.allclose(r1, r2) and not torch.allclose(r1, plain)
    # attending to an exact copy of one's own tokens duplicates every key: softmax is unchanged
    assert torch.allclose(self_ref, plain, atol=1e-5)
    disable_reference_attention(unet)
    assert not any(isinstance(p, ReferenceAttnProcessor) for p in unet.attn_processors.values())


def test_reference_mode_makes_two_unet_passes_per_step(saved_dirs, monkeypatch):
    pipe = SharpItRefinePipeline.from_pretrained(saved_dirs["reference"])
    pipe.set_progress_bar_config(disable=True)
    calls = _count_unet_calls(pipe, monkeypatch)
    pipe(_grid(), "p", num_inference_steps=1, guidance_scale=3.0, output_type="latent", seed=0)
    assert [c[0] for c in calls] == [(2, 4, 120, 80)] * 2
