"""Training-pair shards: webdataset-compatible tar files plus a JSONL index per writer rank.

Layout of a pairs folder::

    pairs-r000-000000.tar   # <id>.target.png, <id>.coarse.png, <id>.json per object
    pairs-r000-000001.tar
    index-r000.jsonl        # one line per finished object (see :class:`IndexEntry`)
    failed-r000.jsonl       # assets that could not be turned into a pair, with the reason

The index stores each PNG's byte offset and size inside its tar, which gives the training
dataset random access without unpacking. Grids are 8-bit RGB PNGs, 3 tiles high and 2 wide,
white background; the tile size is stored per object.

Progress is kept per object (:class:`ShardWriter`). Each pair is appended to the open tar at the
position of the tar's end-of-archive marker, followed by a new marker (two zero blocks, padded to a
whole 10 KiB record as ``tarfile`` writes it); the tar is ``fsync``-ed, and only then is the
object's line appended to its rank's index and the index ``fsync``-ed. The index line is the
commit record: an object is finished once its line is on disk, every indexed member is then
intact in its shard, and a finished shard is a complete tar. A kill (SIGKILL, power loss) can
leave only

* an index line cut short (no final newline),
* after the last indexed object of the shard being written, an unfinished object (complete but
  not yet indexed, or partly written, without an end-of-archive marker),
* a new shard whose first object never finished.

Rerunning the same command resumes: before it writes, the writer of each rank (and, for ranks
beyond the new number of processes, process 0; :func:`repair_rank`) cuts an unfinished index
line, cuts each shard back to the end of its last indexed object and writes a fresh
end-of-archive marker there (a shard already ending there is not touched), deletes the rank's
newest shard if it holds no indexed object and at most the one unfinished object (any other
shard that no index lists is left alone), and removes temporaries left by earlier versions,
which wrote whole shards atomically. So a kill loses at most the object in flight, and no member
is ever duplicated or left corrupt in a shard that training reads. A writer never appends to a
shard of an earlier run: every run (every resume) starts a new shard, so a shard changes only
while its writer runs (and, after a kill, by the repair above), at the price of one partly
filled shard per resume. A completed shard and index are byte for byte what the earlier
whole-shard writer produced, so folders written by either are read and resumed alike.

Between a kill and the rerun, the shard that was being written may end in a partly written
member; training's start-up check (:func:`scan_shards`) then reports it as truncated, like a cut
copy, and the rerun (even with nothing left to render) repairs it. One process per rank: the
writer holds an exclusive lock (``flock``, POSIX) on its index file, so a second run writing the
same rank into the same folder stops with an error instead of cutting the first one's open shard.
Durability costs two ``fsync`` calls per object (tar, index) and one of the folder per new file,
little next to rendering an object (see :mod:`sharpit.atomic` for what is skipped where).
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import tarfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO, Dict, Iterable, List, Optional, Tuple

import torch
from PIL import Image

from sharpit.atomic import _fsync_dir, check_writable_dir
from sharpit.errors import CorruptFileError, InputError, OutputNotWritableError
from sharpit.grid import GRID_COLS, GRID_ROWS, pil_to_tensor, tensor_to_pil

__all__ = ["IndexEntry", "ShardWriter", "read_index", "finished_ids", "log_failure", "decode_png",
           "encode_png", "check_grid", "read_member", "scan_shards", "repair_rank", "repair_ranks_from"]

logger = logging.getLogger("sharpit.training.shards")

_INDEX_GLOB = "index-r*.jsonl"
_TAR_BLOCK = 512  # tar headers and data are laid out in blocks; two zero blocks end the archive
_TAR_RECORD = tarfile.RECORDSIZE  # tarfile pads a closed archive to a multiple of this
_SHARD_RE = re.compile(r"^pairs-r(\d+)-(\d+)\.tar$")
_INDEX_RE = re.compile(r"^index-r(\d+)\.jsonl$")


@dataclass(frozen=True)
class IndexEntry:
    """One training pair as listed in an index file.

    Attributes:
        object_id: the asset's id (file stem, e.g. the Objaverse uid).
        caption: its caption ("" when the captions file had none).
        shard: the tar file name, relative to the pairs folder.
        tile_size: side of one view in pixels; the grids are (3 * tile_size) x (2 * tile_size).
        target, coarse: ``(offset, size)`` in bytes of the PNGs inside ``shard``.
    """

    object_id: str
    caption: str
    shard: str
    tile_size: int
    target: Tuple[int, int]
    coarse: Tuple[int, int]


def check_grid(grid: torch.Tensor, tile_size: int, what: str) -> None:
    """Raise :class:`InputError` unless ``grid`` is (3, 3 * tile_size, 2 * tile_size)."""
    expected = (3, GRID_ROWS * tile_size, GRID_COLS * tile_size)
    if tuple(grid.shape) != expected:
        raise InputError(f"{what}: expected a grid of shape {expected} (tile size {tile_size}), "
                         f"got {tuple(grid.shape)}")


def encode_png(grid: torch.Tensor) -> bytes:
    """(3, H, W) float grid in [0, 1] -> PNG bytes (8-bit RGB)."""
    buf = io.BytesIO()
    tensor_to_pil(grid).save(buf, format="PNG")
    return buf.getvalue()


def decode_png(data: bytes) -> torch.Tensor:
    """PNG bytes -> (3, H, W) float32 in [0, 1] (RGB)."""
    with Image.open(io.BytesIO(data)) as image:
        return pil_to_tensor(image.convert("RGB"))


def _round_up(n: int) -> int:
    return -(-n // _TAR_BLOCK) * _TAR_BLOCK


def _end_of_archive(position: int) -> bytes:
    """What ends a tar whose last member ends at ``position``: two zero blocks, then zeros up to a
    whole record (as :mod:`tarfile` closes an archive)."""
    size = 2 * _TAR_BLOCK
    return bytes(size + (-(position + size)) % _TAR_RECORD)


def _tar_member(name: str, data: bytes) -> bytes:
    """One ustar member: its header block, ``data`` and the zero padding to a whole block."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    try:
        header = info.tobuf(tarfile.USTAR_FORMAT, tarfile.ENCODING, "surrogateescape")
    except ValueError as exc:  # e.g. a name longer than ustar allows
        raise InputError(f"cannot store {name!r} in a tar shard ({exc})") from exc
    return header + data + bytes(_round_up(len(data)) - len(data))


def _rank_shards(root: Path, rank: int) -> Dict[int, Path]:
    """``{shard number: path}`` of the shard files of ``rank`` in ``root``."""
    return {int(m.group(2)): p for p in root.iterdir()
            if (m := _SHARD_RE.match(p.name)) and int(m.group(1)) == rank}


def _open_index(path: Path) -> BinaryIO:
    """Open (create) a rank's index for appending and take its exclusive lock.

    Raises:
        OutputNotWritableError: another process holds the lock (it is writing the same rank).
    """
    created = not path.exists()
    try:
        f = open(path, "ab")
    except OSError as exc:
        raise OutputNotWritableError(path, f"cannot open the index ({exc.strerror or exc})") from exc
    try:
        import fcntl
    except ImportError:  # Windows: no lock
        fcntl = None
    if fcntl is not None:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise OutputNotWritableError(path, "another prepare_pairs process is writing this rank into the same "
                                               "folder (it holds this index's lock); wait for it to end or stop it")
        except OSError as exc:  # a file system without locks: go on unprotected
            logger.warning("%s: cannot lock the index (%s); make sure no other process writes this rank", path,
                           exc.strerror or exc)
    if created:
        _fsync_dir(path.parent)
    return f


def _cut_unfinished_line(index: BinaryIO, path: Path) -> None:
    """Remove the bytes after the index's last newline: an index line whose write never finished."""
    data = path.read_bytes()
    keep = data.rfind(b"\n") + 1
    if keep == len(data):
        return
    os.ftruncate(index.fileno(), keep)
    os.fsync(index.fileno())
    logger.warning("%s: removed an unfinished last line (%d bytes) left by an interrupted run", path,
                   len(data) - keep)


def _damaged(path: Path, what: str) -> CorruptFileError:
    return CorruptFileError(path, f"{what}; the shard is damaged. Restore it, or delete it and the lines of its "
                                  "objects in the index to render them again")


def _object_end(f: BinaryIO, path: Path, size: int, entry: IndexEntry) -> int:
    """Byte just after the last member (``<id>.json``) of ``entry``'s object in its shard."""
    position = _round_up(entry.coarse[0] + entry.coarse[1])
    f.seek(position)
    block = f.read(_TAR_BLOCK)
    try:
        info = tarfile.TarInfo.frombuf(block, tarfile.ENCODING, "surrogateescape") if len(block) == _TAR_BLOCK else None
    except tarfile.HeaderError:
        info = None
    end = position + _TAR_BLOCK + _round_up(info.size) if info is not None else size + 1
    if info is None or info.name != f"{entry.object_id}.json" or end > size:
        raise _damaged(path, f"the {entry.object_id}.json member of a finished object is missing or cut short "
                             f"(byte {position})")
    return end


def _repair_shard(path: Path, entries: List[IndexEntry]) -> bool:
    """Cut ``path`` back to the end of its last indexed object and end it there; True when it changed."""
    with open(path, "r+b") as f:
        size = os.fstat(f.fileno()).st_size
        for entry in entries:
            for which in ("target", "coarse"):
                offset, length = getattr(entry, which)
                if offset < _TAR_BLOCK or offset + length > size:
                    raise _damaged(path, f"the {which} grid of the finished object {entry.object_id!r} needs bytes "
                                         f"{offset}..{offset + length} but the file has {size}")
        end = _object_end(f, path, size, max(entries, key=lambda e: e.coarse[0]))
        f.seek(end)
        tail = f.read()
        if len(tail) >= 2 * _TAR_BLOCK and tail.count(0) == len(tail):
            return False  # already ends with the end-of-archive marker
        f.seek(end)
        f.truncate()
        f.write(_end_of_archive(end))
        f.flush()
        os.fsync(f.fileno())
    logger.warning("%s: cut back to its last finished object (%d byte(s) of an unfinished one removed)", path,
                   len(tail))
    return True


def _at_most_one_object(path: Path) -> bool:
    """True when the tar ``path`` holds at most one object's three members (the last maybe cut short)."""
    position = 0
    with open(path, "rb") as f:
        for _ in range(4):
            f.seek(position)
            block = f.read(_TAR_BLOCK)
            if len(block) < _TAR_BLOCK or block.count(0) == _TAR_BLOCK:
                return True
            try:
                info = tarfile.TarInfo.frombuf(block, tarfile.ENCODING, "surrogateescape")
            except tarfile.HeaderError:
                return True  # a header never finished
            position += _TAR_BLOCK + _round_up(info.size)
    return False


def _repair_locked(root: Path, rank: int, index: BinaryIO, index_path: Path) -> int:
    _cut_unfinished_line(index, index_path)
    entries = list(_entries_of(index_path))
    by_shard: Dict[str, List[IndexEntry]] = {}
    for entry in entries:
        by_shard.setdefault(entry.shard, []).append(entry)
    shards = _rank_shards(root, rank)
    removed = False
    for number, path in sorted(shards.items()):
        if path.name in by_shard:
            try:
                _repair_shard(path, by_shard[path.name])
            except CorruptFileError as exc:  # no writer touches it again; training's check reports it
                logger.warning("%s; left as it is", exc)
        elif number == max(shards) and _at_most_one_object(path):
            path.unlink()  # the newest shard; its first object never finished
            removed = True
            logger.warning("%s: removed (an interrupted run created it but finished no object in it)", path)
        else:
            logger.warning("%s: listed in no index; left alone", path)
    for leftover in [*root.glob(f".pairs-r{rank:03d}-*.tmp.tar"), *root.glob(f".index-r{rank:03d}.*.tmp.jsonl")]:
        leftover.unlink()  # temporaries of the earlier whole-shard writer (sharpit.atomic names)
        removed = True
    if removed:
        _fsync_dir(root)
    for name in sorted(set(by_shard) - {p.name for p in shards.values()}):
        logger.warning("%s: listed in %s but missing", root / name, index_path.name)
    numbers = set(_rank_shards(root, rank)) | {int(m.group(2)) for name in by_shard if (m := _SHARD_RE.match(name))}
    return max(numbers, default=-1) + 1


def repair_rank(root, rank: int) -> int:
    """Bring ``rank``'s index and shards in ``root`` back to its last finished object (see the module
    docstring) and return the number of the rank's next shard; holds the rank's lock meanwhile.

    Raises:
        OutputNotWritableError: another process is writing this rank.
        CorruptFileError: the index has a bad line before its last. (A shard whose indexed objects are
            not intact is logged and left as it is: no writer appends to it again, and training's
            start-up check reports it.)
    """
    root = Path(root)
    index_path = root / f"index-r{int(rank):03d}.jsonl"
    with _open_index(index_path) as index:
        return _repair_locked(root, int(rank), index, index_path)


def repair_ranks_from(root, first_rank: int) -> List[int]:
    """:func:`repair_rank` every rank ``>= first_rank`` that has an index in ``root`` (ranks of an
    earlier run with more processes, which no process of this run writes); returns them."""
    root = Path(root)
    ranks = sorted(int(m.group(1)) for p in root.glob(_INDEX_GLOB) if (m := _INDEX_RE.match(p.name)))
    ranks = [r for r in ranks if r >= first_rank]
    for rank in ranks:
        repair_rank(root, rank)
    return ranks


class ShardWriter:
    """Appends pairs to tar shards of one rank, durably one object at a time (see the module docstring).

    Opening repairs what an interrupted run of the same rank left (:func:`repair_rank`) and holds
    the rank's lock until :meth:`close`. The first :meth:`add` starts a new shard.

    Args:
        root: the pairs folder (created if needed).
        rank: the writer's process index; it names the files, so ranks never collide.
        samples_per_shard: objects per tar; the next object after that many starts a new one.
    Raises:
        OutputNotWritableError: the folder cannot be written, or another process writes this rank.
        CorruptFileError: the rank's index has a bad line (see :func:`repair_rank`).
    """

    def __init__(self, root, rank: int = 0, samples_per_shard: int = 1000):
        if samples_per_shard < 1:
            raise InputError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
        self.root = check_writable_dir(root)
        self.rank = int(rank)
        self.samples_per_shard = samples_per_shard
        self.index_path = self.root / f"index-r{self.rank:03d}.jsonl"
        self._index: Optional[BinaryIO] = _open_index(self.index_path)
        try:
            self._next_shard = _repair_locked(self.root, self.rank, self._index, self.index_path)
        except BaseException:
            self._index.close()
            raise
        self._shard: Optional[BinaryIO] = None
        self._shard_path: Optional[Path] = None
        self._count = 0   # objects in the open shard
        self._end = 0     # where the open shard's end-of-archive marker starts
        self._failed = False
        self.written = 0

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _start_shard(self) -> None:
        self._close_shard()
        path = self.root / f"pairs-r{self.rank:03d}-{self._next_shard:06d}.tar"
        self._shard = open(path, "xb")
        _fsync_dir(self.root)  # the name must be durable before an index line refers to it
        self._shard_path, self._count, self._end = path, 0, 0
        self._next_shard += 1

    def _close_shard(self) -> None:
        if self._shard is not None:
            self._shard.close()
            self._shard = None

    def add(self, object_id: str, caption: str, target: torch.Tensor, coarse: torch.Tensor, tile_size: int) -> None:
        """Write one pair and record it as finished: ``target`` and ``coarse`` are
        (3, 3 * tile_size, 2 * tile_size) in [0, 1]. When this returns the pair is on disk and indexed.

        Raises:
            InputError: a grid of the wrong shape or an id tar cannot store (nothing is written).
            OutputNotWritableError: writing failed (a full disk, say); the writer is then unusable
                and a rerun repairs what it left.
        """
        if self._failed or self._index is None:
            raise OutputNotWritableError(self.index_path, "this writer is closed or failed earlier")
        check_grid(target, tile_size, f"target grid of {object_id!r}")
        check_grid(coarse, tile_size, f"coarse grid of {object_id!r}")
        meta = json.dumps({"object_id": object_id, "caption": caption, "tile_size": tile_size}).encode()
        target_png, coarse_png = encode_png(target), encode_png(coarse)
        members = [_tar_member(f"{object_id}.target.png", target_png),
                   _tar_member(f"{object_id}.coarse.png", coarse_png), _tar_member(f"{object_id}.json", meta)]
        try:
            if self._shard is None or self._count >= self.samples_per_shard:
                self._start_shard()
        except OSError as exc:
            self._failed = True
            raise OutputNotWritableError(self.root, f"cannot start a new shard ({exc.strerror or exc})") from exc
        start = self._end
        body = b"".join(members)
        entry = IndexEntry(object_id, caption, self._shard_path.name, tile_size,
                           (start + _TAR_BLOCK, len(target_png)),
                           (start + len(members[0]) + _TAR_BLOCK, len(coarse_png)))
        line = (json.dumps(asdict(entry)) + "\n").encode()
        try:
            self._shard.seek(start)
            self._shard.write(body + _end_of_archive(start + len(body)))
            self._shard.truncate()
            self._shard.flush()
            os.fsync(self._shard.fileno())
            self._index.write(line)  # the commit record: only after the members are on disk
            self._index.flush()
            os.fsync(self._index.fileno())
        except OSError as exc:
            self._failed = True
            raise OutputNotWritableError(self._shard_path, f"cannot write the pair of {object_id!r} "
                                                           f"({exc.strerror or exc})") from exc
        self._end = start + len(body)
        self._count += 1
        self.written += 1

    def flush(self) -> None:
        """End the open shard (it is already complete on disk); the next pair starts a new one."""
        self._close_shard()

    def close(self) -> None:
        """Close the open shard and the index, releasing the rank's lock (idempotent)."""
        self._close_shard()
        if self._index is not None:
            self._index.close()
            self._index = None


def log_failure(root, rank: int, object_id: str, path: str, reason: str) -> None:
    """Append one broken asset to ``failed-r<rank>.jsonl`` (informational; reruns retry it)."""
    line = json.dumps({"object_id": object_id, "path": path, "reason": reason, "time": time.time()})
    with open(Path(root) / f"failed-r{int(rank):03d}.jsonl", "a", encoding="utf-8") as f:
        f.write(line + "\n")


def _entries_of(path: Path) -> Iterable[IndexEntry]:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorruptFileError(path, f"not a UTF-8 index ({exc})") from exc
    lines = text.splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            yield IndexEntry(object_id=str(raw["object_id"]), caption=str(raw.get("caption") or ""),
                             shard=str(raw["shard"]), tile_size=int(raw["tile_size"]),
                             target=tuple(raw["target"]), coarse=tuple(raw["coarse"]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            if number == len(lines) and not text.endswith("\n"):
                raise CorruptFileError(path, f"line {number} is unfinished (prepare_pairs was interrupted); rerun "
                                             "the same prepare_pairs command to repair the folder") from exc
            raise CorruptFileError(path, f"line {number} is not a valid index entry ({exc})") from exc


def read_index(root) -> List[IndexEntry]:
    """All entries of every ``index-r*.jsonl`` in ``root``, ordered by rank file then line.

    An object listed twice (e.g. by two runs with different world sizes) keeps its first entry.
    """
    root = Path(root)
    seen: Dict[str, IndexEntry] = {}
    for path in sorted(root.glob(_INDEX_GLOB)):
        for entry in _entries_of(path):
            seen.setdefault(entry.object_id, entry)
    return list(seen.values())


def finished_ids(root) -> set:
    """Ids of the objects already written to ``root`` (empty when it does not exist)."""
    root = Path(root)
    return {e.object_id for e in read_index(root)} if root.is_dir() else set()


def read_member(root: Path, entry: IndexEntry, which: str) -> bytes:
    """Raw PNG bytes of ``entry``'s ``which`` ("target" or "coarse") grid.

    Raises:
        CorruptFileError: the shard ends before the member does.
    """
    offset, size = getattr(entry, which)
    with open(root / entry.shard, "rb") as f:
        f.seek(offset)
        data = f.read(size)
    if len(data) != size:
        raise CorruptFileError(root / entry.shard, f"truncated: the {which} grid of {entry.object_id!r} needs bytes "
                                                   f"{offset}..{offset + size} but the file ends at "
                                                   f"{offset + len(data)}")
    return data


def _shard_problem(path: Path, entries: List[IndexEntry]) -> str:
    """Why the tar ``path`` cannot serve ``entries`` ("" when it can).

    Cheap: one stat, then from the end of the last indexed member a walk over the few tar headers
    that follow (the last object's .json) to the end-of-archive marker, two zero blocks that a
    cut-short write or copy lacks. Nothing is decoded.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "missing (listed in the index but not on disk)"
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    end = 0
    for entry in entries:
        for which in ("target", "coarse"):
            offset, length = getattr(entry, which)
            if offset < _TAR_BLOCK or offset + length > size:
                return (f"truncated: the {which} grid of {entry.object_id!r} needs bytes {offset}..{offset + length} "
                        f"but the file has {size}")
            end = max(end, offset + length)
    position = _round_up(end)
    try:
        with open(path, "rb") as f:
            for _ in range(64):  # the members after the last indexed one: normally one .json
                f.seek(position)
                block = f.read(_TAR_BLOCK)
                if len(block) < _TAR_BLOCK:
                    return f"truncated: the tar ends at byte {size} without its end-of-archive marker"
                if block.count(0) == _TAR_BLOCK:
                    if f.read(_TAR_BLOCK).count(0) != _TAR_BLOCK:
                        return f"truncated: the tar ends at byte {size} without its end-of-archive marker"
                    return ""
                try:
                    info = tarfile.TarInfo.frombuf(block, tarfile.ENCODING, "surrogateescape")
                except tarfile.HeaderError as exc:
                    return f"damaged: no valid tar header at byte {position} ({exc})"
                position += _TAR_BLOCK + _round_up(info.size)
                if position > size:
                    return f"truncated: member {info.name!r} ends after the end of the file ({size} bytes)"
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    return ""


def scan_shards(root, entries: Iterable[IndexEntry]) -> Dict[str, str]:
    """Check that every shard the ``entries`` use is whole: ``{shard name: problem}`` of those that are not.

    A shard is whole when it exists, every indexed member lies inside the file, and the members
    after the last indexed one lead to the tar's end-of-archive marker (two zero blocks), which a
    cut-short copy or write lacks.
    """
    root = Path(root)
    by_shard: Dict[str, List[IndexEntry]] = {}
    for entry in entries:
        by_shard.setdefault(entry.shard, []).append(entry)
    problems = {}
    for shard, members in sorted(by_shard.items()):
        problem = _shard_problem(root / shard, members)
        if problem:
            problems[shard] = problem
    return problems
