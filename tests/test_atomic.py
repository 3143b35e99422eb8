"""Atomic file and folder writes."""

import json
import os
import stat
import subprocess
import sys
import textwrap

import pytest

from sharpit.atomic import atomic_dir, atomic_path, check_writable_dir, is_temporary
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


def _record_fsyncs(monkeypatch):
    """Make os.fsync and os.replace log (kind, inode) / ("replace", dst) events, in order."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        st = os.fstat(fd)
        events.append(("dir" if stat.S_ISDIR(st.st_mode) else "file", st.st_ino))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.fspath(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


@pytest.mark.skipif(os.name != "posix", reason="fsync is done on POSIX only")
def test_atomic_path_fsyncs_file_then_parent_after_rename(tmp_path, monkeypatch):
    from sharpit.atomic import write_bytes_atomic

    events = _record_fsyncs(monkeypatch)
    target = write_bytes_atomic(tmp_path / "out.bin", b"data")
    file_ino, dir_ino = target.stat().st_ino, tmp_path.stat().st_ino
    assert events == [("file", file_ino), ("replace", str(target)), ("dir", dir_ino)]


@pytest.mark.skipif(os.name != "posix", reason="fsync is done on POSIX only")
@pytest.mark.parametrize("existing", [False, True])
def test_atomic_dir_fsyncs_contents_then_parent_after_rename(tmp_path, monkeypatch, existing):
    out = tmp_path / "result"
    if existing:
        out.mkdir()
        (out / "stale.txt").write_text("old")
    events = _record_fsyncs(monkeypatch)
    with atomic_dir(out, overwrite=True) as tmp:
        (tmp / "a.txt").write_text("1")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.txt").write_text("2")
        os.symlink("a.txt", tmp / "link")          # links are not followed or fsync-ed twice
    inode = lambda p: p.stat().st_ino  # noqa: E731
    last_replace = max(i for i, e in enumerate(events) if e[0] == "replace")
    before, after = events[:last_replace], events[last_replace + 1:]
    assert events[last_replace] == ("replace", str(out))
    assert sorted(e for e in before if e[0] == "file") == sorted(
        ("file", inode(p)) for p in (out / "a.txt", out / "sub" / "b.txt"))
    synced_dirs = {e[1] for e in before if e[0] == "dir"}
    assert {inode(out), inode(out / "sub")} <= synced_dirs
    assert after == [("dir", inode(tmp_path))]
    assert sorted(os.listdir(out)) == ["a.txt", "link", "sub"] and os.listdir(tmp_path) == ["result"]


def test_atomic_writes_never_touch_the_umask(tmp_path, monkeypatch):
    from sharpit.atomic import write_bytes_atomic

    def forbidden(*_):
        raise AssertionError("os.umask changes process-wide state")

    monkeypatch.setattr(os, "umask", forbidden)
    write_bytes_atomic(tmp_path / "a.bin", b"x")
    with atomic_dir(tmp_path / "d") as tmp:
        (tmp / "f").write_text("y")


def _run_python(code: str) -> dict:
    """Run ``code`` in a fresh interpreter (so umask changes stay there); it prints one JSON line."""
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         timeout=120, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_atomic_outputs_get_the_permissions_of_plain_open_and_mkdir(tmp_path):
    modes = _run_python(f"""
        import json, os, stat
        from pathlib import Path
        import torch
        from safetensors.torch import save_file
        from sharpit.atomic import atomic_dir, atomic_path, write_bytes_atomic
        root, res = Path({str(tmp_path)!r}), {{}}
        mode = lambda p: stat.S_IMODE(os.lstat(p).st_mode)
        for mask in (0o022, 0o077, 0o002):
            os.umask(mask)
            d = root / oct(mask)
            d.mkdir()
            with open(d / "plain.txt", "w") as f:
                f.write("x")
            os.mkdir(d / "plain_dir")
            write_bytes_atomic(d / "bytes.bin", b"x")
            with atomic_path(d / "opened.txt") as tmp:
                with open(tmp, "w") as f:
                    f.write("x")
            with atomic_dir(d / "folder") as tmp:
                (tmp / "inner.txt").write_text("x")
            with atomic_dir(d / "folder", overwrite=True) as tmp:
                (tmp / "inner.txt").write_text("y")
                (tmp / "sub").mkdir()
                save_file({{"x": torch.zeros(2)}}, str(tmp / "sub" / "w.safetensors"))   # safetensors >= 0.8: 0600
            with atomic_path(d / "latent.safetensors") as tmp:
                save_file({{"x": torch.zeros(2)}}, str(tmp))
            res[oct(mask)] = {{name: mode(d / name) for name in
                              ("plain.txt", "plain_dir", "bytes.bin", "opened.txt", "folder", "folder/inner.txt",
                               "folder/sub/w.safetensors", "latent.safetensors")}}
        print(json.dumps(res))
    """)
    for mask, expect_file, expect_dir in (("0o22", 0o644, 0o755), ("0o77", 0o600, 0o700), ("0o2", 0o664, 0o775)):
        got = modes[mask]
        assert (got["plain.txt"], got["plain_dir"]) == (expect_file, expect_dir)
        assert got["bytes.bin"] == got["opened.txt"] == got["folder/inner.txt"] == got["plain.txt"], got
        assert got["folder/sub/w.safetensors"] == got["latent.safetensors"] == got["plain.txt"], got
        assert got["folder"] == got["plain_dir"], got


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_concurrent_thread_never_sees_a_changed_umask(tmp_path):
    result = _run_python(f"""
        import json, os, stat, sys, threading
        from pathlib import Path
        from sharpit.atomic import atomic_dir, write_bytes_atomic
        sys.setswitchinterval(1e-6)   # switch threads as often as possible to expose any window
        os.umask(0o022)
        root = Path({str(tmp_path)!r})
        (root / "w").mkdir()
        (root / "a").mkdir()
        stop, seen = threading.Event(), {{"modes": set(), "umasks": set(), "files": 0}}
        status = Path("/proc/self/status")

        def watcher():
            i = 0
            while not stop.is_set():
                p = root / "w" / str(i % 50)
                with open(p, "w"):
                    pass
                seen["modes"].add(stat.S_IMODE(p.stat().st_mode))
                p.unlink()
                if status.exists():
                    for line in status.read_text().splitlines():
                        if line.startswith("Umask:"):
                            seen["umasks"].add(line.split()[1])
                i += 1
            seen["files"] = i

        t = threading.Thread(target=watcher)
        t.start()
        try:
            for i in range(2000):
                write_bytes_atomic(root / "a" / f"{{i}}.bin", b"x")
                if i % 200 == 0:
                    with atomic_dir(root / "a" / f"d{{i}}") as tmp:
                        (tmp / "f").write_text("x")
        finally:
            stop.set()
            t.join()
        print(json.dumps({{"modes": sorted(seen["modes"]), "umasks": sorted(seen["umasks"]),
                           "files": seen["files"]}}))
    """)
    assert result["files"] > 0
    assert result["modes"] == [0o644]
    assert set(result["umasks"]) <= {"0022"}


def test_is_temporary_names_exactly_the_helpers_temporaries(tmp_path):
    with atomic_path(tmp_path / "config.json") as tmp:
        assert is_temporary(tmp)
    with atomic_path(tmp_path / "README") as tmp:          # no suffix
        assert is_temporary(tmp)
    with atomic_dir(tmp_path / "run.v2") as tmp:
        assert is_temporary(tmp)
    import tempfile

    assert is_temporary(tempfile.mkdtemp(prefix=".run.", suffix=".old", dir=tmp_path))   # an overwrite's old copy
    for name in ("config.json", ".config.json", ".git", ".config.abc.tmp.json", "x.0123456789ab.partial",
                 ".x.0123456789ab.partial.bak"):
        assert not is_temporary(tmp_path / name), name
