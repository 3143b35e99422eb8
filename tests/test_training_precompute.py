"""Precomputed latents for training: equivalence with on-the-fly encoding, model checks, interrupted runs."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import default_collate

from sharpit.coarse import save_latents
from sharpit.errors import CheckpointError, OutputExistsError
from sharpit.mesh_io import save_mesh
from sharpit.refine.conditioning import encode_condition_latents, encode_target_latents
from sharpit.testing.meshes import colored_cube, textured_cube, uv_sphere
from sharpit.testing.refine import save_tiny_zero123plus_repo
from sharpit.testing.shap_e import TINY_SHAP_E_LATENT_WIDTH, save_tiny_shap_e
from training import precompute_latents as precompute_module
from training.config import TrainConfig
from training.data import PairDataset
from training.latent_cache import MANIFEST, CachedPairDataset, batch_posteriors, encoder_fingerprint
from training.loss import (encode_batch, make_noise_scheduler, sample_batch, sharpit_loss, step_generator,
                           unconditional_branch)
from training.models import load_training_pipeline
from training.precompute_latents import load_frozen_encoders, main, precompute_latents
from training.prepare_pairs import prepare_pairs
from training.train_sharpit import train

TILE = 32


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """Three tiny pairs in two shards, and two tiny Zero123++ repos that differ only in their weights."""
    root = tmp_path_factory.mktemp("precompute")
    assets, latents = root / "assets", root / "latents"
    latents.mkdir(parents=True)
    gen = torch.Generator().manual_seed(0)
    for oid, mesh in (("ball", uv_sphere(8, 12)), ("cube", colored_cube()), ("tex", textured_cube())):
        save_mesh(mesh, assets / f"{oid}.glb")
        save_latents(latents / f"{oid}.safetensors", torch.randn(1, TINY_SHAP_E_LATENT_WIDTH, generator=gen))
    (root / "captions.csv").write_text("cube,a red cube\ntex,a checkered box\n")
    save_tiny_shap_e(root / "shap-e")
    save_tiny_zero123plus_repo(root / "zero123plus")
    save_tiny_zero123plus_repo(root / "other", seed=1)
    summary = prepare_pairs(assets, root / "captions.csv", latents, root / "pairs", str(root / "shap-e"),
                            tile_size=TILE, shap_e_grid_size=24, samples_per_shard=2)
    assert summary.written == 3
    return root


@pytest.fixture(scope="module")
def cache(workdir):
    summary = precompute_latents(workdir / "pairs", str(workdir / "zero123plus"), workdir / "cache", batch_size=2)
    assert (summary.written, summary.skipped) == (3, 0)
    return workdir / "cache"


def _config(workdir, out, **kw):
    base = dict(pretrained_model=str(workdir / "zero123plus"), train_data=str(workdir / "pairs"),
                output_dir=str(out), max_train_steps=4, train_batch_size=2, checkpointing_steps=2,
                validation_steps=1000, num_validation_samples=0, dataloader_num_workers=0, learning_rate=1e-3,
                lr_warmup_steps=1, cfg_drop=0.5, seed=3, report_to="none")
    base.update(kw)
    return TrainConfig(**base).validate()


def _train_losses(config):
    losses = []
    path = train(config, step_callback=lambda step, logs: losses.append(logs["loss"]))
    return path, losses


def test_encode_batch_gives_the_pipeline_encoders_latents(workdir):
    pipe = load_training_pipeline(str(workdir / "zero123plus"), "zero123plus", "concat")
    items = [PairDataset(workdir / "pairs")[i] for i in range(2)]
    target, coarse = torch.stack([it["target"] for it in items]), torch.stack([it["coarse"] for it in items])
    encoded = encode_batch(pipe.vae, pipe.tokenizer, pipe.text_encoder, target, coarse, ["a", "b"],
                           step_generator(1, 2))
    gen = step_generator(1, 2)
    with torch.no_grad():
        assert torch.equal(encoded.latents, encode_target_latents(pipe.vae, target, gen))
        assert torch.equal(encoded.condition, encode_condition_latents(pipe.vae, coarse, gen))
    # the condition_latent_space setting: both sides map the condition's sample the same way
    scaled = encode_batch(pipe.vae, pipe.tokenizer, pipe.text_encoder, target, coarse, ["a", "b"],
                          step_generator(1, 2), "scaled")
    gen = step_generator(1, 2)
    with torch.no_grad():
        encode_target_latents(pipe.vae, target, gen)
        assert torch.equal(scaled.condition, encode_condition_latents(pipe.vae, coarse, gen, space="scaled"))


def test_cached_step_equals_the_on_the_fly_step(workdir, cache):
    pipe = load_training_pipeline(str(workdir / "zero123plus"), "zero123plus", "concat")
    dataset = PairDataset(workdir / "pairs")
    cached = CachedPairDataset(cache, dataset, encoder_fingerprint(pipe.vae, pipe.text_encoder, pipe.tokenizer),
                               str(workdir / "zero123plus"))
    assert [cached[i]["object_id"] for i in range(3)] == [e.object_id for e in dataset.entries]
    items = [dataset[i] for i in range(3)]
    null = unconditional_branch(pipe, items[0]["target"].shape[-2:])
    scheduler = make_noise_scheduler()
    with torch.no_grad():
        gen = step_generator(5, 0)
        live = encode_batch(pipe.vae, pipe.tokenizer, pipe.text_encoder, torch.stack([it["target"] for it in items]),
                            torch.stack([it["coarse"] for it in items]), [it["caption"] for it in items], gen)
        live_out = sharpit_loss(pipe.unet, scheduler, live, null, "concat", 0.5, gen)
        gen = step_generator(5, 0)
        stored = sample_batch(batch_posteriors(default_collate([cached[i] for i in range(3)]), torch.device("cpu")),
                              pipe.vae.config.scaling_factor, gen)
        stored_out = sharpit_loss(pipe.unet, scheduler, stored, null, "concat", 0.5, gen)
    for a, b in ((live.latents, stored.latents), (live.condition, stored.condition),
                 (live.prompt_embeds, stored.prompt_embeds)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert torch.equal(live_out["dropped"], stored_out["dropped"]) and bool(live_out["dropped"].any())
    torch.testing.assert_close(live_out["loss"], stored_out["loss"], rtol=1e-5, atol=1e-6)

    # whole runs: the same losses step by step, and a killed cached run resumes bit-identically
    _, live_losses = _train_losses(_config(workdir, workdir / "live"))
    path, cached_losses = _train_losses(_config(workdir, workdir / "cached", precomputed_latents=str(cache)))
    assert len(cached_losses) == 4
    torch.testing.assert_close(torch.tensor(cached_losses), torch.tensor(live_losses), rtol=1e-4, atol=1e-6)

    def kill_at_3(step, logs):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(_config(workdir, workdir / "killed", precomputed_latents=str(cache)), step_callback=kill_at_3)
    resumed = train(_config(workdir, workdir / "killed", precomputed_latents=str(cache),
                            resume_from_checkpoint="latest"))
    a = load_file(str(path / "unet" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(resumed / "unet" / "diffusion_pytorch_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_cache_of_another_model_is_refused(workdir, cache, tmp_path, capsys):
    with pytest.raises(CheckpointError, match="another vae and text_encoder"):
        train(_config(workdir, tmp_path / "run", pretrained_model=str(workdir / "other"),
                      precomputed_latents=str(cache)))
    with pytest.raises(OutputExistsError, match="--overwrite"):
        precompute_latents(workdir / "pairs", str(workdir / "other"), cache)
    code = main(["--pairs", str(workdir / "pairs"), "--pretrained", str(workdir / "other"), "--output", str(cache)])
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]  # not the load bars
    assert code == 2 and len(errors) == 1 and errors[0].startswith("precompute_latents: error:")


def test_an_interrupted_cache_is_refused_then_finished(workdir, tmp_path, monkeypatch):
    out = tmp_path / "cache"
    real, calls = precompute_module.encode_posteriors, []

    def interrupted(*args):
        calls.append(1)
        if len(calls) == 2:  # the second shard
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(precompute_module, "encode_posteriors", interrupted)
    with pytest.raises(KeyboardInterrupt):
        precompute_latents(workdir / "pairs", str(workdir / "zero123plus"), out, batch_size=2)
    assert not (out / MANIFEST).exists()
    assert [p.name for p in out.iterdir()] == ["latents-pairs-r000-000000.safetensors"]  # no half-written file
    with pytest.raises(CheckpointError, match="unfinished latent cache"):
        train(_config(workdir, tmp_path / "run", precomputed_latents=str(out)))
    monkeypatch.undo()
    summary = precompute_latents(workdir / "pairs", str(workdir / "zero123plus"), out, batch_size=2)
    assert (summary.written, summary.skipped) == (1, 2)
    models = load_frozen_encoders(str(workdir / "zero123plus"))
    assert len(CachedPairDataset(out, PairDataset(workdir / "pairs"), encoder_fingerprint(*models), "m")) == 3
