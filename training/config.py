"""Training configuration: a dataclass filled from a YAML/JSON file, then from command-line flags.

Precedence: dataclass defaults < config file < flags given on the command line. A key the
dataclass does not define is a :class:`~sharpit.errors.ConfigError` naming the key and its closest
matches, so a typo never silently falls back to a default. Error messages name a value the way the
user gave it: ``--key`` for a flag (or a default), ``key (in FILE)`` for a config file's entry; a
file that cannot be parsed is one line, ``FILE:LINE: problem``.

This module imports nothing heavy (no torch), so that ``train_sharpit`` rejects a bad flag at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import math
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Dict, Mapping, Optional, Sequence

from sharpit.errors import AssetNotFoundError, ConfigError, CorruptFileError, InputError
from sharpit.sources import ZERO123PLUS_ID

__all__ = ["TrainConfig", "load_config_file", "build_config", "add_config_arguments", "parse_config",
           "config_to_dict"]

_LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")
_MIXED_PRECISION = ("no", "fp16", "bf16")
_ATTENTION = ("sdpa", "xformers")
_INIT_FROM = ("zero123plus", "sharpit")
_MODES = ("concat", "reference")
#: sharpit.refine.conditioning's NULL_CONDITIONS and CONDITION_LATENT_SPACES, repeated here because that
#: module imports torch and diffusers; the pipeline checks the values again when it is built.
_NULL_CONDITIONS = ("black", "grey")
_CONDITION_LATENT_SPACES = ("raw", "scaled")


@dataclass
class TrainConfig:
    """Every knob of ``python -m training.train_sharpit`` (defaults: the paper's single-GPU run).

    Attributes (groups):
        model: ``pretrained_model`` is a Zero123++ v1.2 folder/hub id (``init_from="zero123plus"``:
            its 4-channel UNet is widened to the 8-channel concat UNet, or kept for
            ``conditioning_mode="reference"``) or a saved ``SharpItRefinePipeline`` (``init_from="sharpit"``).
            ``null_condition`` (``"black"``/``"grey"``) and ``condition_latent_space``
            (``"raw"``/``"scaled"``) are the pipeline settings of :class:`~sharpit.refine.SharpItRefinePipeline`;
            None keeps a Sharp-It checkpoint's own, or the defaults for a Zero123++ start (black
            for concat, grey for reference; raw). Given values must match a Sharp-It checkpoint's.
        data: ``train_data`` is a folder written by ``training.prepare_pairs``; ``tile_size`` must
            match it when given (None = the dataset's); ``validation_data`` defaults to ``train_data``.
            ``precomputed_latents`` is a folder written by ``training.precompute_latents`` for
            ``train_data`` and this ``pretrained_model``'s VAE and text encoder (None: run them every step).
        optimisation: AdamW (``use_8bit_adam`` needs bitsandbytes), ``lr_scheduler`` from diffusers'
            ``get_scheduler``, ``max_grad_norm`` clipping, ``cfg_drop`` the fraction of samples
            trained unconditionally (prompt "" and the ``null_condition`` image's latent).
        checkpoints: every ``checkpointing_steps`` optimiser steps in ``output_dir/checkpoint-<step>``
            (``checkpoints_total_limit`` keeps that many, newest first); ``resume_from_checkpoint``
            is a checkpoint folder or ``"latest"``. A resume refuses another number of processes,
            ``train_batch_size`` or ``gradient_accumulation_steps`` than the checkpoint's unless
            ``allow_reshape``, which continues from the same number of samples seen.
        faults: ``skip_corrupt_shards`` leaves out (and logs) the pairs of shards that fail the
            start-up integrity check instead of stopping.
    """

    # model
    pretrained_model: str = ZERO123PLUS_ID
    init_from: str = "zero123plus"
    conditioning_mode: str = "concat"
    null_condition: Optional[str] = None
    condition_latent_space: Optional[str] = None
    # data
    train_data: str = ""
    validation_data: Optional[str] = None
    precomputed_latents: Optional[str] = None
    tile_size: Optional[int] = None
    dataloader_num_workers: int = 2
    skip_corrupt_shards: bool = False
    # output
    output_dir: str = "sharpit-finetuned"
    overwrite_output_dir: bool = False
    seed: int = 0
    # optimisation
    train_batch_size: int = 3
    gradient_accumulation_steps: int = 1
    max_train_steps: int = 500_000
    learning_rate: float = 1e-5
    lr_scheduler: str = "constant_with_warmup"
    lr_warmup_steps: int = 1000
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    use_8bit_adam: bool = False
    max_grad_norm: float = 1.0
    cfg_drop: float = 0.1
    use_ema: bool = False
    ema_decay: float = 0.9999
    gradient_checkpointing: bool = False
    mixed_precision: str = "no"
    attention: str = "sdpa"
    allow_tf32: bool = False
    # checkpoints
    checkpointing_steps: int = 5000
    checkpoints_total_limit: Optional[int] = None
    resume_from_checkpoint: Optional[str] = None
    allow_reshape: bool = False
    # validation and logging
    validation_steps: int = 5000
    num_validation_samples: int = 2
    validation_inference_steps: int = 30
    validation_guidance_scale: float = 4.0
    logging_dir: str = "logs"
    report_to: str = "tensorboard"

    #: How each key was given, for messages: a config file's path, or absent for a flag or a default.
    _origins: ClassVar[Dict[str, str]] = {}

    def name(self, key: str) -> str:
        """How messages name ``key``: ``--key`` (a flag, or a default), or ``key (in FILE)``."""
        origin = self._origins.get(key)
        return f"{key} (in {origin})" if origin else f"--{key}"

    def validate(self) -> "TrainConfig":
        """Check value ranges and choices; returns ``self``. Raises :class:`ConfigError` naming the
        key as it was given (see :meth:`name`)."""
        n = self.name
        choices = {"init_from": _INIT_FROM, "conditioning_mode": _MODES, "lr_scheduler": _LR_SCHEDULERS,
                   "mixed_precision": _MIXED_PRECISION, "attention": _ATTENTION,
                   "report_to": ("tensorboard", "none")}
        optional_choices = {"null_condition": _NULL_CONDITIONS, "condition_latent_space": _CONDITION_LATENT_SPACES}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"{n(key)} must be one of {list(allowed)}, got {getattr(self, key)!r}")
        for key, allowed in optional_choices.items():
            if getattr(self, key) is not None and getattr(self, key) not in allowed:
                raise ConfigError(f"{n(key)} must be one of {list(allowed)} or null, got {getattr(self, key)!r}")
        if self.conditioning_mode == "reference" and self.condition_latent_space == "scaled":
            raise ConfigError("condition_latent_space: scaled is for conditioning_mode: concat (Zero123++'s "
                              "reference attention takes the raw VAE sample)")
        positive = ("train_batch_size", "gradient_accumulation_steps", "max_train_steps", "checkpointing_steps",
                    "validation_steps", "validation_inference_steps")
        for key in positive:
            if getattr(self, key) < 1:
                raise ConfigError(f"{n(key)} must be >= 1, got {getattr(self, key)}")
        for key in ("lr_warmup_steps", "dataloader_num_workers", "num_validation_samples", "seed"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{n(key)} must be >= 0, got {getattr(self, key)}")
        for key in ("learning_rate", "max_grad_norm", "adam_beta1", "adam_beta2", "adam_weight_decay", "adam_epsilon",
                    "cfg_drop", "ema_decay", "validation_guidance_scale"):
            if not math.isfinite(getattr(self, key)):
                raise ConfigError(f"{n(key)} must be a finite number, got {getattr(self, key)}")
        for key in ("learning_rate", "max_grad_norm", "adam_epsilon"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{n(key)} must be > 0, got {getattr(self, key)}")
        for key in ("adam_beta1", "adam_beta2"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ConfigError(f"{n(key)} must lie in [0, 1), got {getattr(self, key)}")
        if self.adam_weight_decay < 0:
            raise ConfigError(f"{n('adam_weight_decay')} must be >= 0, got {self.adam_weight_decay}")
        if self.validation_guidance_scale < 0:
            raise ConfigError(f"{n('validation_guidance_scale')} must be >= 0, got {self.validation_guidance_scale}")
        if not 0.0 <= self.cfg_drop <= 1.0:
            raise ConfigError(f"{n('cfg_drop')} must lie in [0, 1], got {self.cfg_drop}")
        if not 0.0 < self.ema_decay < 1.0:
            raise ConfigError(f"{n('ema_decay')} must lie in (0, 1), got {self.ema_decay}")
        if self.tile_size is not None and (self.tile_size < 8 or self.tile_size % 8):
            raise ConfigError(f"{n('tile_size')} must be a positive multiple of 8 (the VAE's factor), got "
                              f"{self.tile_size}")
        if self.checkpoints_total_limit is not None and self.checkpoints_total_limit < 1:
            raise ConfigError(f"{n('checkpoints_total_limit')} must be >= 1 or null, got {self.checkpoints_total_limit}")
        if not self.train_data:
            raise ConfigError(f"{n('train_data')} is required: the folder written by `python -m training.prepare_pairs`")
        for key in ("pretrained_model", "train_data", "output_dir"):
            if not getattr(self, key).strip():
                raise ConfigError(f"{n(key)} is empty; give a folder")
        for key in ("validation_data", "precomputed_latents", "resume_from_checkpoint"):
            if getattr(self, key) is not None and not getattr(self, key).strip():
                raise ConfigError(f"{n(key)} is empty; give a folder, or leave it out (null) for none")
        return self


def _field_types() -> Dict[str, Any]:
    hints = typing.get_type_hints(TrainConfig)
    return {f.name: hints[f.name] for f in fields(TrainConfig)}


def _base_type(hint) -> type:
    """``Optional[int]`` -> int, ``str`` -> str."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def _unknown_key_error(key: str, where: str) -> ConfigError:
    names = [f.name for f in fields(TrainConfig)]
    close = difflib.get_close_matches(key, names, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else f"; valid keys: {', '.join(names)}"
    return ConfigError(f"unknown config key {key!r} in {where}{hint}")


def _coerce(key: str, value: Any, where: str) -> Any:
    hint = _field_types()[key]
    optional = type(None) in typing.get_args(hint)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where}: {key} cannot be null")
    base = _base_type(hint)
    if base is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: {key} must be true or false, got {value!r}")
    if base is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if base is str and isinstance(value, str):
        return value
    raise ConfigError(f"{where}: {key} must be {base.__name__}, got {value!r}")


def _parse_error(path: Path, exc: Exception) -> CorruptFileError:
    """A YAML/JSON parse error as one line: ``FILE:LINE: problem``."""
    mark = getattr(exc, "problem_mark", None)
    if mark is not None:  # yaml.MarkedYAMLError
        problem = getattr(exc, "problem", None) or "cannot parse"
        context, where = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context and where is not None and where.line != mark.line:
            problem += f" ({context} at line {where.line + 1})"
        elif context:
            problem += f" ({context})"
        line = mark.line + 1
    elif isinstance(exc, json.JSONDecodeError):
        problem, line = exc.msg, exc.lineno
    else:
        problem, line = " ".join(str(exc).split()) or type(exc).__name__, None
    error = CorruptFileError(path, problem)
    if line is not None:
        error.args = (f"{path}:{line}: {problem}",)
    return error


def load_config_file(path) -> Dict[str, Any]:
    """Read a ``.yaml``/``.yml`` or ``.json`` config into a dict of checked, typed values.

    Raises:
        AssetNotFoundError: no such file. CorruptFileError: a folder, not UTF-8, unparsable (one
            line: ``FILE:LINE: problem``) or not a mapping.
        ConfigError: an unknown key (with close matches) or a value of the wrong type.
    """
    path = Path(path)
    if not path.exists():
        raise AssetNotFoundError(path, "config file not found")
    if not path.is_file():
        raise CorruptFileError(path, "is a folder; pass a .yaml or .json config file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CorruptFileError(path, f"not UTF-8 text (byte {exc.start}); a config is a .yaml or .json file") from None
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            raw = yaml.safe_load(text)
        else:
            raw = json.loads(text)
    except Exception as exc:  # yaml.YAMLError / json.JSONDecodeError
        raise _parse_error(path, exc) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise CorruptFileError(path, "a config must be a mapping of keys to values")
    known = _field_types()
    out = {}
    for key, value in raw.items():
        if key not in known:
            raise _unknown_key_error(str(key), str(path))
        out[key] = _coerce(key, value, str(path))
    return out


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--config`` and one ``--<field>`` flag per config field (booleans get ``--no-<field>``).

    Flags default to ``argparse.SUPPRESS`` so only flags actually given override the file.
    """
    parser.add_argument("--config", default=None, help="YAML or JSON config file (training/configs/*.yaml)")
    for name, hint in _field_types().items():
        base = _base_type(hint)
        default = getattr(TrainConfig, name, None)
        help_text = f"(default: {default!r})"
        if base is bool:
            parser.add_argument(f"--{name}", action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                                help=help_text)
        else:
            parser.add_argument(f"--{name}", type=base, default=argparse.SUPPRESS, help=help_text)


def build_config(args: argparse.Namespace, extra: Optional[Mapping[str, Any]] = None) -> TrainConfig:
    """Merge defaults, ``args.config`` and the given flags into a validated :class:`TrainConfig`.

    Errors about the file name ``--config``; errors about a value name it as it was given
    (:meth:`TrainConfig.name`).
    """
    values: Dict[str, Any] = {}
    origins: Dict[str, str] = {}
    config_path = getattr(args, "config", None)
    if config_path is not None:
        if not str(config_path).strip():
            raise InputError("--config is empty; give a .yaml or .json config file")
        try:
            values.update(load_config_file(config_path))
        except (AssetNotFoundError, CorruptFileError, ConfigError) as exc:
            exc.args = (f"--config: {exc}",)
            raise
        origins = {key: str(config_path) for key in values}
    flags = {k: v for k, v in vars(args).items() if k != "config"}
    for key, value in dict(flags, **(extra or {})).items():
        if key not in _field_types():
            raise _unknown_key_error(key, "the command line")
        values[key] = value
        origins.pop(key, None)
    config = dataclasses.replace(TrainConfig(), **values)
    config._origins = origins
    return config.validate()


def config_to_dict(config: TrainConfig) -> Dict[str, Any]:
    """The config as a JSON-serialisable dict (saved next to checkpoints)."""
    return dataclasses.asdict(config)


def parse_config(argv: Optional[Sequence[str]] = None, description: str = "") -> TrainConfig:
    """Parse ``argv`` (flags plus ``--config``) into a validated :class:`TrainConfig`."""
    parser = argparse.ArgumentParser(description=description)
    add_config_arguments(parser)
    return build_config(parser.parse_args(argv))
