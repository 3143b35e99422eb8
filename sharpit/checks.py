"""Checks every command line runs on its arguments before anything heavy is imported or loaded.

The inference commands (``inference/common.py``) and the training commands (``prepare_pairs``,
``precompute_latents``, ``train_sharpit``) validate every argument, the output location and the
model sources with these helpers before they import torch or load a model, so a bad value costs a fraction of a second and its one-line message names the flag (or
config key) that holds it. This module imports nothing heavy (``huggingface_hub`` only when a
model source is a hub id, torch only to ask whether a requested GPU exists).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Iterator, Sequence

from .errors import (AssetNotFoundError, CheckpointError, InputError, OutputExistsError, OutputNotWritableError,
                            SharpItError, WeightsNotFoundError)

__all__ = ["named", "flag_errors", "check_output_dir", "check_input_dir", "check_input_file", "check_model_source",
           "parse_device", "check_device_available", "hub_reachable", "quiet_hub_warnings", "weights_message",
           "at_least", "finite_number"]


def named(exc: SharpItError, flag: str) -> SharpItError:
    """``exc`` with ``flag`` put before its message, unless the message names it already."""
    message = str(exc)
    if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", message):
        exc.args = (f"{flag}: {message}",)
    return exc


@contextlib.contextmanager
def flag_errors(flag: str) -> Iterator[None]:
    """Errors raised inside name ``flag`` (the value of that flag is what they are about)."""
    try:
        yield
    except SharpItError as exc:
        raise named(exc, flag)


def at_least(value, minimum, flag: str, what: str = "") -> None:
    """``value`` must be an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{flag} must be an integer >= {minimum}{what}, got {value!r}")


def finite_number(value, flag: str) -> float:
    """``value`` as a float; NaN and infinities are errors."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{flag} must be a finite number, got {value!r}")
    return float(value)


def _nearest_existing(path: Path) -> Path:
    parent = path
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return parent


def check_output_dir(path, flag: str) -> Path:
    """Check, without creating it, that the folder ``path`` can be created (or is one) and written.

    A probe folder is made and removed in the nearest existing folder, so read-only mounts,
    ``/proc`` and permission problems show now rather than after the models loaded.

    Raises:
        InputError: an empty path. OutputExistsError: ``path`` is a file.
        OutputNotWritableError: a file on the way, or the probe failed.
    """
    text = os.fspath(path)
    if not text.strip():
        raise InputError(f"{flag} is empty; give the folder to write to")
    out = Path(text)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(out, f"{flag} is a file, not a folder; choose another {flag}")
    parent = _nearest_existing(out)
    if not parent.is_dir():
        raise OutputNotWritableError(out, f"{flag} cannot be created: {parent} is a file, not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".sharpit-probe-", dir=parent))
    except OSError as exc:
        raise OutputNotWritableError(out, f"{flag} cannot be written: creating a folder in {parent} failed "
                                          f"({exc.strerror or exc}); choose a writable {flag}") from None
    return out


def check_input_dir(path, flag: str, what: str, hint: str = "") -> Path:
    """``path`` must be an existing folder (``what`` names it in the message, ``hint`` says how to make one)."""
    return _check_input(path, flag, what, folder=True, hint=hint)


def check_input_file(path, flag: str, what: str) -> Path:
    """``path`` must be an existing file."""
    return _check_input(path, flag, what, folder=False)


def _check_input(path, flag: str, what: str, folder: bool, hint: str = "") -> Path:
    text = os.fspath(path)
    if not text.strip():
        raise InputError(f"{flag} is empty; give the {what}")
    found = Path(text)
    if not found.exists():
        raise AssetNotFoundError(found, f"{what} not found ({flag}){hint}")
    if found.is_dir() != folder:
        raise InputError(f"{found}: {flag} is a {'file' if folder else 'folder'}; it takes the {what}")
    return found


def hub_reachable(timeout: float = 1.5) -> bool:
    """Whether the Hugging Face endpoint answers a TCP connection within ``timeout`` seconds
    (``HF_HUB_OFFLINE=1`` means no, without trying)."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
        return True
    except OSError:
        return False


def check_model_source(source, flag: str, what: str, required: Sequence[str], layout: str) -> bool:
    """Before loading: ``source`` is a local folder holding ``required`` (files, or folders when
    they end in ``/``), or a hub id whose ``required`` files are cached or downloadable. Returns
    True for a hub id.

    Args:
        flag: the flag (or config key) that holds ``source``.
        what: the model, in words ("a Zero123++ v1.2 folder").
        required: what the loader reads first, relative to the folder.
        layout: how a valid folder looks, for the message.
    Raises:
        InputError: an empty value, or a file. AssetNotFoundError: a local path that does not exist.
        CheckpointError: a folder without ``required``.
        WeightsNotFoundError: a hub id that is not cached while the hub cannot be reached (offline:
            ``HF_HUB_OFFLINE=1``, or no answer within 1.5 s); the message names ``flag``.
    """
    from sharpit.sources import is_hub_id

    text = os.fspath(source)
    if not text.strip():
        raise InputError(f"{flag} is empty; give {what} or a Hugging Face hub id")
    if is_hub_id(text):
        from huggingface_hub import try_to_load_from_cache

        files = [r for r in required if not r.endswith("/")]
        if all(isinstance(try_to_load_from_cache(text, f), str) for f in files) or hub_reachable():
            return True
        raise WeightsNotFoundError(text, f"{flag} takes a local folder ({layout}).")
    folder = Path(text)
    if not folder.exists():
        raise AssetNotFoundError(folder, f"{flag}: no such folder; pass {what} ({layout}) or a Hugging Face hub id")
    if not folder.is_dir():
        raise InputError(f"{folder}: {flag} is a file; it takes {what} ({layout})")
    for item in required:
        found = (folder / item).is_dir() if item.endswith("/") else (folder / item).is_file()
        if not found:
            raise CheckpointError(folder, f"{flag} is not {what}: it has no {item} ({layout})")
    return False


def check_encoder_source(source, flag: str = "--encoder") -> bool:
    """Before loading: ``source`` is Shap-E's encoder in one of the two layouts
    :meth:`sharpit.coarse.ShapEEncoder.from_pretrained` reads (the released ``transmitter.pt`` +
    ``transmitter_config.yaml``, or ``config.json`` + safetensors from ``save_pretrained``), as a
    local folder (or the released ``.pt`` file with its YAML beside it) or a hub id (cached, or the
    hub reachable). Returns True for a hub id.

    Raises:
        as :func:`check_model_source`; a folder holding neither layout is a CheckpointError.
    """
    from sharpit.sources import TRANSMITTER_CONFIG_FILENAME, TRANSMITTER_FILENAME, TRANSMITTER_URL, is_hub_id

    released, saved = [TRANSMITTER_FILENAME, TRANSMITTER_CONFIG_FILENAME], ["config.json"]
    layout = (f"{TRANSMITTER_FILENAME} + {TRANSMITTER_CONFIG_FILENAME} as released at {TRANSMITTER_URL}, or "
              "config.json + safetensors from ShapEEncoder.save_pretrained")
    text = os.fspath(source)
    path = Path(text)
    if text.strip() and path.is_file() and path.suffix == ".pt":   # the released weights file itself
        if not (path.parent / TRANSMITTER_CONFIG_FILENAME).is_file():
            raise CheckpointError(path, f"{flag}: the released {path.name} needs its {TRANSMITTER_CONFIG_FILENAME} "
                                        "beside it; pass the folder holding both")
        return False
    if text.strip() and not is_hub_id(text) and path.is_dir() and all((path / f).is_file() for f in released):
        return False
    if text.strip() and is_hub_id(text):
        from huggingface_hub import try_to_load_from_cache

        cached = any(all(isinstance(try_to_load_from_cache(text, f), str) for f in files)
                     for files in (released, saved))
        if cached or hub_reachable():
            return True
        raise WeightsNotFoundError(text, f"{flag} takes a local folder ({layout}).")
    return check_model_source(source, flag, "a Shap-E encoder folder", saved, layout)


_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def parse_device(value: str, flag: str = "--device") -> str:
    """``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (lower-cased); anything else is an error."""
    device = str(value).strip().lower()
    if not _DEVICE.match(device):
        raise InputError(f"{flag} must be auto, cpu, cuda, cuda:N or mps, got {value!r}")
    return device


def check_device_available(device: str, flag: str = "--device") -> None:
    """A requested GPU must exist here: asking for ``cuda`` on a machine without one is an error,
    not a silent CPU run (imports torch)."""
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise InputError(f"{flag} {device}: no CUDA GPU is available here (torch.cuda.is_available() is "
                             f"False); use {flag} cpu, or {flag} auto to take a GPU when there is one")
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise InputError(f"{flag} {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s) "
                             f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    elif device == "mps":
        import torch

        if not torch.backends.mps.is_available():
            raise InputError(f"{flag} mps: Apple's MPS backend is not available here; use {flag} cpu or auto")


#: huggingface_hub's deprecation notices for arguments diffusers still passes to its downloads
#: (``local_dir_use_symlinks``, ``force_filename``): two lines of noise on stderr before any error.
_HUB_NOISE = r"The `(local_dir_use_symlinks|force_filename)` argument is deprecated"


@contextlib.contextmanager
def quiet_hub_warnings() -> Iterator[None]:
    """Keep huggingface_hub's deprecation notices about diffusers' download arguments off stderr
    (wrap the model loading calls: that is where the downloads happen)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_HUB_NOISE, category=UserWarning)
        warnings.filterwarnings("ignore", message=_HUB_NOISE, category=FutureWarning)
        yield


def weights_message(exc: WeightsNotFoundError, flag: str) -> str:
    """The one-line message of a missing-weights error, naming the flag that takes a local folder."""
    message = " ".join(str(exc).split())
    if re.search(rf"(?<!\w){re.escape(flag.lstrip('-'))}(?![\w-])", message):  # --key, or key (in FILE)
        return message
    return f"{message} ({flag} takes a local folder)"
