"""Exception types raised by sharpit.

Every error a user can trigger with bad input derives from :class:`SharpItError`, so
``except sharpit.SharpItError`` catches all of them. Each type also derives from the
closest built-in (``ValueError``, ``FileNotFoundError``, ...) so existing handlers keep
working. Messages say what was wrong and how to fix it.
"""

from __future__ import annotations

import os
from typing import Optional

#: Exit codes of every sharpit command line: bad input (a one-line reason on stderr), weights
#: missing (how to get them is printed), some items of a batch failed (the others are saved; the
#: reasons are in ``failures.jsonl``), interrupted by Ctrl-C.
EXIT_BAD_INPUT = 2
EXIT_NO_WEIGHTS = 3
EXIT_ITEMS_FAILED = 4
EXIT_INTERRUPTED = 130


class SharpItError(Exception):
    """Base class of every sharpit error."""


class InputError(SharpItError, ValueError):
    """An argument has the wrong type, shape, range or value."""


class ConfigError(SharpItError, ValueError):
    """A configuration is invalid (unknown key, inconsistent values)."""


class _PathError(SharpItError):
    """An error about one file; the message always names the file."""

    def __init__(self, path: "os.PathLike[str] | str | None", problem: str):
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        where = f"{self.path}: " if self.path is not None else ""
        super().__init__(f"{where}{problem}")


class AssetNotFoundError(_PathError, FileNotFoundError):
    """An input file does not exist."""

    def __init__(self, path, problem: Optional[str] = None):
        super().__init__(path, problem or "file not found; check the path")


class UnsupportedFormatError(_PathError, ValueError):
    """A file has an extension or type sharpit cannot read or write."""


class CorruptFileError(_PathError, ValueError):
    """A file exists but cannot be parsed."""


class MeshError(SharpItError, ValueError):
    """A mesh is invalid: empty, non-finite, bad indices or degenerate.

    ``path`` is the file the mesh came from, when known.
    """

    def __init__(self, problem: str, path: "os.PathLike[str] | str | None" = None):
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        where = f"{self.path}: " if self.path is not None else ""
        super().__init__(f"{where}{problem}")


class EmptySurfaceError(MeshError):
    """Iso-surface extraction found no surface at the requested level."""


class CheckpointError(_PathError, ValueError):
    """A checkpoint is corrupt, of the wrong model or variant, or has mismatched keys."""


class WeightsNotFoundError(SharpItError, OSError):
    """Pretrained weights could not be found locally or downloaded (e.g. offline)."""

    def __init__(self, name: str, hint: str = ""):
        self.name = name
        msg = (
            f"could not load weights '{name}': not in the local Hugging Face cache and the hub "
            f"is unreachable (or HF_HUB_OFFLINE=1). Download them on a machine with internet "
            f"(`hf download {name} --local-dir DIR`) and pass the local DIR instead"
            f" of the hub id."
        )
        if hint:
            msg += f" {hint}"
        super().__init__(msg)


class WeightsFileNotFoundError(WeightsNotFoundError):
    """A released weights file that is not a Hugging Face model (an Inception or LPIPS file) is
    not on this machine, and sharpit never downloads it: ``hint`` says where to get it and which
    flag takes its local path."""

    def __init__(self, name: str, hint: str):
        self.name = name
        super(WeightsNotFoundError, self).__init__(f"weights not on this machine: {name}. {hint}")


class OutputExistsError(_PathError, FileExistsError):
    """An output already exists and overwriting was not requested."""

    def __init__(self, path, problem: Optional[str] = None):
        super().__init__(
            path, problem or "already exists; pass overwrite=True (--overwrite) or choose another path"
        )


class OutputNotWritableError(_PathError, PermissionError):
    """An output location cannot be written."""
