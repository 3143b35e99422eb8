"""Fine-tune the Sharp-It refiner UNet on (coarse grid, target grid, caption) pairs with accelerate.

Usage (from the repository root)::

    # one 48 GB GPU, the paper's batch of 3
    accelerate launch -m training.train_sharpit --config training/configs/single_gpu_48gb.yaml \
        --train_data pairs/ --output_dir runs/sharpit
    # several GPUs
    accelerate launch --config_file training/configs/accelerate_multi_gpu.yaml -m training.train_sharpit \
        --config training/configs/multi_gpu.yaml --train_data pairs/ --output_dir runs/sharpit
    # several processes on a CPU-only machine (gloo)
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 -m training.train_sharpit ...
    # resume after an interruption
    ... --resume_from_checkpoint latest

The VAE and text encoder are frozen (run every step, or read from a cache written by
``python -m training.precompute_latents``: ``--precomputed_latents DIR``); only the UNet trains, on
the v-prediction MSE of SPEC section 3 (DDPM, linear betas 0.00085..0.012, 1000 steps), with 10 %
of the samples given the pipeline's unconditional branch (prompt "" and the latent of its
``null_condition`` image, black by default for the concat UNet). Checkpoints land in
``output_dir/checkpoint-<step>``, TensorBoard logs in ``output_dir/logs``, and the final
``SharpItRefinePipeline`` in ``output_dir/pipeline`` (load it with ``SharpItRefinePipeline.from_pretrained``).

SIGTERM, SIGINT (Ctrl-C) or SIGUSR1 make the run finish its current step, save a checkpoint and
exit with :data:`EXIT_STOPPED` (75) after printing the command that resumes it; a second Ctrl-C
stops at once without saving (130). Bad input exits with 2 and a one-line reason naming the flag or
config key, missing ``pretrained_model`` weights with 3; both are found before torch is imported and
before any model loads (:func:`check_config`, then the data checks of :func:`train`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import os
import shlex
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, Optional, Sequence

from sharpit.atomic import atomic_dir, check_writable_dir
from sharpit.errors import (EXIT_NO_WEIGHTS, CheckpointError, ConfigError, InputError, OutputExistsError, SharpItError,
                            WeightsNotFoundError)

from .checkpoint import (latest_checkpoint, list_checkpoints, load_checkpoint, prune_checkpoints, read_training_state,
                         register_model_hooks, remove_partial_folders, save_checkpoint)
from sharpit.checks import (check_input_dir, check_model_source, check_output_dir, flag_errors, quiet_hub_warnings,
                     weights_message)
from .config import TrainConfig, config_to_dict, parse_config
from .models import check_sharpit_folder, load_training_pipeline

if TYPE_CHECKING:  # torch, diffusers and the data code are imported by train(), after the config is checked
    import torch

    from .data import PairDataset

__all__ = ["train", "main", "make_optimizer", "LaunchError", "TrainingStopped", "EXIT_BAD_INPUT", "EXIT_STOPPED",
           "EXIT_INTERRUPTED"]

logger = logging.getLogger("sharpit.training")
StepCallback = Callable[[int, Dict[str, object]], None]

EXIT_BAD_INPUT = 2
"""Exit status for bad input, a bad launch or an unusable checkpoint (with a one-line reason)."""
EXIT_STOPPED = 75
"""Exit status after a stop signal: the current step finished and a checkpoint was saved (EX_TEMPFAIL:
"try again later"); 143 would not tell it from a process killed by SIGTERM without saving."""
EXIT_INTERRUPTED = 130
"""Exit status after a second Ctrl-C (or KeyboardInterrupt): stopped at once, no new checkpoint."""
_STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1")
_MODULE = "training.train_sharpit"


class LaunchError(ConfigError):
    """The processes were launched so that they cannot train together (e.g. each one thinks it is alone)."""


class TrainingStopped(Exception):
    """A stop signal ended the run after a step; ``checkpoint`` holds it, ``resume_command`` continues it."""

    def __init__(self, step: int, checkpoint: Path, reason: str, resume_command: str):
        self.step, self.checkpoint, self.reason, self.resume_command = step, checkpoint, reason, resume_command
        super().__init__(f"stopped by {reason} after step {step}; saved {checkpoint}; resume with: {resume_command}")


class _StopRequest:
    """Turns SIGTERM/SIGINT/SIGUSR1 into a request to stop after the current step (main thread only).

    A second SIGINT raises KeyboardInterrupt at once. The previous handlers come back on exit.
    """

    def __init__(self):
        self.signal_name: Optional[str] = None
        self._previous = {}

    def __enter__(self) -> "_StopRequest":
        if threading.current_thread() is threading.main_thread():
            for name in _STOP_SIGNALS:
                if hasattr(signal, name):
                    self._previous[getattr(signal, name)] = signal.signal(getattr(signal, name), self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.signal_name is not None:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            return
        self.signal_name = name
        again = " (Ctrl-C again stops at once without saving)" if signum == signal.SIGINT else ""
        os.write(2, f"train_sharpit: got {name}; finishing this step, then saving a checkpoint{again}\n".encode())

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    @property
    def requested(self) -> bool:
        return self.signal_name is not None


def _env_int(*names: str) -> Optional[int]:
    for name in names:
        value = os.environ.get(name, "")
        if value.strip().isdigit():
            return int(value)
    return None


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _command(num_processes: int, cpu: bool, args: Optional[Sequence[str]]) -> str:
    """The command line that launches this script on ``num_processes`` processes of one machine."""
    tail = shlex.join(args) if args is not None else "<your arguments>"
    if num_processes > 1:
        prefix = ("ACCELERATE_USE_CPU=1 " if cpu else "") + f"accelerate launch --multi_gpu --num_processes {num_processes}"
        if (_env_int("WORLD_SIZE") or num_processes) > (_env_int("LOCAL_WORLD_SIZE") or num_processes):
            prefix += " <your --num_machines/--machine_rank/--main_process_ip options>"
    else:
        prefix = "python"
    return f"{prefix} -m {_MODULE} {tail}".rstrip()


def _resume_args(args: Optional[Sequence[str]]) -> Optional[list]:
    """``args`` without resume/overwrite flags, plus ``--resume_from_checkpoint latest``."""
    if args is None:
        return None
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg == "--resume_from_checkpoint":
            skip = True
            continue
        if arg.startswith("--resume_from_checkpoint=") or arg in ("--overwrite_output_dir", "--no-overwrite_output_dir"):
            continue
        out.append(arg)
    return out + ["--resume_from_checkpoint", "latest"]


@contextlib.contextmanager
def _closing(progress):
    """Close the progress bar however the loop ends, so that an error message starts on its own line."""
    try:
        yield progress
    finally:
        progress.close()


def _check_gpus(args: Optional[Sequence[str]]) -> None:
    """Before accelerate picks devices: more processes on this machine than GPUs is a launch error."""
    import torch

    local = _env_int("LOCAL_WORLD_SIZE")
    if not local or local < 2 or _env_flag("ACCELERATE_USE_CPU") or not torch.cuda.is_available():
        return
    count = torch.cuda.device_count()
    if count < local:
        raise LaunchError(f"the launcher started {local} processes on this machine but it has {count} GPU(s); "
                          f"launch one process per GPU: {_command(count, False, args)}")


def _check_launch(accelerator, args: Optional[Sequence[str]]) -> None:
    """The launcher's world size (WORLD_SIZE, set by torchrun/accelerate launch) must be accelerate's."""
    import torch

    launched = _env_int("WORLD_SIZE", "LOCAL_WORLD_SIZE")
    if launched is None or launched == accelerator.num_processes:
        return
    cpu = not torch.cuda.is_available()
    why = ("no GPU, so accelerate did not start a process group: each process would train alone and they would "
           "overwrite each other's checkpoints" if cpu else "the processes did not form one process group")
    raise LaunchError(f"the launcher started {launched} processes (WORLD_SIZE={launched}) but accelerate sees "
                      f"{accelerator.num_processes} ({why}); launch with: {_command(launched, cpu, args)}")


def make_optimizer(config: TrainConfig, params) -> torch.optim.Optimizer:
    """AdamW over ``params``; ``use_8bit_adam`` uses bitsandbytes' AdamW8bit (imported lazily)."""
    import torch

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
    import torch

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


#: What load_training_pipeline reads from a local ``pretrained_model`` folder, per ``init_from``.
_MODEL_FILES = {"zero123plus": ("unet/config.json", "vae/config.json", "text_encoder/config.json", "tokenizer/",
                                "scheduler/scheduler_config.json"),
                "sharpit": ("model_index.json", "unet/config.json", "vae/config.json", "text_encoder/config.json",
                            "tokenizer/")}
_MODEL_KIND = {"zero123plus": ("a Zero123++ v1.2 folder", "unet/, vae/, text_encoder/, tokenizer/ and scheduler/ "
                                                         "as in sudo-ai/zero123plus-v1.2"),
               "sharpit": ("a Sharp-It pipeline folder", "model_index.json, unet/, vae/, text_encoder/ and tokenizer/ "
                                                        "as SharpItRefinePipeline.save_pretrained writes them")}


def check_config(config: TrainConfig) -> None:
    """What a run needs that can be checked before torch is imported and a model loads (a
    :class:`TrainConfig` has checked its values already): the model source (a local folder of the
    right layout, or a hub id that is cached or reachable), the data and latent cache folders, the
    checkpoint to resume from, that ``output_dir`` and the TensorBoard ``logging_dir`` can be written,
    and that optional packages asked for are installed. The rest (the pairs themselves, the batch
    against the dataset size, xformers against the device) is checked by :func:`train` before the
    models load. Messages name each key as it was given (``--key`` or ``key (in FILE)``).

    Raises:
        ConfigError, InputError, AssetNotFoundError, CheckpointError, OutputExistsError,
        OutputNotWritableError: naming the key.
        WeightsNotFoundError: ``pretrained_model`` is a hub id that is not cached while the hub is unreachable.
    """
    name = config.name
    check_input_dir(config.train_data, name("train_data"), "training data folder",
                    "; create it with `python -m training.prepare_pairs`")
    if config.validation_data is not None:
        check_input_dir(config.validation_data, name("validation_data"), "validation data folder",
                        "; create it with `python -m training.prepare_pairs`")
    if config.precomputed_latents is not None:
        check_input_dir(config.precomputed_latents, name("precomputed_latents"), "latent cache folder",
                        "; create it with `python -m training.precompute_latents`")
    if config.resume_from_checkpoint not in (None, "latest"):
        with flag_errors(name("resume_from_checkpoint")):
            read_training_state(config.resume_from_checkpoint)
    check_output_dir(config.output_dir, name("output_dir"))
    if config.report_to == "tensorboard":
        if importlib.util.find_spec("tensorboard") is None:
            raise ConfigError(f"{name('report_to')} tensorboard needs the tensorboard package: `pip install "
                              "tensorboard`, or report_to: none")
        check_output_dir(Path(config.output_dir) / config.logging_dir, name("logging_dir"))
    if config.use_8bit_adam and importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError(f"{name('use_8bit_adam')} needs bitsandbytes (a CUDA GPU on Linux): `pip install "
                          "bitsandbytes`, or set use_8bit_adam: false")
    if config.attention == "xformers" and importlib.util.find_spec("xformers") is None:
        raise ConfigError(f"{name('attention')} xformers needs the xformers package and a CUDA GPU: `pip install "
                          "xformers`, or use attention: sdpa")
    what, layout = _MODEL_KIND[config.init_from]  # last: a hub id may cost a connection attempt
    check_model_source(config.pretrained_model, name("pretrained_model"), what, _MODEL_FILES[config.init_from], layout)
    if config.init_from == "sharpit" and os.path.isdir(config.pretrained_model):
        with flag_errors(name("pretrained_model")):
            check_sharpit_folder(config.pretrained_model)


def _geometry(num_processes: int, config: TrainConfig) -> Dict[str, int]:
    return {"num_processes": num_processes, "train_batch_size": config.train_batch_size,
            "gradient_accumulation_steps": config.gradient_accumulation_steps}


def _check_geometry(resume: Path, saved: Dict[str, object], current: Dict[str, int], allow_reshape: bool) -> bool:
    """True when the run's processes x batch x accumulation differ from the checkpoint's (and that is allowed)."""
    old = {k: int(saved.get(k, current[k])) for k in current}
    if old == current:
        return False
    if not allow_reshape:
        seen = saved.get("samples_seen")
        raise CheckpointError(resume, "was written by {} process(es) x train_batch_size {} x gradient_accumulation_steps {} "
                                      "(this run: {} x {} x {}); relaunch with the same to resume exactly, or pass "
                                      "--allow_reshape to continue from the same data position{}".format(
                                          *old.values(), *current.values(),
                                          f" ({seen} samples seen)" if seen is not None else ""))
    logger.warning("%s: resuming with %s (the checkpoint's: %s) because of --allow_reshape; the run continues from "
                   "the same data position but is not bit-identical to an uninterrupted one", resume, current, old)
    return True


def _validation_images(pipe, unet, dataset: PairDataset, config: TrainConfig, ema) -> torch.Tensor:
    """(N, 3, 3t, 6t) rows of [coarse | refined | target] for the first validation samples."""
    import torch
    import torch.nn.functional as F

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


def train(config: TrainConfig, step_callback: Optional[StepCallback] = None,
          argv: Optional[Sequence[str]] = None) -> Path:
    """Run (or resume) a training run described by ``config``; return the saved pipeline folder.

    Args:
        config: a validated :class:`~training.config.TrainConfig`.
        step_callback: called on every process after each optimiser step with ``(step, logs)``
            (``logs``: ``loss`` averaged over the processes, ``lr``, and ``object_ids``, the samples
            this process trained on in the step); raising from it stops the run like a kill would.
        argv: the command-line arguments the run was started with; they make the commands printed
            in errors and after a stop signal complete.
    Returns:
        ``output_dir/pipeline``, a ``SharpItRefinePipeline.save_pretrained`` folder.
    Raises:
        LaunchError: the launcher started processes that accelerate does not see as one group.
        TrainingStopped: SIGTERM/SIGINT/SIGUSR1 arrived; the step finished and a checkpoint was saved.
        CheckpointError: a resume from a checkpoint of another model, settings or batch geometry
            (without ``allow_reshape``), or a checkpoint that could not be written or read.
    """
    check_config(config)  # before torch, diffusers and the models: a bad value costs well under a second
    import torch
    from diffusers import UNet2DConditionModel
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel
    from tqdm.auto import tqdm

    from .data import PairDataset, make_dataloader, reshape_position
    from .latent_cache import CachedPairDataset, batch_posteriors, encoder_fingerprint, read_manifest
    from .loss import (encode_posteriors, make_noise_scheduler, sample_batch, sharpit_loss, step_generator,
                       unconditional_branch)

    name = config.name
    _check_gpus(argv)
    accelerator = _make_accelerator(config)
    _check_launch(accelerator, argv)
    device = accelerator.device
    if config.attention == "xformers" and device.type != "cuda":
        raise ConfigError(f"{name('attention')} xformers needs a CUDA GPU and this run is on {device.type}; use "
                          "attention: sdpa")
    if config.conditioning_mode == "reference" and accelerator.num_processes > 1:
        raise ConfigError("conditioning_mode: reference trains on one process only (its UNet hooks do not "
                          "pass through DistributedDataParallel); use concat for multi-GPU runs")
    output_dir = check_writable_dir(config.output_dir)
    resume = _resume_dir(config)
    geometry = _geometry(accelerator.num_processes, config)
    saved, reshaped = None, False
    if resume is not None:
        with flag_errors(name("resume_from_checkpoint")):
            saved = read_training_state(resume)
        reshaped = _check_geometry(resume, saved, geometry, config.allow_reshape)
    if accelerator.is_main_process:
        for stale in remove_partial_folders(output_dir):
            logger.warning("removed %s, left by a run killed while saving", stale)
        if resume is None and config.overwrite_output_dir and list_checkpoints(output_dir):
            logger.warning("removing the checkpoints of an earlier run in %s (--overwrite_output_dir)", output_dir)
            prune_checkpoints(output_dir, 0)
    accelerator.wait_for_everyone()
    with flag_errors(name("train_data")):
        dataset = PairDataset(config.train_data, skip_corrupt_shards=config.skip_corrupt_shards)
    if config.tile_size is not None and config.tile_size != dataset.tile_size:
        raise ConfigError(f"{name('tile_size')} is {config.tile_size} but the pairs in {dataset.root} have "
                          f"{dataset.tile_size} px tiles; leave tile_size out to take the dataset's")
    with flag_errors(name("validation_data")):
        val_dataset = (PairDataset(config.validation_data, dataset.tile_size,
                                   skip_corrupt_shards=config.skip_corrupt_shards)
                       if config.validation_data else dataset)
    global_batch = config.train_batch_size * accelerator.num_processes
    if len(dataset) < global_batch:
        raise InputError(f"{dataset.root}: {name('train_data')} has {len(dataset)} pair(s), fewer than one global "
                         f"batch of {name('train_batch_size')} {config.train_batch_size} x "
                         f"{accelerator.num_processes} process(es); add pairs or lower train_batch_size")
    if config.precomputed_latents:
        with flag_errors(name("precomputed_latents")):
            manifest = read_manifest(Path(config.precomputed_latents))
            if manifest.get("tile_size") != dataset.tile_size:
                raise ConfigError(f"{config.precomputed_latents}: latents of {manifest.get('tile_size')} px tiles "
                                  f"but the pairs in {dataset.root} have {dataset.tile_size} px tiles")

    with quiet_hub_warnings():
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
    register_model_hooks(accelerator)
    unet, optimizer = accelerator.prepare(unet, optimizer)

    state = {"global_step": 0, "batches_consumed": 0, "samples_seen": 0}
    if resume is not None:
        old_processes = int(saved.get("num_processes", accelerator.num_processes))
        missing_rng = (f"the checkpoint was written by {old_processes} process(es); --allow_reshape"
                       if reshaped and accelerator.process_index >= old_processes else None)
        state = load_checkpoint(accelerator, resume, unet, lr_scheduler, ema, missing_rng)
        differing = [k for k in settings if k in state and state[k] != settings[k]]
        if differing:
            raise CheckpointError(resume, "was trained with " + ", ".join(
                f"{k}={state[k]!r} (this run: {settings[k]!r})" for k in differing) + "; set them as in the checkpoint")
        saved_samples = int(saved.get("num_samples", len(dataset)))
        if saved_samples != len(dataset):
            logger.warning("%s was written with %d training pairs, this run has %d: the data order differs from the "
                           "uninterrupted run's", resume, saved_samples, len(dataset))
        if reshaped:
            old_global = old_processes * int(saved.get("train_batch_size", config.train_batch_size))
            state["batches_consumed"] = reshape_position(int(state["batches_consumed"]), saved_samples,
                                                         old_global, global_batch, len(dataset))
        logger.info("resumed from %s at step %d (%d samples seen)", resume, state["global_step"],
                    state.get("samples_seen", 0))
    global_step, consumed = int(state["global_step"]), int(state["batches_consumed"])
    samples_seen = int(state.get("samples_seen", 0))
    loader = make_dataloader(cached or dataset, config.train_batch_size, config.seed, accelerator.num_processes,
                             accelerator.process_index, start=consumed, num_workers=config.dataloader_num_workers)
    unconditional = unconditional_branch(pipe, (3 * dataset.tile_size, 2 * dataset.tile_size), device)
    raw_unet = accelerator.unwrap_model(unet)
    unet_config = {k: v for k, v in dict(raw_unet.config).items()}
    if accelerator.is_main_process and config.report_to != "none":
        accelerator.init_trackers("sharpit", config=_tracker_config(config))

    def checkpoint_state() -> Dict[str, object]:
        return {"global_step": global_step, "batches_consumed": consumed, "samples_seen": samples_seen,
                "num_samples": len(dataset), **geometry, "seed": config.seed,
                "conditioning_mode": config.conditioning_mode, "unet_config": unet_config,
                "config": config_to_dict(config), **settings}

    progress = tqdm(total=config.max_train_steps, initial=global_step, desc="train",
                    disable=not accelerator.is_local_main_process)
    batches = iter(loader)
    accum = config.gradient_accumulation_steps
    with _StopRequest() as stop_request, _closing(progress):
        while global_step < config.max_train_steps:
            losses, object_ids = [], []
            for micro in range(accum):
                batch = next(batches)
                generator = step_generator(config.seed, consumed, accelerator.process_index)
                if cached is None:
                    posteriors = encode_posteriors(vae, tokenizer, text_encoder,
                                                   batch["target"].to(device, weight_dtype),
                                                   batch["coarse"].to(device, weight_dtype), batch["caption"])
                else:
                    posteriors = batch_posteriors(batch, device)
                encoded = sample_batch(posteriors, vae.config.scaling_factor, generator,
                                       settings["condition_latent_space"])
                sync = contextlib.nullcontext() if micro == accum - 1 else accelerator.no_sync(unet)
                with sync:
                    out = sharpit_loss(unet, noise_scheduler, encoded, unconditional, config.conditioning_mode,
                                       config.cfg_drop, generator)
                    accelerator.backward(out["loss"] / accum)
                losses.append(out["loss"].detach())
                object_ids.extend(batch["object_id"])
                consumed += 1
                samples_seen += global_batch
            accelerator.clip_grad_norm_(unet.parameters(), config.max_grad_norm)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.step(unet.parameters())
            global_step += 1
            # one collective per step: the mean loss, and whether any process got a stop signal
            stats = torch.stack([torch.stack(losses).mean().float(),
                                 torch.tensor(float(stop_request.requested), device=device)])
            stats = accelerator.reduce(stats, reduction="sum")
            loss, stop = stats[0].item() / accelerator.num_processes, stats[1].item() > 0
            if not math.isfinite(loss):
                raise SharpItError(f"the loss became {loss} at step {global_step}; lower learning_rate or use bf16")
            logs = {"loss": loss, "lr": lr_scheduler.get_last_lr()[0]}
            accelerator.log(logs, step=global_step)
            progress.update(1)
            progress.set_postfix(loss=f"{loss:.4f}")

            stopping = stop and global_step < config.max_train_steps  # at the last step: finish normally
            if global_step % config.checkpointing_steps == 0 or stopping:
                path = save_checkpoint(accelerator, config.output_dir, global_step, unet, lr_scheduler, ema,
                                       checkpoint_state(), config.checkpoints_total_limit)
            if (global_step % config.validation_steps == 0 and config.num_validation_samples > 0
                    and not stopping):
                if accelerator.is_main_process:
                    pipe.set_attention_backend(config.attention)
                    images = _validation_images(pipe, raw_unet, val_dataset, config, ema)
                    for tracker in accelerator.trackers:
                        if tracker.name == "tensorboard":
                            tracker.log_images({"validation/coarse|refined|target": images}, step=global_step)
                accelerator.wait_for_everyone()
            if step_callback is not None:
                step_callback(global_step, dict(logs, object_ids=object_ids))
            if stopping:
                progress.close()  # before the stop message, so that it gets a line of its own
                accelerator.end_training()
                reason = stop_request.signal_name or "a stop signal to another process"
                raise TrainingStopped(global_step, path, reason,
                                      _command(accelerator.num_processes, device.type == "cpu", _resume_args(argv)))
    return _save_final(accelerator, pipe, raw_unet, ema, config)


def _save_final(accelerator, pipe, raw_unet, ema, config: TrainConfig) -> Path:
    """Save the trained (EMA, when enabled) UNet with the frozen parts as a SharpItRefinePipeline folder."""
    import torch

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
    """Command-line entry point: returns the exit status (0; :data:`EXIT_BAD_INPUT` (2) for bad input, a
    bad launch or checkpoint; 3 (``sharpit.errors.EXIT_NO_WEIGHTS``) when the ``pretrained_model`` weights
    are missing; :data:`EXIT_STOPPED` (75) after a stop signal and a saved checkpoint;
    :data:`EXIT_INTERRUPTED` (130) when interrupted without saving)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # not a line per checkpoint file
    args = list(sys.argv[1:] if argv is None else argv)
    rank0 = os.environ.get("RANK", "0") == "0"  # the launcher's rank: also right when accelerate sees no group
    try:
        config = parse_config(args, description=__doc__.split("\n\n")[0])
        path = train(config, argv=args)
    except TrainingStopped as exc:
        if rank0:
            print(f"train_sharpit: {exc}", file=sys.stderr)
        return EXIT_STOPPED
    except LaunchError as exc:
        if rank0:  # every process finds the same problem: say it once
            print(f"train_sharpit: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except WeightsNotFoundError as exc:
        if rank0:
            print(f"train_sharpit: error: {weights_message(exc, '--pretrained_model')}", file=sys.stderr)
        return EXIT_NO_WEIGHTS
    except SharpItError as exc:
        print(f"train_sharpit: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("train_sharpit: interrupted without saving; continue from the last checkpoint with "
              "--resume_from_checkpoint latest", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"saved the trained pipeline to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
