"""What every benchmark script shares: CUDA synchronisation and peak memory.

Scripts import it as ``from benchutil import ...`` (they run as ``python benchmarks/NAME.py``, so
this folder is on ``sys.path``).
"""

from __future__ import annotations

import resource
from typing import Union

import torch

Device = Union[str, torch.device]


def sync(device: Device) -> None:
    """Wait for queued CUDA work, so wall-clock times include it (no-op on the CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_bytes(device: Device) -> int:
    """Peak memory: ``torch.cuda.max_memory_allocated`` on CUDA, the process's max RSS on the CPU
    (Linux reports it in KiB)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
