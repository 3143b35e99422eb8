"""Training checkpoints: accelerate's ``save_state``/``load_state``, written atomically by every process.

A checkpoint folder ``checkpoint-<step>`` holds::

    unet/                   UNet2DConditionModel.save_pretrained (safetensors; a plain DDP or
                            single-process run; FSDP/DeepSpeed write their own sharded model files)
    optimizer.bin           optimizer state (accelerate; FSDP writes one per rank)
    scaler.pt               fp16 gradient scaler (accelerate; only with mixed_precision: fp16)
    random_states_<rank>.pkl  torch, CUDA, numpy and python RNG states of each process (accelerate)
    lr_scheduler.pt         LR scheduler state dict
    unet_ema/               EMA weights as a loadable UNet folder (safetensors) plus ema_state.json
    training_state.json     format, step, data position, samples seen, world size, batch geometry,
                            seed, UNet config, conditioning settings (written last)

Every process calls :func:`save_checkpoint` (accelerate's ``save_state`` is collective under FSDP
and DeepSpeed). They write into one hidden ``.checkpoint-<step>.*.partial`` folder that the main
process renames into place only once every process reported success; a failure on any process
is shared with all of them (so no process waits forever at a barrier) and raised everywhere as a
:class:`~sharpit.errors.CheckpointError`. A run killed during a save leaves only the hidden
folder, which :func:`remove_partial_folders` deletes at the next start; it never counts towards
``checkpoints_total_limit``. Everything is read back without running pickled code
(``weights_only=True`` loads, safetensors).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

from sharpit.atomic import atomic_dir
from sharpit.errors import AssetNotFoundError, CheckpointError, SharpItError

__all__ = ["CHECKPOINT_FORMAT", "save_checkpoint", "load_checkpoint", "latest_checkpoint", "list_checkpoints",
           "read_training_state", "register_model_hooks", "remove_partial_folders", "prune_checkpoints",
           "rng_file", "agree"]

logger = logging.getLogger("sharpit.training")

CHECKPOINT_FORMAT = "sharpit-train-checkpoint/2"
_CKPT_RE = re.compile(r"^checkpoint-(\d+)$")
# hidden folders of sharpit.atomic.atomic_dir: ".<name>.<random>.partial" (being written) and
# ".<name>.<random>.old" (being replaced or deleted)
_PARTIAL_RE = re.compile(r"^\.(checkpoint-\d+|pipeline)\..+\.(partial|old)$")
_STATE_FILE = "training_state.json"
_UNET_DIR, _EMA_DIR, _EMA_STATE = "unet", "unet_ema", "ema_state.json"
_WEIGHTS = "diffusion_pytorch_model.safetensors"
_OPTIMIZER, _SCALER, _LR_SCHEDULER = "optimizer.bin", "scaler.pt", "lr_scheduler.pt"


def rng_file(rank: int) -> str:
    """The name accelerate gives the RNG states of process ``rank``."""
    return f"random_states_{rank}.pkl"


def list_checkpoints(output_dir) -> list:
    """Finished checkpoint folders in ``output_dir``, oldest step first (hidden partial folders excluded)."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _CKPT_RE.match(p.name))
             and (p / _STATE_FILE).is_file()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(output_dir) -> Optional[Path]:
    """The checkpoint with the highest step in ``output_dir``, or None."""
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def remove_partial_folders(output_dir) -> List[Path]:
    """Delete the hidden folders a killed save left in ``output_dir``; return what was removed.

    Only call this while no process of the run is saving (at start, or after a save finished).
    """
    root = Path(output_dir)
    if not root.is_dir():
        return []
    stale = sorted(p for p in root.iterdir() if p.is_dir() and _PARTIAL_RE.match(p.name))
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def _delete(folder: Path) -> None:
    """Remove a checkpoint so that it is never seen half-deleted: hide it first (atomic), then delete."""
    hidden = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".old", dir=folder.parent))
    folder.replace(hidden / "x")
    shutil.rmtree(hidden, ignore_errors=True)


def prune_checkpoints(output_dir, total_limit: Optional[int]) -> List[Path]:
    """Keep the ``total_limit`` newest finished checkpoints (all when None; none when 0) and no partial folders."""
    removed = remove_partial_folders(output_dir)
    if total_limit is not None:
        found = list_checkpoints(output_dir)
        for old in found[:max(len(found) - total_limit, 0)]:
            _delete(old)
            removed.append(old)
    return removed


def agree(accelerator, error: Optional[BaseException], what: str) -> None:
    """Collective: raise on every process when ``error`` is set on any of them.

    Every process must call this, with its own ``error`` (None on success). The process that
    failed re-raises its own error; the others raise a :class:`CheckpointError` naming it, so no
    process is left waiting at a later barrier.
    """
    if accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        reports = gather_object([None if error is None else f"{type(error).__name__}: {error}"])
    else:
        reports = [None if error is None else str(error)]
    if error is not None:
        raise error
    failed = [(rank, report) for rank, report in enumerate(reports) if report is not None]
    if failed:
        rank, report = failed[0]
        raise CheckpointError(None, f"{what} failed on process {rank} ({report})")


def register_model_hooks(accelerator) -> None:
    """Make ``save_state``/``load_state`` keep the UNet as a diffusers ``unet/`` folder (safetensors).

    The folder is the same whatever the number of processes (no DDP ``module.`` prefixes), so a
    checkpoint can be read by a run of another size (``--allow_reshape``). FSDP and DeepSpeed
    models are not in the hook's lists and are saved by accelerate itself.
    """

    def save_hook(models, weights, output_dir):
        if not weights:  # FSDP / DeepSpeed: accelerate saves them
            return
        for model in models:
            if accelerator.is_main_process:
                accelerator.unwrap_model(model).save_pretrained(Path(output_dir) / _UNET_DIR, safe_serialization=True)
            weights.pop()

    def load_hook(models, input_dir):
        from safetensors.torch import load_file

        while models:
            model = accelerator.unwrap_model(models.pop())
            path = Path(input_dir) / _UNET_DIR / _WEIGHTS
            try:
                model.load_state_dict(load_file(str(path)), strict=True)
            except RuntimeError as exc:
                raise CheckpointError(path, f"the weights do not fit this UNet ({str(exc).splitlines()[0]})") from exc

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def _save_ema(ema, model, directory: Path) -> None:
    """EMA weights as a UNet folder (the model's state dict with the shadow parameters swapped in)."""
    from safetensors.torch import save_file

    directory.mkdir()
    weights = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    names = [name for name, _ in model.named_parameters()]
    for name, shadow in zip(names, ema.shadow_params):
        weights[name] = shadow.detach().to("cpu").contiguous()
    save_file(weights, str(directory / _WEIGHTS), metadata={"format": "pt"})
    model.save_config(directory)
    scalars = {k: v for k, v in ema.state_dict().items() if k != "shadow_params"}
    (directory / _EMA_STATE).write_text(json.dumps(scalars, indent=2), encoding="utf-8")


def _load_ema(ema, model, directory: Path) -> None:
    import torch
    from safetensors.torch import load_file

    weights = load_file(str(directory / _WEIGHTS))
    names = [name for name, _ in model.named_parameters()]
    missing = [n for n in names if n not in weights]
    if missing:
        raise CheckpointError(directory, f"the EMA weights lack {missing[:3]}")
    device = ema.shadow_params[0].device if ema.shadow_params else torch.device("cpu")
    state = json.loads((directory / _EMA_STATE).read_text(encoding="utf-8"))
    state["shadow_params"] = [weights[n].to(device) for n in names]
    ema.load_state_dict(state)


def _write_extras(accelerator, directory: Path, model, lr_scheduler, ema, state: Dict[str, Any]) -> None:
    if not accelerator.is_main_process:
        return
    import torch

    torch.save(lr_scheduler.state_dict(), directory / _LR_SCHEDULER)
    if ema is not None:
        _save_ema(ema, model, directory / _EMA_DIR)
    (directory / _STATE_FILE).write_text(json.dumps(dict(state, format=CHECKPOINT_FORMAT), indent=2),
                                         encoding="utf-8")


def _as_checkpoint_error(exc: BaseException, where: Path, doing: str) -> SharpItError:
    if isinstance(exc, SharpItError):
        return exc
    error = CheckpointError(where, f"{doing} failed ({type(exc).__name__}: {exc})")
    error.__cause__ = exc
    return error


def save_checkpoint(accelerator, output_dir, step: int, unet, lr_scheduler, ema, state: Dict[str, Any],
                    total_limit: Optional[int] = None) -> Path:
    """Write ``output_dir/checkpoint-<step>``; every process must call this (collective).

    ``state`` is JSON-serialisable (step, data position, ...). With ``total_limit`` the oldest
    checkpoints beyond that count are deleted afterwards (never the one just written).

    Raises:
        CheckpointError: on every process, when writing failed on any of them; nothing is left
            behind under the final name (an older checkpoint of the same name is kept).
    """
    from accelerate.utils import broadcast_object_list

    final = Path(output_dir) / f"checkpoint-{step}"
    model = accelerator.unwrap_model(unet)

    def write(directory: Path) -> Optional[BaseException]:
        try:
            accelerator.save_state(str(directory), safe_serialization=True)
            _write_extras(accelerator, directory, model, lr_scheduler, ema, state)
        except Exception as exc:  # reported to every process by agree()
            return _as_checkpoint_error(exc, final, "saving the checkpoint")
        return None

    if accelerator.is_main_process:
        with atomic_dir(final, overwrite=True) as tmp:
            if accelerator.num_processes > 1:
                broadcast_object_list([str(tmp)])
            agree(accelerator, write(tmp), f"saving {final.name}")
    else:
        shared = broadcast_object_list([None])[0]
        agree(accelerator, write(Path(shared)), f"saving {final.name}")
    accelerator.wait_for_everyone()  # the folder is in place before anyone goes on
    if accelerator.is_main_process:
        for old in prune_checkpoints(output_dir, total_limit):
            logger.info("removed %s", old)
    return final


def read_training_state(directory) -> Dict[str, Any]:
    """The ``training_state.json`` of a checkpoint folder."""
    directory = Path(directory)
    if not directory.is_dir():
        raise (AssetNotFoundError(directory, "checkpoint folder not found") if not directory.exists() else
               CheckpointError(directory, "is a file, not a checkpoint folder"))
    path = directory / _STATE_FILE
    if not path.is_file():
        raise CheckpointError(directory, f"not a training checkpoint ({_STATE_FILE} is missing)")
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(path, f"not valid JSON ({exc})") from exc
    if state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(directory, f"was written by an earlier train_sharpit (layout {state.get('format')!r}, "
                                         f"expected {CHECKPOINT_FORMAT!r}); resume it with the sharpit version "
                                         "that wrote it, or start a new run")
    return state


def _check_unet_config(directory: Path, state: Dict[str, Any], model) -> None:
    saved_config = state.get("unet_config", {})
    current = json.loads(json.dumps(dict(model.config)))
    differing = sorted(k for k in set(saved_config) | set(current)
                       if not k.startswith("_") and saved_config.get(k) != current.get(k))
    if differing:
        raise CheckpointError(directory, "was written for another model: its UNet config differs in "
                                         f"{differing[:6]} (e.g. {differing[0]}: checkpoint "
                                         f"{saved_config.get(differing[0])!r}, run {current.get(differing[0])!r})")


def _torch_load(path: Path):
    from accelerate.utils import load  # torch.load(weights_only=True) that also accepts numpy RNG states

    try:
        return load(path, map_location="cpu")
    except FileNotFoundError as exc:
        raise CheckpointError(path.parent, f"incomplete checkpoint: {path.name} is missing") from exc
    except Exception as exc:  # unpickling errors have many types
        raise CheckpointError(path, f"cannot load with torch.load(weights_only=True) ({exc})") from exc


def _check_parts(accelerator, directory: Path, ema, missing_rng_reason: Optional[str]) -> None:
    distributed = str(accelerator.distributed_type)
    needed = []
    if not any(k in distributed for k in ("FSDP", "DEEPSPEED", "MEGATRON")):
        needed += [f"{_UNET_DIR}/{_WEIGHTS}", _OPTIMIZER]
    needed.append(_LR_SCHEDULER)
    if accelerator.scaler is not None:
        needed.append(_SCALER)
    if ema is not None:
        needed += [f"{_EMA_DIR}/{_WEIGHTS}", f"{_EMA_DIR}/{_EMA_STATE}"]
    for name in needed:
        if not (directory / name).is_file():
            raise CheckpointError(directory, f"incomplete checkpoint: {name} is missing")
    rng = directory / rng_file(accelerator.process_index)
    if rng.is_file():
        _torch_load(rng)  # accelerate itself ignores an unreadable RNG file: check it here
    elif missing_rng_reason is None:
        raise CheckpointError(directory, f"incomplete checkpoint: {rng.name}, the RNG states of process "
                                         f"{accelerator.process_index}, is missing")
    else:
        logger.warning("%s has no RNG states for process %d (%s); it continues from the current RNG state",
                       directory, accelerator.process_index, missing_rng_reason)


def load_checkpoint(accelerator, directory, unet, lr_scheduler, ema,
                    missing_rng_reason: Optional[str] = None) -> Dict[str, Any]:
    """Restore everything :func:`save_checkpoint` wrote into the live objects; return the state dict.

    Collective: every process must call it, after :func:`register_model_hooks` and
    ``accelerator.prepare``. A process whose RNG file is missing raises unless
    ``missing_rng_reason`` says why that is expected (then it warns with that reason).

    Raises:
        CheckpointError: on every process: missing or unreadable parts (on any process), or a
            checkpoint of another model (its UNet config differs, or its weights do not fit).
    """
    directory = Path(directory)
    state = read_training_state(directory)
    model = accelerator.unwrap_model(unet)
    _check_unet_config(directory, state, model)
    error = None
    try:
        _check_parts(accelerator, directory, ema, missing_rng_reason)
        accelerator.load_state(str(directory))
        lr_scheduler.load_state_dict(_torch_load(directory / _LR_SCHEDULER))
        if ema is not None:
            _load_ema(ema, model, directory / _EMA_DIR)
    except Exception as exc:  # reported to every process by agree()
        error = _as_checkpoint_error(exc, directory, "loading the checkpoint")
    agree(accelerator, error, f"loading {directory.name}")
    return state
