"""A float32 array that decode-pool processes write into by path, instead of pickling samples back.

A 20-minute podcast is 77 MB of 16 kHz float32. Sent back from the decoding processes it was
pickled, piped, unpickled and copied into place: four copies on the cores that should be decoding,
all before the engine's first call. Here the job's process maps one anonymous memory file (a
memfd, Linux's; the worker's image is Linux) and each stretch is written into its place once, by
the process that decoded it. The array lives as long as anything refers to it; the file is gone
once closed.
"""

from __future__ import annotations

import mmap
import os
import sys
from dataclasses import dataclass

import numpy as np

_ITEM = np.dtype(np.float32).itemsize
AVAILABLE = sys.platform.startswith("linux") and hasattr(os, "memfd_create")


@dataclass(frozen=True)
class Target:
    """Where other processes write: the path, and the device and inode that prove it is still this
    file (a closed descriptor's number, and so its /proc path, can name another file later)."""

    path: str
    device: int
    inode: int


class SharedSamples:
    """`size` float32 samples (zeros), writable from other processes through write_at(target, ...)
    until close(); `array` stays valid after it. Linux only (AVAILABLE)."""

    def __init__(self, size: int) -> None:
        if size <= 0:
            raise ValueError(f"size must be positive, got {size}")
        self._fd = os.memfd_create("stenopod-audio", os.MFD_CLOEXEC)
        os.ftruncate(self._fd, size * _ITEM)
        status = os.fstat(self._fd)
        self.target = Target(f"/proc/{os.getpid()}/fd/{self._fd}", status.st_dev, status.st_ino)
        # The mapping, not the file, holds the samples: the array keeps it alive after close().
        self.array = np.frombuffer(mmap.mmap(self._fd, size * _ITEM), dtype=np.float32)

    def close(self) -> None:
        """No more writers: the file goes; the array stays."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def write_at(target: Target, offset: int, samples: np.ndarray) -> bool:
    """samples into the SharedSamples at target from sample `offset` on; False when it is gone or
    they do not fit there (the caller sends them back instead)."""

    def same_file(status: os.stat_result) -> bool:
        # The size checked too: numpy would grow the file, past the end of the owner's mapping.
        return (status.st_dev, status.st_ino) == (target.device, target.inode) and (
            offset + samples.size
        ) * _ITEM <= status.st_size

    try:
        # Checked before opening (another file under a reused number is never opened) and after.
        if not same_file(os.stat(target.path)):
            return False
        with open(os.open(target.path, os.O_RDWR | os.O_NOCTTY), "r+b") as file:
            if not same_file(os.fstat(file.fileno())):
                return False
            mapped = np.memmap(
                file, dtype=np.float32, mode="r+", offset=offset * _ITEM, shape=(samples.size,)
            )
            mapped[:] = samples
            del mapped  # a shared mapping: the owner sees the samples without a flush
    except (OSError, ValueError):
        return False
    return True
