"""Shap-E latent files.

sharpit writes latents as ``.safetensors`` with one tensor, ``"latents"`` of shape (B, W) float32
(W = 1024 * 1024 for ``openai/shap-e``), and string metadata in the header. String values are
stored as they are; every other value is JSON-encoded and its key listed under
``"sharpit_json_keys"`` so loading restores the original types. ``"sharpit_version"`` is always
added.

Cap3D-style ``.pt`` files (one latent per file, saved with ``torch.save``) are read with
:func:`sharpit.safe_load.load_checkpoint` (never executes pickled code); they may hold a (W,),
(1, W) or (rows, d_latent) tensor.

Rows: a file may hold several latents (a (B, W) tensor; each row is one object). Every caller
in sharpit wants one object, so :func:`load_latents` returns a (1, W) tensor and refuses a file
with several rows rather than keep the first silently: pass ``row=i`` to pick one, or
``row="all"`` to get all B rows as (B, W).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import torch

from ..atomic import atomic_path
from ..errors import AssetNotFoundError, CorruptFileError, InputError, UnsupportedFormatError
from ..formats import LATENT_SUFFIXES, find_latents
from ..safe_load import load_checkpoint

__all__ = ["save_latents", "load_latents", "check_latents", "find_latents", "SHAP_E_LATENT_WIDTH", "LATENT_SUFFIXES"]

#: Width of one ``openai/shap-e`` latent: 1024 tokens of 1024 channels, flattened.
SHAP_E_LATENT_WIDTH = 1024 * 1024

_TENSOR_KEY = "latents"
_JSON_KEYS = "sharpit_json_keys"
PathLike = Union[str, "os.PathLike[str]"]


def check_latents(latents: Any, width: Optional[int] = None, name: str = "latents") -> torch.Tensor:
    """Validate Shap-E latents and return them as a (B, W) floating tensor (same device/dtype).

    Accepts (W,) (one latent) or (B, W). Raises :class:`InputError` for a non-tensor, a
    non-floating dtype, a wrong shape (``width`` when given) or non-finite values.
    """
    if not isinstance(latents, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor of shape (B, W), got {type(latents).__name__}")
    if not latents.is_floating_point():
        raise InputError(f"{name} must be a floating-point tensor, got dtype {latents.dtype}")
    if latents.ndim == 1:
        latents = latents[None]
    expected = "(B, W)" if width is None else f"(B, {width}) or ({width},)"
    if latents.ndim != 2 or latents.shape[0] == 0 or (width is not None and latents.shape[1] != width):
        raise InputError(f"{name} must have shape {expected}, got {tuple(latents.shape)}")
    if not bool(torch.isfinite(latents).all()):
        raise InputError(f"{name} contain NaN or infinite values; regenerate or reload them")
    return latents


def save_latents(path: PathLike, latents: torch.Tensor, metadata: Optional[Mapping[str, Any]] = None,
                 overwrite: bool = False) -> Path:
    """Write (B, W) or (W,) latents to a ``.safetensors`` file atomically.

    Args:
        path: the output file; must end in ``.safetensors``.
        latents: finite floating latents; stored as float32 on the CPU.
        metadata: e.g. the mapping from :meth:`ShapEGenerator.metadata` (prompt, seed, guidance,
            steps, model id). Keys must be strings; non-string values must be JSON-serialisable.
        overwrite: replace an existing file.
    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
    """
    from safetensors.torch import save_file

    from .. import __version__

    path = Path(path)
    if path.suffix != ".safetensors":
        raise UnsupportedFormatError(path, "latents are saved as .safetensors; use that extension")
    latents = check_latents(latents)
    header: Dict[str, str] = {}
    json_keys = []
    for key, value in dict(metadata or {}, sharpit_version=__version__).items():
        if not isinstance(key, str) or key == _JSON_KEYS:
            raise InputError(f"metadata keys must be strings other than {_JSON_KEYS!r}, got {key!r}")
        if isinstance(value, str):
            header[key] = value
            continue
        try:
            header[key] = json.dumps(value)
        except TypeError as exc:
            raise InputError(f"metadata[{key!r}] is not JSON-serialisable: {exc}") from exc
        json_keys.append(key)
    header[_JSON_KEYS] = json.dumps(json_keys)
    tensor = latents.detach().to("cpu", torch.float32).contiguous()
    with atomic_path(path, overwrite=overwrite) as tmp:
        save_file({_TENSOR_KEY: tensor}, str(tmp), metadata=header)
    return path


def load_latents(path: PathLike, width: Optional[int] = None,
                 row: Union[int, str, None] = None) -> Tuple[torch.Tensor, Dict[str, Any]]:
    """Read latents written by :func:`save_latents` or a Cap3D-style ``.pt`` file.

    Args:
        path: a ``.safetensors`` or ``.pt`` file.
        width: the expected latent width W (``ShapEGenerator.latent_width``); a ``.pt`` tensor
            is reshaped to (1, W) when it holds exactly W values. Defaults to 1024 * 1024.
        row: which latent of a file with B rows to return. None (default): the file must hold
            exactly one latent. An int ``i`` in [0, B) (negative counts from the end): that row.
            ``"all"``: every row.
    Returns:
        ``(latents, metadata)``: a float32 CPU tensor of shape (1, W), or (B, W) for
        ``row="all"``, and the decoded metadata of the whole file (empty for ``.pt`` files;
        per-row values such as a list of prompts are not sliced).
    Raises:
        InputError: the file holds several latents and ``row`` is None (the message gives the
            count and how to choose), ``row`` is out of range, or the latents are malformed.
    """
    path = Path(path)
    width = SHAP_E_LATENT_WIDTH if width is None else int(width)
    if not (row is None or row == "all" or (isinstance(row, int) and not isinstance(row, bool))):
        raise InputError(f"row must be None, an integer or 'all', got {row!r}")
    if not path.is_file():
        raise AssetNotFoundError(path)
    if path.suffix == ".safetensors":
        latents, metadata = _load_safetensors(path)
    elif path.suffix in LATENT_SUFFIXES:
        latents, metadata = _load_pt(path, width), {}
    else:
        raise UnsupportedFormatError(path, "latent files must be .safetensors (sharpit) or .pt (Cap3D)")
    try:
        latents = check_latents(latents.float(), width)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from exc
    return _select_row(path, latents, row), metadata


def _select_row(path: Path, latents: torch.Tensor, row: Union[int, str, None]) -> torch.Tensor:
    rows = latents.shape[0]
    if row == "all":
        return latents
    if row is None:
        if rows != 1:
            raise InputError(
                f"{path}: holds {rows} latents (rows 0..{rows - 1}) but one was expected; pick one with "
                f"load_latents(path, row=i) and pass that (1, W) tensor on, or load all with row='all'")
        return latents
    if not -rows <= row < rows:
        raise InputError(f"{path}: row {row} is out of range; the file holds {rows} latent(s) "
                         f"(rows 0..{rows - 1})")
    return latents[row].unsqueeze(0).clone()


def _load_safetensors(path: Path) -> Tuple[torch.Tensor, Dict[str, Any]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            header = dict(f.metadata() or {})
            if _TENSOR_KEY not in f.keys():
                raise CorruptFileError(path, f"no {_TENSOR_KEY!r} tensor; not a sharpit latent file")
            latents = f.get_tensor(_TENSOR_KEY)
    except CorruptFileError:
        raise
    except Exception as exc:  # safetensors raises its own SafetensorError for bad headers
        raise CorruptFileError(path, f"cannot read safetensors file ({exc})") from exc
    try:
        json_keys = json.loads(header.pop(_JSON_KEYS, "[]"))
        metadata = {k: (json.loads(v) if k in json_keys else v) for k, v in header.items()}
    except json.JSONDecodeError as exc:
        raise CorruptFileError(path, f"metadata is not valid JSON ({exc})") from exc
    return latents, metadata


def _load_pt(path: Path, width: int) -> torch.Tensor:
    obj = load_checkpoint(path)
    if not isinstance(obj, torch.Tensor):
        raise CorruptFileError(path, f"expected one latent tensor, found {type(obj).__name__}")
    if obj.numel() == width and obj.ndim in (1, 2):
        return obj.reshape(1, width)
    raise InputError(f"{path}: a Cap3D latent must hold {width} values as ({width},), (1, {width}) or "
                     f"(rows, channels); got shape {tuple(obj.shape)}")
