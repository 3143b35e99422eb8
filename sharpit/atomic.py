"""Atomic writes: a file or folder appears complete under its final name or not at all.

Everything sharpit writes for a user (meshes, grids, latents, checkpoints, result folders) goes
through these helpers, so an interruption never leaves a half-written output behind a valid name.

Durability (POSIX): before the rename the new data is flushed with ``fsync`` (the file, or every
file and folder inside a folder written with :func:`atomic_dir`), and after the rename the parent
folder is ``fsync``-ed so the new name itself survives a power cut. A parent folder whose file
system cannot ``fsync`` folders (``EINVAL``/``ENOTSUP``, e.g. some network mounts) is skipped;
any other error is raised. On Windows the renames are atomic but nothing is ``fsync``-ed.

Permissions: the final file or folder gets exactly the permissions a plain ``open(path, "w")`` or
``os.mkdir(path)`` would give it. The temporary is created with ``os.open(..., O_CREAT | O_EXCL,
0o666)`` (``os.mkdir(..., 0o777)`` for folders) under a random unused name, so the kernel applies
the process umask (and any default ACL of the folder) itself at creation. Nothing ever reads or
sets the umask: ``os.umask`` can only be read by setting it, and the old ``umask(0)``/``umask(m)``
round trip changed process-wide state for a moment, during which files created by other threads
came out world-writable. ``tempfile.mkstemp``/``mkdtemp`` are not used for the output because they
force 0600/0700.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Iterator, Union

from .errors import OutputExistsError, OutputNotWritableError

__all__ = ["atomic_path", "atomic_dir", "write_bytes_atomic", "check_writable_dir", "is_temporary"]

PathLike = Union[str, "os.PathLike[str]"]

_FSYNC = os.name == "posix"
# errno values meaning "this file system cannot fsync a folder", not "the data may be lost".
_DIR_FSYNC_UNSUPPORTED = {errno.EINVAL, getattr(errno, "ENOTSUP", errno.EINVAL),
                          getattr(errno, "EOPNOTSUPP", errno.EINVAL)}
_TEMP_ATTEMPTS = 100


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


#: Random part of a temporary's name (``secrets.token_hex(6)``).
_TEMP_TOKEN_BYTES = 6
#: Names of the temporaries below: ``.<stem>.<token>.tmp<suffix>`` (files), ``.<name>.<token>.partial``
#: (folders) and ``.<name>.<mkdtemp's 8 characters>.old`` (the old copy an overwrite moves aside).
_TEMP_NAME = re.compile(r"^\..+\.([0-9a-f]{%d}(\.tmp(\.[^.]+)?|\.partial)|[a-z0-9_]{8}\.old)$"
                        % (2 * _TEMP_TOKEN_BYTES))


def is_temporary(path: PathLike) -> bool:
    """Whether ``path`` is named like a temporary of :func:`atomic_path` or :func:`atomic_dir`: an
    output being written by another process, or left by a killed one. Checks of an output folder
    ("does it hold a run already?") skip these, so that a second process of a launch does not
    mistake the first one's half-written ``config.json`` for foreign content."""
    return bool(_TEMP_NAME.match(Path(path).name))


def _new_temp(directory: Path, prefix: str, suffix: str, folder: bool) -> Path:
    """Create an empty file (or folder) with a random unused name in ``directory``, with the
    permissions an ordinary ``open``/``mkdir`` gives (the kernel applies the umask)."""
    for _ in range(_TEMP_ATTEMPTS):
        candidate = directory / f"{prefix}{secrets.token_hex(_TEMP_TOKEN_BYTES)}{suffix}"
        try:
            if folder:
                os.mkdir(candidate, 0o777)
            else:
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
                os.close(os.open(candidate, flags, 0o666))
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(errno.EEXIST, f"no unused temporary name in {directory} after {_TEMP_ATTEMPTS} tries")


def _widen(path: Path, plain: int) -> None:
    """Give ``path`` at least the permission bits ``plain`` (a plain ``open``'s): writers that
    narrow theirs (safetensors >= 0.8: 0600) are undone."""
    current = stat.S_IMODE(path.stat().st_mode)
    if current & plain != plain:
        os.chmod(path, current | plain)


def _plain_file_modes(folder: Path) -> None:
    """:func:`_widen` every regular file under ``folder`` to a probe file's permissions there."""
    probe = _new_temp(folder, ".mode-probe.", "", folder=False)
    plain = stat.S_IMODE(probe.stat().st_mode)
    probe.unlink()
    for root, _, names in os.walk(folder):
        for name in names:
            file = Path(root) / name
            if file.is_file() and not file.is_symlink():
                _widen(file, plain)


def _fsync_file(path: Path) -> None:
    """Flush a written file's data and metadata to the storage device (POSIX only)."""
    if not _FSYNC:
        return
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    """Flush a folder's entries (names created, renamed or removed in it); POSIX only. Folders on
    file systems that cannot be fsync-ed are skipped."""
    if not _FSYNC:
        return
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _DIR_FSYNC_UNSUPPORTED:
            raise
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """fsync every regular file and folder under ``root`` (``root`` last); links are not followed."""
    if not _FSYNC:
        return
    for folder, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            p = Path(folder) / name
            if stat.S_ISREG(os.lstat(p).st_mode):
                _fsync_file(p)
        _fsync_dir(Path(folder))


@contextlib.contextmanager
def atomic_path(path: PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; on success it is renamed onto ``path``.

    The temporary already exists (empty, with ordinary permissions; see the module docstring) and
    keeps ``path``'s suffix so writers that dispatch on the extension work. On success it gets
    those permissions back if the writer replaced the file with a narrower one (safetensors >= 0.8
    creates its files 0600, which would keep results from the other users of a shared folder), it
    is fsync-ed, renamed onto ``path`` and the folder is fsync-ed. On an exception the temporary is
    removed and ``path`` is untouched.

    Raises:
        OutputExistsError: when ``path`` exists and ``overwrite`` is False.
    """
    path = _claim(path, overwrite)
    tmp_path = _new_temp(path.parent, f".{path.stem}.", f".tmp{path.suffix}", folder=False)
    plain = stat.S_IMODE(tmp_path.stat().st_mode)
    try:
        yield tmp_path
        _widen(tmp_path, plain)
        _fsync_file(tmp_path)
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
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

    The temporary folder has the permissions of a plain ``os.mkdir`` (see the module docstring).
    On success the files in it get a plain ``open``'s permissions where a writer made them
    narrower (see :func:`atomic_path`), every file and folder in it is fsync-ed, it is renamed
    onto ``path`` and the parent folder is fsync-ed. An existing ``path`` is only replaced when ``overwrite`` is True (the old
    folder is removed after the new one is in place). On an exception the temporary folder is
    deleted.

    Raises:
        OutputExistsError: when ``path`` exists and ``overwrite`` is False.
    """
    path = _claim(path, overwrite)
    tmp = _new_temp(path.parent, f".{path.name}.", ".partial", folder=True)
    try:
        yield tmp
        _plain_file_modes(tmp)
        _fsync_tree(tmp)
        if path.exists():
            # A private (0700) holding folder for the old copy; it is deleted below.
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / "x")
            os.replace(tmp, path)
            _fsync_dir(path.parent)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
            _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
