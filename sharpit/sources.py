"""Where model weights come from: the released models' hub ids, and the rule that tells a local
folder or file from a Hugging Face hub id.

One rule for every loader in sharpit (Shap-E, the refiner, the reconstructor, the whole pipeline):

* an existing path is local;
* ``owner/name`` or ``name`` (letters, digits, ``-``, ``_``, ``.``) that does not exist locally is a hub id,
  unless it ends in a weight-file suffix (``x/model.ckpt`` is a missing file, not a repository);
* anything else (absolute, ``./``, ``~``, more than one ``/``) is a local path that does not exist.

:func:`load_errors` maps what loaders raise to sharpit's errors with that rule: a broken local
folder is a :class:`~sharpit.errors.CheckpointError`, a missing path an
:class:`~sharpit.errors.AssetNotFoundError`, and a hub id that cannot be fetched (offline, not
cached) a :class:`~sharpit.errors.WeightsNotFoundError` naming the id.
"""

from __future__ import annotations

import contextlib
import os
import re

from .errors import AssetNotFoundError, CheckpointError, SharpItError, WeightsNotFoundError

__all__ = ["is_hub_id", "load_errors", "one_dtype", "diffusers_dtype", "WEIGHT_SUFFIXES", "SHAP_E_HUB_ID",
           "ZERO123PLUS_ID", "SHARP_IT_UNET_ID", "INSTANTMESH_HUB_ID", "DEFAULT_MODELS", "TRANSMITTER_FILENAME",
           "TRANSMITTER_CONFIG_FILENAME", "TRANSMITTER_URL", "TRANSMITTER_CONFIG_URL"]

#: Hugging Face hub id of the diffusers export of Shap-E (text-to-3D).
SHAP_E_HUB_ID = "openai/shap-e"
#: Hub id of the base model whose VAE, text encoder, tokenizer and scheduler Sharp-It uses.
ZERO123PLUS_ID = "sudo-ai/zero123plus-v1.2"
#: Hub id of the released Sharp-It UNet.
SHARP_IT_UNET_ID = "YiftachEde/Sharp-It"
#: Hub repository of the released InstantMesh checkpoints (``instant_nerf_{base,large}.ckpt``).
INSTANTMESH_HUB_ID = "TencentARC/InstantMesh"
#: The released Shap-E encoder ("transmitter") files of ``openai/shap-e`` (``shap_e/models/download.py``): a
#: plain state dict and its YAML config, downloaded from OpenAI's public bucket (not on the Hugging Face hub);
#: :meth:`sharpit.coarse.ShapEEncoder.from_pretrained` reads a folder holding both.
TRANSMITTER_FILENAME = "transmitter.pt"
TRANSMITTER_CONFIG_FILENAME = "transmitter_config.yaml"
TRANSMITTER_URL = "https://openaipublic.azureedge.net/main/shap-e/transmitter.pt"
TRANSMITTER_CONFIG_URL = "https://openaipublic.azureedge.net/main/shap-e/transmitter_config.yaml"
#: The released weights :meth:`sharpit.pipeline.SharpIt3DPipeline.from_released` uses by default.
DEFAULT_MODELS = {
    "shap_e": SHAP_E_HUB_ID,
    "zero123plus": ZERO123PLUS_ID,
    "sharpit_unet": SHARP_IT_UNET_ID,
    "instantmesh": INSTANTMESH_HUB_ID,
    "instantmesh_variant": "large",
}

_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
#: Suffixes of single weight files; a name ending in one of them is never a hub repository.
WEIGHT_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".safetensors")


def is_hub_id(source: "os.PathLike[str] | str") -> bool:
    """True when ``source`` does not exist locally and reads as a hub id (``owner/name`` or ``name``)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    text = os.fspath(source)
    if os.path.exists(text) or not _HUB_ID.match(text) or text.lower().endswith(WEIGHT_SUFFIXES):
        return False
    try:
        validate_repo_id(text)   # the hub's own rule: no leading "." or "-", no "..", at most 96 characters
    except HFValidationError:
        return False
    return True


@contextlib.contextmanager
def load_errors(source: "os.PathLike[str] | str", what: str):
    """Turn a loader's failure for ``source`` into a sharpit error that names ``what`` was loading.

    Raises:
        CheckpointError: ``source`` is a local folder or file that is incomplete or corrupt.
        AssetNotFoundError: ``source`` is a path that does not exist.
        WeightsNotFoundError: ``source`` is a hub id that cannot be fetched.
    """
    from huggingface_hub.errors import HFValidationError, HfHubHTTPError

    name = os.fspath(source)
    try:
        yield
    except SharpItError:
        raise
    except (OSError, ValueError, HfHubHTTPError) as exc:
        if os.path.exists(name):
            raise CheckpointError(name, f"cannot load the {what}: {exc}") from exc
        if not is_hub_id(name):
            raise AssetNotFoundError(name, f"no such folder for the {what}; pass a local folder or a Hugging Face "
                                           "hub id") from exc
        if isinstance(exc, ValueError) and not isinstance(exc, HFValidationError):
            raise
        raise WeightsNotFoundError(name, f"({what}; underlying error: {type(exc).__name__}: {exc})") from exc


def one_dtype(kwargs: dict, torch_dtype=None):
    """The dtype a loader was given under either name: ``torch_dtype`` (an argument, or a key of
    ``kwargs``) or ``dtype`` (a key of ``kwargs``, diffusers' newer name); both keys are removed
    from ``kwargs``.

    Raises:
        InputError: both names given.
    """
    from .errors import InputError

    torch_dtype = kwargs.pop("torch_dtype", None) if torch_dtype is None else torch_dtype
    dtype = kwargs.pop("dtype", None)
    kwargs.pop("torch_dtype", None)
    if dtype is not None and torch_dtype is not None:
        raise InputError("pass the dtype once: dtype= or torch_dtype=, not both")
    return dtype if dtype is not None else torch_dtype


def diffusers_dtype(dtype) -> dict:
    """The dtype keyword for a diffusers ``from_pretrained`` (``{}`` for None): ``dtype`` from
    diffusers 0.40, which deprecates ``torch_dtype`` (a FutureWarning on every load), and
    ``torch_dtype`` before it (which does not know ``dtype``)."""
    if dtype is None:
        return {}
    import diffusers
    from packaging.version import Version

    key = "dtype" if Version(diffusers.__version__).release >= (0, 40) else "torch_dtype"
    return {key: dtype}
