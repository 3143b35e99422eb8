"""Warnings that point at the user's line: :func:`warn` attributes a warning to the first frame
outside the sharpit package (and Python's import machinery), whatever the depth of the sharpit
call that raised it, so a notebook shows the cell's call, not a line of sharpit."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Type

__all__ = ["warn"]

_PACKAGE = str(Path(__file__).resolve().parent)


def _importlib(filename: str) -> bool:
    return "importlib" in filename and "_bootstrap" in filename


def warn(message: str, category: Type[Warning] = UserWarning) -> None:
    """``warnings.warn(message, category)`` attributed to the first caller outside sharpit.

    ``warnings.warn`` does not count the import machinery's frames in ``stacklevel`` (it skips
    them), so neither does this.
    """
    frame, level = sys._getframe(1), 2    # stacklevel 2: warn's caller
    while frame is not None and (frame.f_code.co_filename.startswith(_PACKAGE)
                                 or _importlib(frame.f_code.co_filename)):
        if not _importlib(frame.f_code.co_filename):
            level += 1
        frame = frame.f_back
    warnings.warn(message, category, stacklevel=level if frame is not None else 2)
