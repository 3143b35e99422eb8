"""Reading training pairs: a map-style dataset over the shards and a resumable batch order.

The batch order is a pure function of ``(seed, epoch)``, so the position of a run is one integer
(the number of batches consumed) and a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterator, List, Optional, Union

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from sharpit.errors import ConfigError, CorruptFileError, InputError

from .shards import IndexEntry, check_grid, decode_png, read_index, read_member

__all__ = ["PairDataset", "EpochBatchSampler", "make_dataloader"]


class PairDataset(Dataset):
    """The pairs written by ``training.prepare_pairs`` in ``root``.

    Items are dicts: ``"target"`` and ``"coarse"`` (3, 3t, 2t) float32 grids in [0, 1] with
    ``t = tile_size``, ``"caption"`` (str, "" when none) and ``"object_id"`` (str).

    Args:
        root: the pairs folder.
        tile_size: the expected tile size; None accepts the dataset's own.
    Raises:
        InputError: no pairs, or samples of different tile sizes (naming the first offender).
        ConfigError: ``tile_size`` differs from the dataset's.
    """

    def __init__(self, root: Union[str, Path], tile_size: Optional[int] = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputError(f"{self.root}: training data folder not found; create it with "
                             "`python -m training.prepare_pairs`")
        self.entries: List[IndexEntry] = read_index(self.root)
        if not self.entries:
            raise InputError(f"{self.root}: the dataset is empty (no pairs listed in index-r*.jsonl); run "
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
        what = f"{which} grid of sample {entry.object_id!r} in {self.root / entry.shard}"
        try:
            grid = decode_png(read_member(self.root, entry, which))
        except OSError as exc:
            raise CorruptFileError(self.root / entry.shard, f"cannot read the {what} ({exc})") from exc
        check_grid(grid, self.tile_size, what)
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


def make_dataloader(dataset: Dataset, batch_size: int, seed: int, num_processes: int = 1, process_index: int = 0,
                    start: int = 0, num_workers: int = 0) -> DataLoader:
    """An endless :class:`DataLoader` over ``dataset`` that starts at global batch ``start``."""
    sampler = EpochBatchSampler(len(dataset), batch_size, seed, num_processes, process_index, start)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers,
                      persistent_workers=False, pin_memory=torch.cuda.is_available())
