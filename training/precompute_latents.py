"""Precompute the frozen models' outputs for a pairs folder, once, for ``precomputed_latents``.

Usage (from the repository root)::

    python -m training.precompute_latents --pairs pairs/ --pretrained sudo-ai/zero123plus-v1.2 \
        --output pairs-latents/
    accelerate launch -m training.train_sharpit ... --train_data pairs/ --precomputed_latents pairs-latents/

The VAE posteriors of the target and coarse grids and the caption embeddings are computed by
:func:`training.loss.encode_posteriors`, the code a training step runs without a cache, and stored
as described in :mod:`training.latent_cache`. ``--pretrained`` is the folder/hub id a run trains
from (a Zero123++ repo or a saved Sharp-It pipeline: both hold the same ``vae/``, ``text_encoder/``
and ``tokenizer/``). A rerun resumes: shard files already written for the same models are kept;
pairs added to the folder since are encoded and the manifest is rewritten.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence

from sharpit.errors import (EXIT_BAD_INPUT, EXIT_NO_WEIGHTS, CorruptFileError, OutputExistsError, SharpItError,
                            WeightsNotFoundError)
from sharpit.sources import ZERO123PLUS_ID, load_errors

from sharpit.checks import (at_least, check_device_available, check_input_dir, check_model_source, check_output_dir,
                     flag_errors, parse_device, quiet_hub_warnings, weights_message)

if TYPE_CHECKING:  # imported by the functions that need them, after the arguments are checked
    import torch

    from .data import PairDataset

__all__ = ["load_frozen_encoders", "precompute_latents", "PrecomputeSummary", "main"]

#: What load_frozen_encoders reads from a local folder (a Zero123++ repo or a Sharp-It pipeline).
_ENCODER_FILES = ("vae/config.json", "text_encoder/config.json", "tokenizer/")
_ENCODER_LAYOUT = "vae/, text_encoder/ and tokenizer/ as in sudo-ai/zero123plus-v1.2 or a saved Sharp-It pipeline"


def encode_posteriors(*args, **kwargs):
    """:func:`training.loss.encode_posteriors` (imported on first use: it needs diffusers)."""
    from .loss import encode_posteriors as encode

    return encode(*args, **kwargs)


@dataclass
class PrecomputeSummary:
    """Objects encoded by this run and objects whose shard file was already done."""

    written: int
    skipped: int


def load_frozen_encoders(pretrained_model: str):
    """``(vae, text_encoder, tokenizer)`` of a Zero123++ repo or Sharp-It pipeline, float32 on the CPU."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, CLIPTokenizer

    with quiet_hub_warnings():
        with load_errors(pretrained_model, "VAE"):
            vae = AutoencoderKL.from_pretrained(pretrained_model, subfolder="vae")
        with load_errors(pretrained_model, "text encoder"):
            text_encoder = CLIPTextModel.from_pretrained(pretrained_model, subfolder="text_encoder")
        with load_errors(pretrained_model, "tokenizer"):
            tokenizer = CLIPTokenizer.from_pretrained(pretrained_model, subfolder="tokenizer")
    return vae, text_encoder, tokenizer


def _shard_is_done(path: Path, fingerprint: Dict[str, str], ids: List[str]) -> bool:
    """True when ``path`` holds every id's tensors and was made with the same models."""
    from safetensors import SafetensorError, safe_open

    from .latent_cache import tensor_keys

    if not path.is_file():
        return False
    try:
        with safe_open(str(path), framework="pt") as f:
            recorded, keys = json.loads((f.metadata() or {}).get("fingerprint", "{}")), set(f.keys())
    except (OSError, SafetensorError, json.JSONDecodeError):
        return False
    return recorded == fingerprint and all(set(tensor_keys(oid)) <= keys for oid in ids)


def _encode_shard(dataset: PairDataset, indices: List[int], models, batch_size: int) -> Dict[str, torch.Tensor]:
    """``{"<id>.target" | "<id>.condition" | "<id>.prompt": float32 tensor}`` of the given pairs."""
    import torch

    from .latent_cache import tensor_keys

    tensors: Dict[str, torch.Tensor] = {}
    for start in range(0, len(indices), batch_size):
        items = [dataset[i] for i in indices[start: start + batch_size]]
        posteriors = encode_posteriors(*models, torch.stack([it["target"] for it in items]),
                                       torch.stack([it["coarse"] for it in items]), [it["caption"] for it in items])
        for row, item in enumerate(items):
            parts = (posteriors.target[row], posteriors.condition[row], posteriors.prompt_embeds[row])
            for key, tensor in zip(tensor_keys(item["object_id"]), parts):
                tensors[key] = tensor.float().cpu().contiguous()
    return tensors


def _finished_cache(output) -> Optional[Dict[str, object]]:
    """The manifest of the finished cache in ``output`` ({} when unreadable), or None when there is none."""
    from .latent_cache import MANIFEST, read_manifest

    if not (Path(output) / MANIFEST).is_file():
        return None
    try:
        return read_manifest(Path(output))
    except CorruptFileError:  # an unreadable manifest is treated like another model's
        return {}


def precompute_latents(pairs, pretrained_model: str, output, batch_size: int = 8, device: str = "auto",
                       overwrite: bool = False) -> PrecomputeSummary:
    """Write (or finish) the latent cache of ``pairs`` for ``pretrained_model``'s frozen models in ``output``.

    Every argument, the output folder and the model source are checked before torch is imported
    or a model loads; the messages name the command-line flags (``--pairs``, ``--pretrained``, ...).

    Raises:
        OutputExistsError: ``output`` is a file, or a finished cache of other models and ``overwrite``
            is False. OutputNotWritableError: ``output`` cannot be created or written.
        InputError: ``batch_size`` < 1, an unknown ``device`` or one that is not here; the errors
            of :class:`PairDataset` and the model loaders.
        WeightsNotFoundError: ``pretrained_model`` is a hub id that is not cached while the hub is
            unreachable.
    """
    at_least(batch_size, 1, "--batch_size")
    device = parse_device(device)
    check_output_dir(output, "--output")
    check_input_dir(pairs, "--pairs", "pairs folder", "; create it with `python -m training.prepare_pairs`")
    check_model_source(str(pretrained_model), "--pretrained", "a Zero123++ or Sharp-It pipeline folder",
                       _ENCODER_FILES, _ENCODER_LAYOUT)
    check_device_available(device)

    import torch
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    from sharpit.atomic import atomic_path, check_writable_dir, write_bytes_atomic

    from .data import PairDataset
    from .latent_cache import CACHE_FORMAT, MANIFEST, cache_file_name, encoder_fingerprint

    refused = OutputExistsError(output, "holds latents of other models or another tile size; pass --overwrite to "
                                        "replace them or choose another --output")
    with flag_errors("--pairs"):
        dataset = PairDataset(pairs)
    old = _finished_cache(output)
    if old is not None and old.get("tile_size") != dataset.tile_size and not overwrite:
        raise refused  # known before the models load; other models are known only once they have
    vae, text_encoder, tokenizer = load_frozen_encoders(str(pretrained_model))
    fingerprint = encoder_fingerprint(vae, text_encoder, tokenizer)
    output = check_writable_dir(output)
    old = _finished_cache(output)
    if old is not None:
        if old.get("fingerprint") != fingerprint or old.get("tile_size") != dataset.tile_size:
            if not overwrite:
                raise refused
            (output / MANIFEST).unlink()  # the folder is unfinished until the new manifest is written
    run_on = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    models = (vae.eval().to(run_on), tokenizer, text_encoder.eval().to(run_on))
    by_shard: Dict[str, List[int]] = {}
    for index, entry in enumerate(dataset.entries):
        by_shard.setdefault(entry.shard, []).append(index)
    metadata = {"format": CACHE_FORMAT, "fingerprint": json.dumps(fingerprint, sort_keys=True),
                "tile_size": str(dataset.tile_size)}
    written = skipped = 0
    for shard, indices in tqdm(sorted(by_shard.items()), desc="latents"):
        path = output / cache_file_name(shard)
        if _shard_is_done(path, fingerprint, [dataset.entries[i].object_id for i in indices]):
            skipped += len(indices)
            continue
        tensors = _encode_shard(dataset, indices, models, batch_size)
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)
        written += len(indices)
    manifest = {"format": CACHE_FORMAT, "pretrained_model": str(pretrained_model), "fingerprint": fingerprint,
                "tile_size": dataset.tile_size, "objects": len(dataset),
                "files": {shard: cache_file_name(shard) for shard in sorted(by_shard)}}
    write_bytes_atomic(output / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode("utf-8"))
    return PrecomputeSummary(written=written, skipped=skipped)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Precompute VAE posteriors and prompt embeddings of training pairs.")
    parser.add_argument("--pairs", required=True, help="pairs folder written by training.prepare_pairs")
    parser.add_argument("--pretrained", default=ZERO123PLUS_ID,
                        help="the pretrained_model training uses (Zero123++ repo or Sharp-It pipeline)")
    parser.add_argument("--output", required=True, help="cache folder (reruns resume)")
    parser.add_argument("--batch_size", type=int, default=8, help="grids encoded per VAE call")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--overwrite", action="store_true", help="replace a cache made with other models")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; returns 0, 2 with a one-line reason for bad input, 3 when the
    weights of ``--pretrained`` are missing (the exit codes of the other sharpit commands). Every
    flag is checked before torch is imported or a model loads."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        summary = precompute_latents(args.pairs, args.pretrained, args.output, args.batch_size, args.device,
                                     args.overwrite)
    except WeightsNotFoundError as exc:
        print(f"precompute_latents: error: {weights_message(exc, '--pretrained')}", file=sys.stderr)
        return EXIT_NO_WEIGHTS
    except SharpItError as exc:
        print(f"precompute_latents: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"encoded {summary.written} pair(s), {summary.skipped} already done; train with "
          f"--precomputed_latents {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
