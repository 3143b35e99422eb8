"""Atomic file and folder writes."""

import os
import stat

import pytest

from sharpit.atomic import atomic_dir, atomic_path, check_writable_dir
from sharpit.errors import OutputExistsError, OutputNotWritableError


def test_atomic_path_writes_and_keeps_suffix(tmp_path):
    target = tmp_path / "sub" / "mesh.glb"
    with atomic_path(target) as tmp:
        assert tmp.suffix == ".glb" and tmp.parent == target.parent and not target.exists()
        tmp.write_bytes(b"data")
    assert target.read_bytes() == b"data"
    assert sorted(os.listdir(target.parent)) == ["mesh.glb"]


def test_atomic_path_failure_leaves_old_file(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["a.txt"]


def test_atomic_path_refuses_overwrite(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(OutputExistsError, match="a.txt"):
        with atomic_path(target, overwrite=False):
            pass


def test_atomic_dir(tmp_path):
    out = tmp_path / "result"
    with atomic_dir(out) as tmp:
        (tmp / "x.txt").write_text("1")
    assert (out / "x.txt").read_text() == "1"
    with pytest.raises(OutputExistsError):
        with atomic_dir(out):
            pass
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(out, overwrite=True) as tmp:
            (tmp / "y.txt").write_text("2")
            raise KeyboardInterrupt
    assert sorted(os.listdir(out)) == ["x.txt"]
    with atomic_dir(out, overwrite=True) as tmp:
        (tmp / "y.txt").write_text("2")
    assert sorted(os.listdir(out)) == ["y.txt"]
    assert sorted(os.listdir(tmp_path)) == ["result"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_dir(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    with pytest.raises(OutputNotWritableError, match="not writable"):
        check_writable_dir(locked)


def test_output_path_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(OutputNotWritableError):
        check_writable_dir(f)
    with pytest.raises(OutputNotWritableError):
        check_writable_dir(f / "sub")


def test_atomic_files_get_ordinary_permissions(tmp_path):
    from sharpit.atomic import write_bytes_atomic

    old = os.umask(0o022)
    try:
        path = write_bytes_atomic(tmp_path / "out.bin", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
