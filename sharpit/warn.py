"""Warnings that point at the user's line: :func:`warn` attributes a warning to the first frame
outside sharpit and the libraries that call into it (torch's ``no_grad`` wrappers and
``nn.Module.__call__``, diffusers, transformers, accelerate, ``contextlib``, ``functools``),
whatever the depth of the sharpit call that raised it, so a notebook shows the cell's call."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import warnings
from typing import Dict, Tuple, Type

__all__ = ["warn"]

#: Packages whose frames are passed over (when imported): sharpit and what wraps its calls.
_PACKAGES = ("sharpit", "torch", "diffusers", "transformers", "accelerate")
_resolved: Dict[str, str] = {}


def _real(filename: str) -> str:
    if filename not in _resolved:
        _resolved[filename] = os.path.realpath(filename)
    return _resolved[filename]


def _library_roots() -> Tuple[str, ...]:
    roots = [os.path.dirname(_real(module.__file__)) + os.sep for name in _PACKAGES
             if (module := sys.modules.get(name)) is not None and getattr(module, "__file__", None)]
    return tuple(roots) + tuple(_real(m.__file__) for m in (contextlib, functools))


def _importlib(filename: str) -> bool:
    """The import machinery's frames, which ``warnings.warn`` skips without counting them."""
    return "importlib" in filename and "_bootstrap" in filename


def warn(message: str, category: Type[Warning] = UserWarning) -> None:
    """``warnings.warn(message, category)`` attributed to the first caller outside sharpit and the
    libraries wrapping its calls (see the module docstring)."""
    roots = _library_roots()
    frame, level = sys._getframe(1), 2    # stacklevel 2: warn's caller
    while frame is not None:
        name = frame.f_code.co_filename
        if _importlib(name):
            frame = frame.f_back
            continue
        if not _real(name).startswith(roots):
            break
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level if frame is not None else 2)
