"""Reading training pairs: a map-style dataset over the shards and a resumable batch order.

The batch order is a pure function of ``(seed, epoch)``, so the position of a run is one integer
(the number of batches consumed) and a resumed run sees exactly the batches it would have seen.
A run resumed with another global batch size continues from the same point of the same epoch
(:func:`reshape_position`).
"""

from __future__ import annotations

import logging
import signal
import zlib
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Union

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from sharpit.errors import ConfigError, CorruptFileError, InputError, SharpItError

from .shards import IndexEntry, check_grid, decode_png, read_index, read_member, scan_shards

__all__ = ["PairDataset", "EpochBatchSampler", "make_dataloader", "reshape_position"]

logger = logging.getLogger("sharpit.training")


class PairDataset(Dataset):
    """The pairs written by ``training.prepare_pairs`` in ``root``.

    Items are dicts: ``"target"`` and ``"coarse"`` (3, 3t, 2t) float32 grids in [0, 1] with
    ``t = tile_size``, ``"caption"`` (str, "" when none) and ``"object_id"`` (str).

    Every shard is checked once at construction (:func:`~training.shards.scan_shards`: present,
    every member inside the file, end-of-archive marker), so a truncated copy fails at start
    rather than hours into a run.

    Args:
        root: the pairs folder.
        tile_size: the expected tile size; None accepts the dataset's own.
        skip_corrupt_shards: leave out the pairs of shards that fail the check (each is logged)
            instead of raising.
    Raises:
        InputError: no pairs, or samples of different tile sizes (naming the first offender).
        ConfigError: ``tile_size`` differs from the dataset's.
        CorruptFileError: a shard fails the check (and ``skip_corrupt_shards`` is False).
    """

    def __init__(self, root: Union[str, Path], tile_size: Optional[int] = None, skip_corrupt_shards: bool = False):
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputError(f"{self.root}: training data folder not found; create it with "
                             "`python -m training.prepare_pairs`")
        self.entries: List[IndexEntry] = read_index(self.root)
        self.skipped_shards: Dict[str, str] = {}
        problems = scan_shards(self.root, self.entries)
        if problems:
            counts = {shard: sum(e.shard == shard for e in self.entries) for shard in problems}
            if not skip_corrupt_shards:
                shard, problem = next(iter(problems.items()))
                more = f" (and {len(problems) - 1} more shard(s))" if len(problems) > 1 else ""
                raise CorruptFileError(self.root / shard, f"{problem}; it holds {counts[shard]} indexed pair(s){more}. "
                                                          "Restore the file, or pass --skip_corrupt_shards to train "
                                                          "without its pairs")
            for shard, problem in problems.items():
                logger.warning("skipping %s: %s (%d pairs left out)", self.root / shard, problem, counts[shard])
            self.entries = [e for e in self.entries if e.shard not in problems]
            self.skipped_shards = problems
        if not self.entries:
            raise InputError(f"{self.root}: the dataset is empty (no pairs listed in index-r*.jsonl"
                             f"{' outside corrupt shards' if problems else ''}); run "
                             "`python -m training.prepare_pairs` and check its failed-r*.jsonl logs")
        first = self.entries[0]
        for entry in self.entries[1:]:
            if entry.tile_size != first.tile_size:
                raise InputError(
                    f"{self.root}: mismatched grid sizes: sample {entry.object_id!r} ({entry.shard}) has "
                    f"{entry.tile_size} px tiles but {first.object_id!r} has {first.tile_size} px; "
                    "prepare every pair at one --tile_size")
        if tile_size is not None and tile_size != first.tile_size:
            raise ConfigError(f"tile_size={tile_size} but the pairs in {self.root} have {first.tile_size} px tiles")
        self.tile_size = first.tile_size

    def __len__(self) -> int:
        return len(self.entries)

    def _grid(self, entry: IndexEntry, which: str) -> torch.Tensor:
        shard, what = self.root / entry.shard, f"{which} grid of sample {entry.object_id!r}"
        try:
            grid = decode_png(read_member(self.root, entry, which))
        except (OSError, SyntaxError, ValueError, zlib.error) as exc:  # how PIL reports broken PNG data
            if isinstance(exc, SharpItError):
                raise
            raise CorruptFileError(shard, f"cannot read the {what} ({exc})") from exc
        check_grid(grid, self.tile_size, f"{what} in {shard}")
        return grid

    def __getitem__(self, index: int) -> Dict[str, object]:
        entry = self.entries[index]
        return {"target": self._grid(entry, "target"), "coarse": self._grid(entry, "coarse"),
                "caption": entry.caption, "object_id": entry.object_id}


class EpochBatchSampler(Sampler):
    """Endless batches of indices for one process, starting at a given global batch position.

    Epoch ``e`` visits ``torch.randperm(num_samples)`` drawn from a generator seeded with
    ``seed + e``, cut into global batches of ``batch_size * num_processes`` (the incomplete tail
    is dropped); process ``p`` takes the ``p``-th slice of ``batch_size`` of each global batch.

    Args:
        num_samples: dataset length.
        batch_size: per-process batch size.
        seed: base seed of the order.
        start: global batches already consumed (the resume position).
    Raises:
        InputError: the dataset holds fewer samples than one global batch.
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int, num_processes: int = 1,
                 process_index: int = 0, start: int = 0):
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.num_processes, self.process_index, self.start = num_processes, process_index, start
        self.batches_per_epoch = num_samples // (batch_size * num_processes)
        if self.batches_per_epoch < 1:
            raise InputError(f"the dataset has {num_samples} pairs, fewer than one global batch of "
                             f"{batch_size} x {num_processes} processes; add data or lower train_batch_size")

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """(num_samples,) int64 permutation visited in ``epoch``."""
        return torch.randperm(self.num_samples, generator=torch.Generator().manual_seed(self.seed + epoch))

    def __iter__(self) -> Iterator[List[int]]:
        position = self.start
        while True:
            epoch, batch = divmod(position, self.batches_per_epoch)
            order = self.epoch_order(epoch)
            global_size = self.batch_size * self.num_processes
            while batch < self.batches_per_epoch:
                lo = batch * global_size + self.process_index * self.batch_size
                yield order[lo: lo + self.batch_size].tolist()
                batch += 1
                position += 1


def reshape_position(consumed: int, num_samples: int, old_global_batch: int, new_global_batch: int,
                     new_num_samples: Optional[int] = None) -> int:
    """The position (global batches consumed) that continues ``consumed`` with another global batch size.

    ``consumed`` counts global batches of ``old_global_batch`` over a dataset of ``num_samples``
    (``new_num_samples`` when the dataset has changed since). The run stays in the same epoch,
    whose order does not depend on the batch size, and goes on from the first sample of that
    order it has not seen (rounded up to a whole batch of the new size, so no sample of the epoch
    is seen twice; at most ``new_global_batch - 1`` are left out).
    """
    new_num_samples = num_samples if new_num_samples is None else new_num_samples
    old_per_epoch = max(num_samples // old_global_batch, 1)
    new_per_epoch = new_num_samples // new_global_batch
    if new_per_epoch < 1:
        raise InputError(f"the dataset has {new_num_samples} pairs, fewer than one global batch of {new_global_batch}")
    epoch, batch = divmod(consumed, old_per_epoch)
    seen = batch * old_global_batch
    new_batch = -(-seen // new_global_batch)
    if new_batch >= new_per_epoch:
        epoch, new_batch = epoch + 1, 0
    return epoch * new_per_epoch + new_batch


class _LoadFailure:
    """A sharpit error raised in a loader worker, carried to the main process as data.

    DataLoader re-raises worker exceptions by calling their class with one message argument (which
    sharpit's path errors do not take) under a multi-line "Caught ... in DataLoader worker"
    text; carrying type, message and attributes instead gives the same error as in-process loading.
    """

    def __init__(self, exc: SharpItError):
        self.exc_type = type(exc)
        self.message = str(exc)
        self.attrs = dict(vars(exc))

    def error(self) -> SharpItError:
        exc = self.exc_type.__new__(self.exc_type)
        Exception.__init__(exc, self.message)
        vars(exc).update(self.attrs)
        return exc


class _ReportErrors(Dataset):
    """``dataset`` whose sharpit errors are returned as :class:`_LoadFailure` items (for worker processes)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        try:
            return self.dataset[index]
        except SharpItError as exc:
            return _LoadFailure(exc)


def _collate(items):
    failure = next((item for item in items if isinstance(item, _LoadFailure)), None)
    return failure if failure is not None else default_collate(items)


def _ignore_stop_signals(worker_id: int) -> None:
    """Loader workers leave SIGINT/SIGTERM/SIGUSR1 to the training process, which stops cleanly after
    its step (a terminal's Ctrl-C or a scheduler's SIGTERM reaches the whole process group)."""
    for name in ("SIGINT", "SIGTERM", "SIGUSR1"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)


class _PairLoader(DataLoader):
    """A DataLoader that raises a worker's sharpit error in the main process as that same error."""

    def __iter__(self):
        for batch in super().__iter__():
            if isinstance(batch, _LoadFailure):
                raise batch.error()
            yield batch


def make_dataloader(dataset: Dataset, batch_size: int, seed: int, num_processes: int = 1, process_index: int = 0,
                    start: int = 0, num_workers: int = 0) -> DataLoader:
    """An endless :class:`DataLoader` over ``dataset`` that starts at global batch ``start``.

    With ``num_workers > 0`` a sharpit error raised while loading a sample in a worker (a corrupt
    shard, say) reaches the caller as the same exception, with the same one-line message, as
    with ``num_workers=0``; workers ignore stop signals (the training loop handles them).
    """
    sampler = EpochBatchSampler(len(dataset), batch_size, seed, num_processes, process_index, start)
    if num_workers == 0:
        return DataLoader(dataset, batch_sampler=sampler, num_workers=0, pin_memory=torch.cuda.is_available())
    return _PairLoader(_ReportErrors(dataset), batch_sampler=sampler, num_workers=num_workers, collate_fn=_collate,
                       worker_init_fn=_ignore_stop_signals, persistent_workers=False,
                       pin_memory=torch.cuda.is_available())
