"""Training checkpoints: written atomically, read back with ``weights_only=True``.

A checkpoint folder ``checkpoint-<step>`` holds::

    unet/                 UNet2DConditionModel.save_pretrained (safetensors)
    optimizer.pt          optimizer state dict
    lr_scheduler.pt       LR scheduler state dict
    grad_scaler.pt        fp16 gradient scaler (only with mixed_precision: fp16)
    ema.pt                EMA state (only with use_ema)
    rng-r<rank>.pt        torch, CUDA, numpy and python RNG states of each process
    training_state.json   step, data position, seed, UNet config, conditioning mode

The folder is built under a temporary name and renamed into place by the main process once every
process has written its part, so a killed run never leaves a half checkpoint behind a valid name.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch

from sharpit.atomic import atomic_dir
from sharpit.errors import AssetNotFoundError, CheckpointError

__all__ = ["save_checkpoint", "load_checkpoint", "latest_checkpoint", "list_checkpoints", "capture_rng",
           "restore_rng"]

_CKPT_RE = re.compile(r"^checkpoint-(\d+)$")
_STATE_FILE = "training_state.json"


def list_checkpoints(output_dir) -> list:
    """Finished checkpoint folders in ``output_dir``, oldest step first."""
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


def capture_rng() -> Dict[str, Any]:
    """This process's RNG states (torch CPU and CUDA, numpy, python) as tensors and primitives."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
            "python": random.getstate()}


def restore_rng(state: Dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def _write_parts(accelerator, directory: Path, unet, optimizer, lr_scheduler, ema, state: Dict[str, Any]) -> None:
    rank = accelerator.process_index
    torch.save(capture_rng(), directory / f"rng-r{rank:03d}.pt")
    if not accelerator.is_main_process:
        return
    accelerator.unwrap_model(unet).save_pretrained(directory / "unet", safe_serialization=True)
    torch.save(optimizer.state_dict(), directory / "optimizer.pt")
    torch.save(lr_scheduler.state_dict(), directory / "lr_scheduler.pt")
    if accelerator.scaler is not None:
        torch.save(accelerator.scaler.state_dict(), directory / "grad_scaler.pt")
    if ema is not None:
        torch.save(ema.state_dict(), directory / "ema.pt")
    (directory / _STATE_FILE).write_text(json.dumps(state, indent=2), encoding="utf-8")


def save_checkpoint(accelerator, output_dir, step: int, unet, optimizer, lr_scheduler, ema,
                    state: Dict[str, Any], total_limit: Optional[int] = None) -> Path:
    """Write ``output_dir/checkpoint-<step>``; every process must call this (collective).

    ``state`` is JSON-serialisable (step, data position, ...). With ``total_limit`` the oldest
    checkpoints beyond that count are deleted afterwards.
    """
    from accelerate.utils import broadcast_object_list

    final = Path(output_dir) / f"checkpoint-{step}"
    if accelerator.is_main_process:
        with atomic_dir(final, overwrite=True) as tmp:
            broadcast_object_list([str(tmp)])
            _write_parts(accelerator, tmp, unet, optimizer, lr_scheduler, ema, state)
            accelerator.wait_for_everyone()
        if total_limit is not None:
            for old in list_checkpoints(output_dir)[:-total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    else:
        shared = broadcast_object_list([None])[0]
        _write_parts(accelerator, Path(shared), unet, optimizer, lr_scheduler, ema, state)
        accelerator.wait_for_everyone()
    accelerator.wait_for_everyone()
    return final


def _load(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise CheckpointError(path.parent, f"incomplete checkpoint: {path.name} is missing") from exc
    except Exception as exc:  # unpickling errors have many types
        raise CheckpointError(path, f"cannot load with torch.load(weights_only=True) ({exc})") from exc


def read_training_state(directory) -> Dict[str, Any]:
    """The ``training_state.json`` of a checkpoint folder."""
    directory = Path(directory)
    if not directory.is_dir():
        raise AssetNotFoundError(directory, "checkpoint folder not found")
    path = directory / _STATE_FILE
    if not path.is_file():
        raise CheckpointError(directory, f"not a training checkpoint ({_STATE_FILE} is missing)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(path, f"not valid JSON ({exc})") from exc


def load_checkpoint(accelerator, directory, unet, optimizer, lr_scheduler, ema) -> Dict[str, Any]:
    """Restore everything :func:`save_checkpoint` wrote into the live objects; return the state dict.

    Raises:
        CheckpointError: missing parts, or a checkpoint of another model (its UNet config or
            conditioning mode differs from the run's, or its weights do not fit).
    """
    from safetensors.torch import load_file

    directory = Path(directory)
    state = read_training_state(directory)
    model = accelerator.unwrap_model(unet)
    saved_config = state.get("unet_config", {})
    current = json.loads(json.dumps(dict(model.config)))
    differing = sorted(k for k in set(saved_config) | set(current)
                       if not k.startswith("_") and saved_config.get(k) != current.get(k))
    if differing:
        raise CheckpointError(directory, "was written for another model: its UNet config differs in "
                                         f"{differing[:6]} (e.g. {differing[0]}: checkpoint "
                                         f"{saved_config.get(differing[0])!r}, run {current.get(differing[0])!r})")
    weights = directory / "unet" / "diffusion_pytorch_model.safetensors"
    if not weights.is_file():
        raise CheckpointError(directory, "incomplete checkpoint: unet/diffusion_pytorch_model.safetensors is missing")
    try:
        model.load_state_dict(load_file(str(weights)), strict=True)
    except RuntimeError as exc:
        raise CheckpointError(weights, f"the weights do not fit this UNet ({str(exc).splitlines()[0]})") from exc
    optimizer.load_state_dict(_load(directory / "optimizer.pt"))
    lr_scheduler.load_state_dict(_load(directory / "lr_scheduler.pt"))
    if accelerator.scaler is not None:
        accelerator.scaler.load_state_dict(_load(directory / "grad_scaler.pt"))
    if ema is not None:
        ema.load_state_dict(_load(directory / "ema.pt"))
    rng = directory / f"rng-r{accelerator.process_index:03d}.pt"
    if rng.is_file():
        restore_rng(_load(rng))
    return state
