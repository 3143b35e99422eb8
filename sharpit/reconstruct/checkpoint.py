"""Reading InstantMesh's released Lightning checkpoints (``instant_nerf_{base,large}.ckpt``).

Container: ``torch.save`` of a dict whose ``"state_dict"`` maps names to tensors. The model lives
under ``lrm_generator.``; other entries (the training module's ``lpips.`` network, ...) and any
name containing ``source_camera`` are ignored. Files are read by :func:`sharpit.safe_load.load_checkpoint`:
``weights_only=True`` first, then an allow-list reader that keeps the tensors of a Lightning file
whose hyper-parameters, callbacks or optimizer entries name foreign classes. Nothing in a
checkpoint is ever executed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

import torch

from ..errors import AssetNotFoundError, CheckpointError, CorruptFileError, WeightsNotFoundError
from ..safe_load import load_checkpoint
from ..sources import is_hub_id
from .config import CHECKPOINT_PREFIX, HUB_FILENAMES, HUB_REPO, IGNORED_KEY_SUBSTRINGS, VARIANTS

__all__ = ["read_state_dict", "KeyReport", "compare_keys", "guess_variant", "resolve_checkpoint",
           "classic_vit_names", "read_vit_weights"]



def read_state_dict(path: "os.PathLike[str] | str") -> Dict[str, torch.Tensor]:
    """The reconstructor's tensors of a released checkpoint, prefix removed.

    Raises:
        AssetNotFoundError: no such file.
        CorruptFileError: the file is not a readable PyTorch checkpoint.
        CheckpointError: it is readable but has no ``lrm_generator.`` tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise AssetNotFoundError(path)
    try:
        obj = load_checkpoint(path)
    except CorruptFileError as exc:
        raise CorruptFileError(path, f"{exc.problem} (`hf download {HUB_REPO} <file>` "
                                     "fetches the released files)") from exc
    container = obj.get("state_dict", obj) if isinstance(obj, Mapping) else None
    if not isinstance(container, Mapping):
        raise CheckpointError(path, f"expected a dict with a 'state_dict' entry, found {type(obj).__name__}")
    sd = {k[len(CHECKPOINT_PREFIX):]: v for k, v in container.items()
          if isinstance(k, str) and k.startswith(CHECKPOINT_PREFIX)
          and not any(s in k for s in IGNORED_KEY_SUBSTRINGS) and isinstance(v, torch.Tensor)}
    if not sd:
        raise CheckpointError(
            path, f"holds no tensors named '{CHECKPOINT_PREFIX}*'; this is not an InstantMesh "
                  f"reconstructor checkpoint (instant_nerf_base.ckpt / instant_nerf_large.ckpt)")
    return sd


@dataclass
class KeyReport:
    """How a state dict matches a model: names missing from it, unexpected names, and
    ``(name, checkpoint_shape, model_shape)`` for shape mismatches."""

    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    mismatched: List[Tuple[str, tuple, tuple]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, limit: int = 5) -> str:
        parts = []
        for label, items in (("missing", self.missing), ("unexpected", self.unexpected),
                             ("shape-mismatched", [f"{n} {c} vs model {m}" for n, c, m in self.mismatched])):
            if items:
                more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
                parts.append(f"{len(items)} {label}: {', '.join(map(str, items[:limit]))}{more}")
        return "; ".join(parts)


def compare_keys(expected: Mapping[str, torch.Size], state_dict: Mapping[str, torch.Tensor]) -> KeyReport:
    """Compare ``state_dict`` with the model's ``{name: shape}``."""
    report = KeyReport(missing=sorted(set(expected) - set(state_dict)),
                       unexpected=sorted(set(state_dict) - set(expected)))
    for name in sorted(set(expected) & set(state_dict)):
        if tuple(state_dict[name].shape) != tuple(expected[name]):
            report.mismatched.append((name, tuple(state_dict[name].shape), tuple(expected[name])))
    return report


def guess_variant(state_dict: Mapping[str, torch.Tensor]) -> Optional[str]:
    """"base", "large", "mesh" (a FlexiCubes InstantMesh checkpoint) or None, from the number of
    transformer layers and the triplane width."""
    if any(k.startswith("synthesizer.decoder.net_sdf.") for k in state_dict):
        return "mesh"
    layers = {int(m.group(1)) for k in state_dict if (m := re.match(r"transformer\.layers\.(\d+)\.", k))}
    deconv = state_dict.get("transformer.deconv.weight")
    width = int(deconv.shape[1]) if deconv is not None and deconv.ndim == 4 else None
    for name, cfg in VARIANTS.items():
        if len(layers) == cfg["transformer_layers"] and width == cfg["triplane_dim"]:
            return name
    return None


def resolve_checkpoint(path_or_repo: "os.PathLike[str] | str", variant: str,
                       filename: Optional[str] = None) -> Path:
    """A local checkpoint file for ``path_or_repo``.

    Accepts a file, a folder holding ``filename`` (default: the variant's released file name),
    or a hub id such as ``TencentARC/InstantMesh`` (downloaded with ``hf_hub_download``).

    Raises:
        AssetNotFoundError: a local path that does not exist.
        WeightsNotFoundError: a hub id whose file is neither cached nor downloadable.
    """
    filename = filename or HUB_FILENAMES.get(variant)
    path = Path(path_or_repo)
    if path.is_file():
        return path
    if path.is_dir():
        if filename is None or not (path / filename).is_file():
            raise AssetNotFoundError(path / str(filename), f"no checkpoint '{filename}' in this folder")
        return path / filename
    text = os.fspath(path_or_repo)
    if not is_hub_id(text):
        raise AssetNotFoundError(path)
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(text, filename))
    except Exception as exc:  # offline, missing file or repo: all mean "not available here"
        raise WeightsNotFoundError(
            HUB_REPO if text == HUB_REPO else text,
            f"(file {filename}; {type(exc).__name__}). Then call "
            f"from_instantmesh_checkpoint('DIR/{filename}', variant={variant!r}).") from exc


# -- DINO ViT weights (training from scratch) ------------------------------------------------------

#: transformers >= 5 renames ViT modules in memory (files on disk keep the classic names):
#: (new pattern, classic replacement) applied to ``layers.{i}.``-relative names.
_VIT_RENAMES = (
    (r"^layers\.(\d+)\.attention\.q_proj\.", r"encoder.layer.\1.attention.attention.query."),
    (r"^layers\.(\d+)\.attention\.k_proj\.", r"encoder.layer.\1.attention.attention.key."),
    (r"^layers\.(\d+)\.attention\.v_proj\.", r"encoder.layer.\1.attention.attention.value."),
    (r"^layers\.(\d+)\.attention\.o_proj\.", r"encoder.layer.\1.attention.output.dense."),
    (r"^layers\.(\d+)\.mlp\.fc1\.", r"encoder.layer.\1.intermediate.dense."),
    (r"^layers\.(\d+)\.mlp\.fc2\.", r"encoder.layer.\1.output.dense."),
    (r"^layers\.(\d+)\.", r"encoder.layer.\1."),
)
_VIT_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def classic_vit_names(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """A Hugging Face ViT state dict with the classic (transformers 4 / on-disk) names: no
    ``vit.`` prefix, no pooler, ``encoder.layer.{i}.attention.attention.query`` etc."""
    out = {}
    for name, tensor in state_dict.items():
        name = name[len("vit."):] if name.startswith("vit.") else name
        if name.startswith(("pooler.", "classifier.")):
            continue
        for pattern, repl in _VIT_RENAMES:
            new = re.sub(pattern, repl, name)
            if new != name:
                name = new
                break
        out[name] = tensor
    return out


def read_vit_weights(path_or_repo: "os.PathLike[str] | str") -> Tuple[Dict[str, torch.Tensor], str]:
    """Classic-named ViT weights from a local model folder or a hub id, and the file read.

    Raises:
        WeightsNotFoundError: nothing found locally and the hub is unreachable.
        CorruptFileError, UnsupportedFormatError, CheckpointError: the weight file cannot be read
            (see :func:`sharpit.safe_load.load_checkpoint`) or holds no dict of tensors.
    """
    folder = Path(path_or_repo)
    candidates = [folder / f for f in _VIT_WEIGHT_FILES] if folder.is_dir() else []
    file = next((c for c in candidates if c.is_file()), None)
    if file is None and is_hub_id(path_or_repo):
        from huggingface_hub import hf_hub_download

        errors = []
        for name in _VIT_WEIGHT_FILES:
            try:
                file = Path(hf_hub_download(os.fspath(path_or_repo), name))
                break
            except Exception as exc:  # offline / file absent: try the next name, then report
                errors.append(f"{name}: {type(exc).__name__}")
        if file is None:
            raise WeightsNotFoundError(os.fspath(path_or_repo), f"({'; '.join(errors)})")
    if file is None:
        raise WeightsNotFoundError(os.fspath(path_or_repo),
                                   f"(no {' or '.join(_VIT_WEIGHT_FILES)} in that folder)")
    if file.suffix != ".safetensors":
        sd = load_checkpoint(file)          # raises sharpit errors that say what is wrong with the file
        if not isinstance(sd, Mapping):
            raise CheckpointError(file, f"expected a dict of ViT tensors, found {type(sd).__name__}")
        return classic_vit_names(sd), os.fspath(file)
    from safetensors.torch import load_file

    try:
        sd = load_file(os.fspath(file))
    except Exception as exc:  # any parse failure of a weight file means the file is unusable
        raise CorruptFileError(file, f"cannot read ViT weights ({type(exc).__name__}: {exc}); re-download it") from exc
    return classic_vit_names(sd), os.fspath(file)
