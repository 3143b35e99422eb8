"""Atomic writes: a file or folder appears complete under its final name or not at all.

Everything sharpit writes for a user (meshes, grids, latents, checkpoints, result folders) goes
through these helpers, so an interruption never leaves a half-written output behind a valid name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Union

from .errors import OutputExistsError, OutputNotWritableError

__all__ = ["atomic_path", "atomic_dir", "write_bytes_atomic", "check_writable_dir"]

PathLike = Union[str, "os.PathLike[str]"]


def check_writable_dir(directory: PathLike) -> Path:
    """Create ``directory`` if needed and check that files can be created in it.

    Raises:
        OutputNotWritableError: naming the folder, when it cannot be created or written.
    """
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputNotWritableError(directory, f"cannot create the output folder ({exc.strerror or exc})") from exc
    if not directory.is_dir():
        raise OutputNotWritableError(directory, "exists but is not a folder")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise OutputNotWritableError(directory, "the output folder is not writable; choose another one")
    return directory


def _claim(path: PathLike, overwrite: bool) -> Path:
    """Refuse an existing ``path`` unless ``overwrite``; make sure its folder can be written."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(path)
    check_writable_dir(path.parent)
    return path


def _new_file_mode() -> int:
    """Permissions an ordinary new file gets under the current umask (mkstemp would give 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(path: PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; on success it is renamed onto ``path``.

    The temporary keeps ``path``'s suffix so writers that dispatch on the extension work. On an
    exception the temporary is removed and ``path`` is untouched.

    Raises:
        OutputExistsError: when ``path`` exists and ``overwrite`` is False.
    """
    path = _claim(path, overwrite)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, _new_file_mode())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(path: PathLike, data: bytes, overwrite: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`); returns ``path``."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)
    return Path(path)


@contextlib.contextmanager
def atomic_dir(path: PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``path``; on success it replaces ``path``.

    An existing ``path`` is only replaced when ``overwrite`` is True (the old folder is removed
    after the new one is in place). On an exception the temporary folder is deleted.

    Raises:
        OutputExistsError: when ``path`` exists and ``overwrite`` is False.
    """
    path = _claim(path, overwrite)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / "x")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
