"""Fine-tune the Sharp-It refiner UNet on (coarse grid, target grid, caption) pairs with accelerate.

Usage (from the repository root)::

    # one 48 GB GPU, the paper's batch of 3
    accelerate launch -m training.train_sharpit --config training/configs/single_gpu_48gb.yaml \
        --train_data pairs/ --output_dir runs/sharpit
    # several GPUs
    accelerate launch --config_file training/configs/accelerate_multi_gpu.yaml -m training.train_sharpit \
        --config training/configs/multi_gpu.yaml --train_data pairs/ --output_dir runs/sharpit
    # resume after an interruption
    ... --resume_from_checkpoint latest

The VAE and text encoder are frozen (run every step, or read from a cache written by
``python -m training.precompute_latents``: ``--precomputed_latents DIR``); only the UNet trains, on
the v-prediction MSE of SPEC section 3 (DDPM, linear betas 0.00085..0.012, 1000 steps), with 10 %
of the samples given the pipeline's unconditional branch (prompt "" and the latent of its
``null_condition`` image, black by default for the concat UNet). Checkpoints land in
``output_dir/checkpoint-<step>``, TensorBoard logs in ``output_dir/logs``, and the final
``SharpItPipeline`` in ``output_dir/pipeline`` (load it with ``SharpItPipeline.from_pretrained``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import warnings
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from sharpit.atomic import atomic_dir, check_writable_dir
from sharpit.errors import CheckpointError, ConfigError, OutputExistsError, SharpItError

from .checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from .config import TrainConfig, config_to_dict, parse_config
from .data import PairDataset, make_dataloader
from .latent_cache import CachedPairDataset, batch_posteriors, encoder_fingerprint
from .loss import (encode_posteriors, make_noise_scheduler, sample_batch, sharpit_loss, step_generator,
                   unconditional_branch)
from .models import load_training_pipeline

__all__ = ["train", "main", "make_optimizer"]

logger = logging.getLogger("sharpit.training")
StepCallback = Callable[[int, Dict[str, float]], None]


def make_optimizer(config: TrainConfig, params) -> torch.optim.Optimizer:
    """AdamW over ``params``; ``use_8bit_adam`` uses bitsandbytes' AdamW8bit (imported lazily)."""
    optimizer_cls = torch.optim.AdamW
    if config.use_8bit_adam:
        try:
            import bitsandbytes as bnb
        except ImportError as exc:
            raise ConfigError("use_8bit_adam needs bitsandbytes (a CUDA GPU on Linux): "
                              "`pip install bitsandbytes`, or set use_8bit_adam: false") from exc
        optimizer_cls = bnb.optim.AdamW8bit
    return optimizer_cls(params, lr=config.learning_rate, betas=(config.adam_beta1, config.adam_beta2),
                         weight_decay=config.adam_weight_decay, eps=config.adam_epsilon)


def _make_accelerator(config: TrainConfig):
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    project = ProjectConfiguration(project_dir=config.output_dir,
                                   logging_dir=str(Path(config.output_dir) / config.logging_dir))
    return Accelerator(mixed_precision=config.mixed_precision, project_config=project,
                       log_with=None if config.report_to == "none" else config.report_to)


def _configure_unet(unet, config: TrainConfig, device: torch.device) -> None:
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    if config.attention == "xformers":
        if device.type != "cuda":
            raise ConfigError("attention: xformers needs a CUDA GPU; use attention: sdpa")
        try:
            import xformers  # noqa: F401
        except ImportError as exc:
            raise ConfigError("attention: xformers needs `pip install xformers`; or use attention: sdpa") from exc
        unet.enable_xformers_memory_efficient_attention()
    if config.allow_tf32 and device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def _resume_dir(config: TrainConfig) -> Optional[Path]:
    """The checkpoint to resume from, or None; refuses to mix a fresh run into an old output folder."""
    out = Path(config.output_dir)
    if config.resume_from_checkpoint == "latest":
        return latest_checkpoint(out)
    if config.resume_from_checkpoint:
        return Path(config.resume_from_checkpoint)
    if list_checkpoints(out) and not config.overwrite_output_dir:
        raise OutputExistsError(out, "holds checkpoints of an earlier run; pass --resume_from_checkpoint latest to "
                                     "continue it or --overwrite_output_dir to start over")
    return None


def _validation_images(pipe, unet, dataset: PairDataset, config: TrainConfig, ema) -> torch.Tensor:
    """(N, 3, 3t, 6t) rows of [coarse | refined | target] for the first validation samples."""
    if ema is not None:
        ema.store(unet.parameters())
        ema.copy_to(unet.parameters())
    was_training = unet.training
    unet.eval()
    rows = []
    try:
        for index in range(min(config.num_validation_samples, len(dataset))):
            sample = dataset[index]
            with warnings.catch_warnings():  # the pipeline works at 960x640; small test grids are resized
                warnings.filterwarnings("ignore", message="resizing grid")
                refined = pipe(sample["coarse"][None], prompt=sample["caption"],
                               num_inference_steps=config.validation_inference_steps,
                               guidance_scale=config.validation_guidance_scale, seed=config.seed,
                               output_type="pt").images.float().cpu()
            refined = F.interpolate(refined, size=sample["coarse"].shape[-2:], mode="bilinear",
                                    antialias=True, align_corners=False)[0].clamp(0, 1)
            rows.append(torch.cat([sample["coarse"], refined, sample["target"]], dim=-1))
    finally:
        unet.train(was_training)
        if ema is not None:
            ema.restore(unet.parameters())
    return torch.stack(rows)


def _tracker_config(config: TrainConfig) -> Dict[str, object]:
    return {k: ("none" if v is None else v) for k, v in config_to_dict(config).items()}


def train(config: TrainConfig, step_callback: Optional[StepCallback] = None) -> Path:
    """Run (or resume) a training run described by ``config``; return the saved pipeline folder.

    Args:
        config: a validated :class:`~training.config.TrainConfig`.
        step_callback: called on every process after each optimiser step with ``(step, logs)``
            (``logs``: ``loss``, ``lr``); raising from it stops the run like a kill would.
    Returns:
        ``output_dir/pipeline``, a ``SharpItPipeline.save_pretrained`` folder.
    """
    from diffusers import UNet2DConditionModel
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel

    accelerator = _make_accelerator(config)
    device = accelerator.device
    if config.conditioning_mode == "reference" and accelerator.num_processes > 1:
        raise ConfigError("conditioning_mode: reference trains on one process only (its UNet hooks do not "
                          "pass through DistributedDataParallel); use concat for multi-GPU runs")
    check_writable_dir(config.output_dir)
    resume = _resume_dir(config)
    dataset = PairDataset(config.train_data, config.tile_size)
    val_dataset = PairDataset(config.validation_data, dataset.tile_size) if config.validation_data else dataset

    pipe = load_training_pipeline(config.pretrained_model, config.init_from, config.conditioning_mode,
                                  config.null_condition, config.condition_latent_space)
    # the pipeline's unconditional-branch settings: recorded in checkpoints, checked on resume
    settings = {k: pipe.config[k] for k in ("null_condition", "condition_latent_space")}
    vae, text_encoder, tokenizer, unet = pipe.vae, pipe.text_encoder, pipe.tokenizer, pipe.unet
    cached = None
    if config.precomputed_latents:
        cached = CachedPairDataset(config.precomputed_latents, dataset,
                                   encoder_fingerprint(vae, text_encoder, tokenizer), config.pretrained_model)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(config.mixed_precision, torch.float32)
    for frozen in (vae, text_encoder):
        frozen.requires_grad_(False).eval()
        if cached is None or config.num_validation_samples > 0:  # with a cache only validation runs them
            frozen.to(device, dtype=weight_dtype)
    unet.requires_grad_(True).train().to(device)
    _configure_unet(unet, config, device)
    noise_scheduler = make_noise_scheduler()
    ema = None
    if config.use_ema:
        ema = EMAModel(unet.parameters(), decay=config.ema_decay, model_cls=UNet2DConditionModel,
                       model_config=unet.config)
        ema.to(device)

    optimizer = make_optimizer(config, unet.parameters())
    lr_scheduler = get_scheduler(config.lr_scheduler, optimizer, num_warmup_steps=config.lr_warmup_steps,
                                 num_training_steps=config.max_train_steps)
    unet, optimizer = accelerator.prepare(unet, optimizer)

    state = {"global_step": 0, "batches_consumed": 0}
    if resume is not None:
        state = load_checkpoint(accelerator, resume, unet, optimizer, lr_scheduler, ema)
        differing = [k for k in settings if k in state and state[k] != settings[k]]
        if differing:
            raise CheckpointError(resume, "was trained with " + ", ".join(
                f"{k}={state[k]!r} (this run: {settings[k]!r})" for k in differing) + "; set them as in the checkpoint")
        logger.info("resumed from %s at step %d", resume, state["global_step"])
    global_step, consumed = int(state["global_step"]), int(state["batches_consumed"])
    loader = make_dataloader(cached or dataset, config.train_batch_size, config.seed, accelerator.num_processes,
                             accelerator.process_index, start=consumed, num_workers=config.dataloader_num_workers)
    unconditional = unconditional_branch(pipe, (3 * dataset.tile_size, 2 * dataset.tile_size), device)
    raw_unet = accelerator.unwrap_model(unet)
    unet_config = {k: v for k, v in dict(raw_unet.config).items()}
    if accelerator.is_main_process and config.report_to != "none":
        accelerator.init_trackers("sharpit", config=_tracker_config(config))

    progress = tqdm(total=config.max_train_steps, initial=global_step, desc="train",
                    disable=not accelerator.is_local_main_process)
    batches = iter(loader)
    accum = config.gradient_accumulation_steps
    while global_step < config.max_train_steps:
        losses = []
        for micro in range(accum):
            batch = next(batches)
            generator = step_generator(config.seed, consumed, accelerator.process_index)
            if cached is None:
                posteriors = encode_posteriors(vae, tokenizer, text_encoder,
                                               batch["target"].to(device, weight_dtype),
                                               batch["coarse"].to(device, weight_dtype), batch["caption"])
            else:
                posteriors = batch_posteriors(batch, device)
            encoded = sample_batch(posteriors, vae.config.scaling_factor, generator, settings["condition_latent_space"])
            sync = contextlib.nullcontext() if micro == accum - 1 else accelerator.no_sync(unet)
            with sync:
                out = sharpit_loss(unet, noise_scheduler, encoded, unconditional, config.conditioning_mode,
                                   config.cfg_drop, generator)
                accelerator.backward(out["loss"] / accum)
            losses.append(out["loss"].detach())
            consumed += 1
        accelerator.clip_grad_norm_(unet.parameters(), config.max_grad_norm)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.step(unet.parameters())
        global_step += 1
        loss = accelerator.reduce(torch.stack(losses).mean(), reduction="mean").item()
        if not math.isfinite(loss):
            raise SharpItError(f"the loss became {loss} at step {global_step}; lower learning_rate or use bf16")
        logs = {"loss": loss, "lr": lr_scheduler.get_last_lr()[0]}
        accelerator.log(logs, step=global_step)
        progress.update(1)
        progress.set_postfix(loss=f"{loss:.4f}")

        if global_step % config.checkpointing_steps == 0:
            save_checkpoint(accelerator, config.output_dir, global_step, unet, optimizer, lr_scheduler, ema,
                            {"global_step": global_step, "batches_consumed": consumed, "seed": config.seed,
                             "conditioning_mode": config.conditioning_mode, "unet_config": unet_config,
                             "config": config_to_dict(config), **settings},
                            config.checkpoints_total_limit)
        if global_step % config.validation_steps == 0 and config.num_validation_samples > 0:
            if accelerator.is_main_process:
                pipe.set_attention_backend(config.attention)
                images = _validation_images(pipe, raw_unet, val_dataset, config, ema)
                for tracker in accelerator.trackers:
                    if tracker.name == "tensorboard":
                        tracker.log_images({"validation/coarse|refined|target": images}, step=global_step)
            accelerator.wait_for_everyone()
        if step_callback is not None:
            step_callback(global_step, logs)
    progress.close()
    return _save_final(accelerator, pipe, raw_unet, ema, config)


def _save_final(accelerator, pipe, raw_unet, ema, config: TrainConfig) -> Path:
    """Save the trained (EMA, when enabled) UNet with the frozen parts as a SharpItPipeline folder."""
    final = Path(config.output_dir) / "pipeline"
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if ema is not None:
            ema.copy_to(raw_unet.parameters())
        if pipe.vae.dtype != torch.float32:
            pipe.to(torch.float32)
        with atomic_dir(final, overwrite=True) as tmp:
            pipe.save_pretrained(tmp, safe_serialization=True)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return final


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point: returns the exit status (0, 2 for bad input, 130 when interrupted)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = parse_config(argv, description=__doc__.split("\n\n")[0])
        path = train(config)
    except SharpItError as exc:
        print(f"train_sharpit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("train_sharpit: interrupted; continue with --resume_from_checkpoint latest", file=sys.stderr)
        return 130
    print(f"saved the trained pipeline to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
