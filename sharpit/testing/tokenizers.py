"""A tiny byte-level CLIP tokenizer for offline tests, saved in the real on-disk layout
(``vocab.json``, ``merges.txt``, ``tokenizer_config.json``, ``special_tokens_map.json``) of the
``tokenizer/`` folders of ``openai/shap-e`` and ``sudo-ai/zero123plus-v1.2``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Union

__all__ = ["save_tiny_clip_tokenizer", "tiny_clip_tokenizer", "TINY_CLIP_VOCAB_SIZE"]

_BOS, _EOS = "<|startoftext|>", "<|endoftext|>"


def _byte_symbols() -> list:
    """The 256 printable stand-ins byte-level BPE uses for raw bytes (GPT-2/CLIP scheme)."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1))
                 + list(range(ord("\u00ae"), ord("\u00ff") + 1)))
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


#: Vocabulary size of the tiny tokenizer: 256 bytes, 256 word-final bytes, 2 specials.
TINY_CLIP_VOCAB_SIZE = 514


def save_tiny_clip_tokenizer(directory: Union[str, os.PathLike], model_max_length: int = 77) -> Path:
    """Write a tiny CLIP tokenizer (no merges: every byte is a token) to ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    symbols = _byte_symbols()
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols] + [_BOS, _EOS])}
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    (directory / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": _BOS, "eos_token": _EOS, "pad_token": _EOS, "unk_token": _EOS}))
    (directory / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "CLIPTokenizer", "model_max_length": model_max_length,
         "bos_token": _BOS, "eos_token": _EOS, "pad_token": _EOS, "unk_token": _EOS,
         "do_lower_case": True}))
    return directory


def tiny_clip_tokenizer(directory: Union[str, os.PathLike], model_max_length: int = 77):
    """Save the tiny tokenizer to ``directory`` and load it back with ``CLIPTokenizer``."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(save_tiny_clip_tokenizer(directory, model_max_length)))
