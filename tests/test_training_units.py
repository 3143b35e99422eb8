"""Training pieces on their own: config files, bad input, data order, the CFG-drop branch."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from sharpit.errors import CheckpointError, ConfigError, InputError
from training.config import TrainConfig, load_config_file, parse_config
from training.data import EpochBatchSampler, PairDataset
from training.loss import EncodedBatch, make_noise_scheduler, sharpit_loss, step_generator, unconditional_branch
from training.shards import ShardWriter
from training.train_sharpit import main as train_main
from training.train_sharpit import make_optimizer

CONFIGS = ("training/configs/single_gpu_48gb.yaml", "training/configs/multi_gpu.yaml")


@pytest.mark.parametrize("path", CONFIGS)
def test_shipped_configs_load(path):
    config = parse_config(["--config", path, "--train_data", "pairs"])
    assert config.tile_size in (None, 320)
    assert config.cfg_drop == 0.1 and config.train_batch_size == 3


def test_single_gpu_config_is_the_paper_setting():
    values = load_config_file(CONFIGS[0])
    assert values["train_batch_size"] == 3 and values["gradient_checkpointing"] is True


def test_flags_override_the_file(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"learning_rate": 0.5, "train_data": "a"}')
    config = parse_config(["--config", str(path), "--learning_rate", "0.25", "--no-use_ema"])
    assert config.learning_rate == 0.25 and config.train_data == "a" and config.use_ema is False


def test_unknown_config_key_names_close_matches(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("learning_rat: 1.0e-5\n")
    with pytest.raises(ConfigError, match=r"'learning_rat'.*'learning_rate'"):
        load_config_file(path)


def test_config_value_of_wrong_type(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train_batch_size: three\n")
    with pytest.raises(ConfigError, match="train_batch_size must be int"):
        load_config_file(path)


def test_cli_exits_with_one_line_reason(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("cfg_dropp: 0.1\n")
    assert train_main(["--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cfg_drop" in err


def test_invalid_values_are_config_errors():
    with pytest.raises(ConfigError, match="cfg_drop"):
        TrainConfig(train_data="x", cfg_drop=1.5).validate()
    with pytest.raises(ConfigError, match="train_data is required"):
        TrainConfig().validate()
    with pytest.raises(ConfigError, match="null_condition must be one of"):
        TrainConfig(train_data="x", null_condition="zeros").validate()
    with pytest.raises(ConfigError, match="condition_latent_space must be one of"):
        TrainConfig(train_data="x", condition_latent_space="vae").validate()
    with pytest.raises(ConfigError, match="scaled is for conditioning_mode: concat"):
        TrainConfig(train_data="x", conditioning_mode="reference", condition_latent_space="scaled").validate()


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is not None, reason="bitsandbytes is installed")
def test_8bit_adam_without_bitsandbytes_is_a_clear_error():
    config = TrainConfig(train_data="x", use_8bit_adam=True)
    with pytest.raises(ConfigError, match="bitsandbytes"):
        make_optimizer(config, [torch.nn.Parameter(torch.zeros(2))])


def _write(root, tiles, rank=0):
    writer = ShardWriter(root, rank=rank, samples_per_shard=10)
    for i, tile in enumerate(tiles):
        grid = torch.full((3, 3 * tile, 2 * tile), i / 10)
        writer.add(f"obj{rank}-{i}", f"caption {i}", grid, grid, tile)
    writer.close()


def test_empty_dataset_is_an_error(tmp_path):
    (tmp_path / "pairs").mkdir()
    with pytest.raises(InputError, match="empty"):
        PairDataset(tmp_path / "pairs")


def test_mismatched_grid_sizes_name_the_sample(tmp_path):
    _write(tmp_path, [16, 16])
    _write(tmp_path, [24], rank=1)
    with pytest.raises(InputError, match=r"mismatched grid sizes: sample 'obj1-0'"):
        PairDataset(tmp_path)


def test_dataset_tile_size_must_match_config(tmp_path):
    _write(tmp_path, [16])
    with pytest.raises(ConfigError, match="tile_size=32"):
        PairDataset(tmp_path, tile_size=32)


def test_writer_rejects_a_grid_of_the_wrong_size(tmp_path):
    writer = ShardWriter(tmp_path)
    with pytest.raises(InputError, match="coarse grid of 'a'"):
        writer.add("a", "", torch.zeros(3, 48, 32), torch.zeros(3, 48, 48), 16)


def test_dataset_roundtrip(tmp_path):
    _write(tmp_path, [16, 16, 16])
    dataset = PairDataset(tmp_path)
    item = dataset[2]
    assert item["object_id"] == "obj0-2" and item["caption"] == "caption 2"
    assert item["target"].shape == (3, 48, 32)
    assert torch.allclose(item["target"], torch.full_like(item["target"], 0.2), atol=1 / 255)


def test_batch_order_is_a_function_of_seed_and_position():
    full = EpochBatchSampler(10, 2, seed=3)
    first = [b for _, b in zip(range(12), iter(full))]
    resumed = [b for _, b in zip(range(5), iter(EpochBatchSampler(10, 2, seed=3, start=7)))]
    assert resumed == first[7:12]
    assert sorted(sum(first[:5], [])) == list(range(10))  # one epoch visits every sample once
    assert first[:5] != first[5:10]  # a new order each epoch
    ranks = [list(zip(range(2), iter(EpochBatchSampler(10, 2, 3, num_processes=2, process_index=r))))
             for r in range(2)]
    assert not set(ranks[0][0][1]) & set(ranks[1][0][1])  # processes see disjoint samples
    with pytest.raises(InputError, match="fewer than one global batch"):
        EpochBatchSampler(3, 2, 0, num_processes=2)


def test_cfg_drop_feeds_the_pipelines_unconditional_branch():
    """Dropped training samples get what the pipeline's CFG branch gets: the "" prompt and a fresh
    sample of the same cached null-condition posterior (black for this concat pipeline)."""
    from sharpit.refine.conditioning import encode_condition_latents, null_condition_latents
    from sharpit.testing.refine import tiny_sharpit_pipeline

    torch.manual_seed(0)
    pipe = tiny_sharpit_pipeline("concat")
    assert pipe.config.null_condition == "black"
    seen = []
    hook = pipe.unet.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append((args[0].clone(), kwargs["encoder_hidden_states"].clone())),
        with_kwargs=True)
    pixels = torch.rand(1, 3, 960, 640)
    pipe(pixels, prompt="a red cube", num_inference_steps=1, guidance_scale=4.0, seed=0, output_type="latent")
    sample, embeds = seen.pop()
    uncond_embeds = embeds[0]  # the batched CFG call is [uncond, cond]
    gen = torch.Generator().manual_seed(0)
    encode_condition_latents(pipe.vae, pixels, gen)  # the condition's posterior sample comes first
    posterior = pipe.null_condition_posterior((120, 80))
    assert torch.equal(sample[0, 4:], null_condition_latents(posterior, 1, gen)[0])
    assert not torch.equal(sample[1, 4:], sample[0, 4:])  # the conditional half does see the condition

    unconditional = unconditional_branch(pipe, (960, 640))
    assert torch.equal(unconditional.condition_posterior, posterior)
    tokens = pipe.tokenizer(["a red cube"] * 2, padding="max_length", return_tensors="pt").input_ids
    batch = EncodedBatch(latents=torch.randn(2, 4, 120, 80), condition=torch.randn(2, 4, 120, 80),
                         prompt_embeds=pipe.text_encoder(tokens)[0])
    out = sharpit_loss(pipe.unet, make_noise_scheduler(), batch, unconditional, "concat", cfg_drop=1.0,
                       generator=step_generator(0, 0))
    hook.remove()
    assert bool(out["dropped"].all())
    train_sample, train_embeds = seen.pop()
    gen = _after_timesteps(2)
    noise = torch.randn(batch.latents.shape, generator=gen)
    torch.rand(2, generator=gen)  # the drop mask
    null = unconditional.condition_latents(2, gen)  # drawn after them, one per sample
    for i in range(2):
        assert torch.equal(train_sample[i, 4:], null[i])
        torch.testing.assert_close(train_embeds[i], uncond_embeds, rtol=0, atol=1e-6)  # the "" prompt
    assert torch.equal(train_sample[:, :4], make_noise_scheduler().add_noise(batch.latents, noise, out["timesteps"]))


def _after_timesteps(batch: int) -> torch.Generator:
    """The step generator advanced past the timestep draw, so the next draw is the training noise."""
    gen = step_generator(0, 0)
    torch.randint(0, 1000, (batch,), generator=gen)
    return gen


def test_init_from_sharpit_refuses_a_zero123plus_repo(tmp_path):
    from sharpit.testing.refine import save_tiny_zero123plus_repo
    from training.models import load_training_pipeline

    repo = save_tiny_zero123plus_repo(tmp_path / "z")
    with pytest.raises(CheckpointError, match="Zero123PlusPipeline checkpoint, not a SharpItRefinePipeline"):
        load_training_pipeline(str(repo), "sharpit", "concat")


def test_init_from_zero123plus_refuses_a_sharpit_pipeline(tmp_path):
    from sharpit.testing.refine import save_tiny_sharpit_pipeline
    from training.models import load_training_pipeline

    folder = save_tiny_sharpit_pipeline(tmp_path / "s")
    with pytest.raises(CheckpointError, match="not a Zero123\\+\\+ base model"):
        load_training_pipeline(str(folder), "zero123plus", "concat")


def test_init_from_sharpit_keeps_the_checkpoints_settings(tmp_path):
    from sharpit.testing.refine import save_tiny_sharpit_pipeline
    from training.models import load_training_pipeline

    folder = str(save_tiny_sharpit_pipeline(tmp_path / "s"))
    assert load_training_pipeline(folder, "sharpit", "concat").config.null_condition == "black"
    with pytest.raises(CheckpointError, match="null_condition='black' \\(the config asks for 'grey'\\)"):
        load_training_pipeline(folder, "sharpit", "concat", null_condition="grey")
