"""Training-pair shards: webdataset-compatible tar files plus a JSONL index per writer rank.

Layout of a pairs folder::

    pairs-r000-000000.tar   # <id>.target.png, <id>.coarse.png, <id>.json per object
    pairs-r000-000001.tar
    index-r000.jsonl        # one line per finished object (see :class:`IndexEntry`)
    failed-r000.jsonl       # assets that could not be turned into a pair, with the reason

Every tar is written atomically and only then listed in its rank's index (itself rewritten
atomically), so an interrupted run leaves at most an unindexed tar, whose objects a rerun
renders again. The index stores each PNG's byte offset and size inside its tar, which gives the
training dataset random access without unpacking. Grids are 8-bit RGB PNGs, 3 tiles high and 2
wide, white background; the tile size is stored per object.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Tuple

import torch
from PIL import Image

from sharpit.atomic import atomic_path, check_writable_dir
from sharpit.errors import CorruptFileError, InputError
from sharpit.grid import GRID_COLS, GRID_ROWS, pil_to_tensor, tensor_to_pil

__all__ = ["IndexEntry", "ShardWriter", "read_index", "finished_ids", "log_failure", "decode_png",
           "encode_png", "check_grid", "read_member", "scan_shards"]

_INDEX_GLOB = "index-r*.jsonl"
_TAR_BLOCK = 512  # tar headers and data are laid out in blocks; two zero blocks end the archive
_SHARD_RE = re.compile(r"^pairs-r(\d+)-(\d+)\.tar$")


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


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


class ShardWriter:
    """Buffers pairs and writes them as tar shards for one rank (see the module docstring).

    Args:
        root: the pairs folder (created if needed).
        rank: the writer's process index; it names the files, so ranks never collide.
        samples_per_shard: objects per tar; a partial shard is written by :meth:`close`.
    """

    def __init__(self, root, rank: int = 0, samples_per_shard: int = 1000):
        if samples_per_shard < 1:
            raise InputError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
        self.root = check_writable_dir(root)
        self.rank = int(rank)
        self.samples_per_shard = samples_per_shard
        self.index_path = self.root / f"index-r{self.rank:03d}.jsonl"
        self._pending: List[Tuple[str, str, int, bytes, bytes]] = []
        used = [int(m.group(2)) for p in self.root.iterdir()
                if (m := _SHARD_RE.match(p.name)) and int(m.group(1)) == self.rank]
        self._next_shard = max(used, default=-1) + 1
        self.written = 0

    def add(self, object_id: str, caption: str, target: torch.Tensor, coarse: torch.Tensor, tile_size: int) -> None:
        """Queue one pair: ``target`` and ``coarse`` are (3, 3 * tile_size, 2 * tile_size) in [0, 1]."""
        check_grid(target, tile_size, f"target grid of {object_id!r}")
        check_grid(coarse, tile_size, f"coarse grid of {object_id!r}")
        self._pending.append((object_id, caption, tile_size, encode_png(target), encode_png(coarse)))
        if len(self._pending) >= self.samples_per_shard:
            self.flush()

    def flush(self) -> None:
        """Write the queued pairs as one tar, then list them in the index (both atomically)."""
        if not self._pending:
            return
        name = f"pairs-r{self.rank:03d}-{self._next_shard:06d}.tar"
        entries = []
        with atomic_path(self.root / name, overwrite=False) as tmp:
            with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
                for object_id, caption, tile, target_png, coarse_png in self._pending:
                    meta = json.dumps({"object_id": object_id, "caption": caption, "tile_size": tile}).encode()
                    _tar_add(tar, f"{object_id}.target.png", target_png)
                    _tar_add(tar, f"{object_id}.coarse.png", coarse_png)
                    _tar_add(tar, f"{object_id}.json", meta)
            with tarfile.open(tmp, "r") as tar:
                offsets = {m.name: (m.offset_data, m.size) for m in tar.getmembers()}
            for object_id, caption, tile, _, _ in self._pending:
                entries.append(IndexEntry(object_id, caption, name, tile, offsets[f"{object_id}.target.png"],
                                          offsets[f"{object_id}.coarse.png"]))
        old = self.index_path.read_text(encoding="utf-8") if self.index_path.exists() else ""
        lines = "".join(json.dumps(asdict(e)) + "\n" for e in entries)
        with atomic_path(self.index_path) as tmp:
            tmp.write_text(old + lines, encoding="utf-8")
        self.written += len(entries)
        self._next_shard += 1
        self._pending = []

    def close(self) -> None:
        """Write any partial shard."""
        self.flush()


def log_failure(root, rank: int, object_id: str, path: str, reason: str) -> None:
    """Append one broken asset to ``failed-r<rank>.jsonl`` (informational; reruns retry it)."""
    line = json.dumps({"object_id": object_id, "path": path, "reason": reason, "time": time.time()})
    with open(Path(root) / f"failed-r{int(rank):03d}.jsonl", "a", encoding="utf-8") as f:
        f.write(line + "\n")


def _entries_of(path: Path) -> Iterable[IndexEntry]:
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            yield IndexEntry(object_id=str(raw["object_id"]), caption=str(raw.get("caption") or ""),
                             shard=str(raw["shard"]), tile_size=int(raw["tile_size"]),
                             target=tuple(raw["target"]), coarse=tuple(raw["coarse"]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
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


def _round_up(n: int) -> int:
    return -(-n // _TAR_BLOCK) * _TAR_BLOCK


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
