"""Precomputed latents: what the frozen VAE and text encoder make of a pairs folder, stored once.

Layout of a cache folder (written by ``python -m training.precompute_latents``)::

    latents-pairs-r000-000000.safetensors   # one file per pairs shard, keyed by object id:
                                            #   <id>.target, <id>.condition  (8, h, w) float32
                                            #   <id>.prompt                  (77, D) float32
    cache.json                              # written last: models, tile size, shard -> file

``target``/``condition`` are the VAE posterior parameters (``latent_dist.parameters``: mean and
log-variance) of the target and coarse grids, so each training step still draws a fresh posterior
sample from its own generator (:func:`training.loss.sample_batch`, which also maps the condition's
sample into the pipeline's ``condition_latent_space``: one cache serves both spaces); ``prompt`` is
the caption embedding. Files are written atomically, and ``cache.json`` only once every shard is done: a cache
without it is unfinished and refused. The fingerprint recorded in ``cache.json`` and in every
file's header (a SHA-256 of each frozen model's config and weights, and of the tokenizer's
vocabulary) must match the models a run trains with.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Dict, List, Mapping, Union

import torch
from safetensors import SafetensorError, safe_open
from torch.utils.data import Dataset

from sharpit.errors import AssetNotFoundError, CheckpointError, ConfigError, CorruptFileError

from .data import PairDataset
from .loss import EncodedPosteriors

__all__ = ["CACHE_FORMAT", "MANIFEST", "encoder_fingerprint", "cache_file_name", "tensor_keys", "read_manifest",
           "CachedPairDataset", "batch_posteriors"]

CACHE_FORMAT = "sharpit-latent-cache/1"
MANIFEST = "cache.json"
_PARTS = ("target", "condition", "prompt")
_UNSTABLE_CONFIG_KEYS = ("transformers_version", "torch_dtype", "dtype")


def _config_dict(config) -> Dict[str, object]:
    """A model config without the keys that change with how it was loaded (paths, versions, dtype)."""
    raw = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    return {k: v for k, v in raw.items() if not k.startswith("_") and k not in _UNSTABLE_CONFIG_KEYS}


def _module_digest(module: torch.nn.Module) -> str:
    """SHA-256 of a module's config and float32 weights (in key order)."""
    digest = hashlib.sha256(json.dumps(_config_dict(module.config), sort_keys=True, default=str).encode())
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def encoder_fingerprint(vae, text_encoder, tokenizer) -> Dict[str, str]:
    """``{"vae", "text_encoder", "tokenizer": sha256 hex}`` of the frozen models (compute it in float32)."""
    vocab = json.dumps({"vocab": tokenizer.get_vocab(), "max_length": tokenizer.model_max_length}, sort_keys=True)
    return {"vae": _module_digest(vae), "text_encoder": _module_digest(text_encoder),
            "tokenizer": hashlib.sha256(vocab.encode()).hexdigest()}


def cache_file_name(shard: str) -> str:
    """The cache file of a pairs shard: ``pairs-r000-000001.tar`` -> ``latents-pairs-r000-000001.safetensors``."""
    return f"latents-{Path(shard).stem}.safetensors"


def tensor_keys(object_id: str) -> List[str]:
    """The keys of one object in a cache file: ``<id>.target``, ``<id>.condition``, ``<id>.prompt``."""
    return [f"{object_id}.{part}" for part in _PARTS]


def read_manifest(cache_dir: Path) -> Dict[str, object]:
    """The parsed ``cache.json`` of a finished cache.

    Raises:
        AssetNotFoundError: no such folder. CheckpointError: an unfinished cache (no manifest).
        CorruptFileError: an unreadable manifest.
    """
    if not cache_dir.is_dir():
        raise AssetNotFoundError(cache_dir, "latent cache folder not found; create it with "
                                            "`python -m training.precompute_latents`")
    path = cache_dir / MANIFEST
    if not path.is_file():
        raise CheckpointError(cache_dir, f"unfinished latent cache (no {MANIFEST}: precompute_latents was "
                                         "interrupted); rerun the same `python -m training.precompute_latents` "
                                         "command to finish it")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CorruptFileError(path, f"not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != CACHE_FORMAT:
        raise CorruptFileError(path, f"not a {CACHE_FORMAT} manifest")
    return manifest


def _check_models(cache_dir: Path, manifest: Mapping[str, object], fingerprint: Mapping[str, str],
                  pretrained_model: str) -> None:
    recorded = manifest.get("fingerprint") or {}
    differing = [part for part in fingerprint if recorded.get(part) != fingerprint[part]]
    if differing:
        raise CheckpointError(cache_dir, f"latents made with another {' and '.join(differing)} (from "
                                         f"{manifest.get('pretrained_model')!r}) than this run's "
                                         f"{pretrained_model!r}; rerun `python -m training.precompute_latents` "
                                         "with this model into a new folder")


class CachedPairDataset(Dataset):
    """The pairs of a :class:`PairDataset` served from a latent cache, in the same order.

    Items are dicts: ``"target"`` and ``"condition"`` (8, h, w) float32 posterior parameters,
    ``"prompt_embeds"`` (77, D) float32, ``"caption"`` and ``"object_id"``.

    Args:
        cache_dir: the folder written by ``training.precompute_latents``.
        pairs: the dataset the cache was made from.
        fingerprint: :func:`encoder_fingerprint` of the run's frozen models.
        pretrained_model: the run's model (named in errors).
    Raises:
        CheckpointError: unfinished cache, or one made with other models.
        ConfigError: another tile size, or pairs added to the folder since the cache was made.
        CorruptFileError: a cache file that cannot be read or lacks an object.
    """

    def __init__(self, cache_dir: Union[str, Path], pairs: PairDataset, fingerprint: Mapping[str, str],
                 pretrained_model: str):
        self.root = Path(cache_dir)
        manifest = read_manifest(self.root)
        _check_models(self.root, manifest, fingerprint, pretrained_model)
        if manifest.get("tile_size") != pairs.tile_size:
            raise ConfigError(f"{self.root}: latents of {manifest.get('tile_size')} px tiles but the pairs in "
                              f"{pairs.root} have {pairs.tile_size} px tiles")
        files: Mapping[str, str] = manifest.get("files") or {}
        missing = sorted({e.shard for e in pairs.entries} - set(files))
        if missing:
            raise ConfigError(f"{self.root}: no latents for shard(s) {', '.join(missing[:3])} of {pairs.root} "
                              "(pairs added after the cache was made); rerun `python -m training.precompute_latents`")
        self.entries = pairs.entries
        self._files = {shard: self.root / name for shard, name in files.items()}
        self._check_keys()

    def _check_keys(self) -> None:
        wanted: Dict[str, List[str]] = {}
        for entry in self.entries:
            wanted.setdefault(entry.shard, []).append(entry.object_id)
        for shard, ids in wanted.items():
            path = self._files[shard]
            try:
                with safe_open(str(path), framework="pt") as f:
                    keys = set(f.keys())
            except (OSError, SafetensorError) as exc:
                raise CorruptFileError(path, f"cannot read the latent cache file ({exc})") from exc
            absent = [oid for oid in ids if not set(tensor_keys(oid)) <= keys]
            if absent:
                raise CorruptFileError(path, f"lacks the latents of {absent[:3]}; rerun "
                                             "`python -m training.precompute_latents` with --overwrite")

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> Dict[str, object]:
        entry = self.entries[index]
        with safe_open(str(self._files[entry.shard]), framework="pt") as f:
            target, condition, prompt = (f.get_tensor(key) for key in tensor_keys(entry.object_id))
        return {"target": target, "condition": condition, "prompt_embeds": prompt, "caption": entry.caption,
                "object_id": entry.object_id}


def batch_posteriors(batch: Mapping[str, torch.Tensor], device: torch.device) -> EncodedPosteriors:
    """A collated batch of :class:`CachedPairDataset` items as (B, ...) posteriors on ``device``."""
    return EncodedPosteriors(batch["target"].to(device), batch["condition"].to(device),
                             batch["prompt_embeds"].to(device))
