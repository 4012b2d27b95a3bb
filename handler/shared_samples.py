"""A float32 array that decode-pool processes write into by path, instead of pickling samples back.

A 20-minute podcast is 77 MB of 16 kHz float32. Sent back from the decoding processes it was
pickled, piped, unpickled and copied into place: four copies on the cores that should be decoding,
all before the engine's first call. Here the job's process maps one anonymous memory file
(memfd; a deleted temporary file where there is none) and each stretch is written into its place
once, by the process that decoded it. The array lives as long as anything refers to it; the file
has no name left once closed.
"""

from __future__ import annotations

import mmap
import os
import sys
import tempfile
from dataclasses import dataclass

import numpy as np

_ITEM = np.dtype(np.float32).itemsize


@dataclass(frozen=True)
class Target:
    """Where other processes write: the path, and the inode that proves it is still this file (a
    closed descriptor's number, and so its /proc path, can name another file later)."""

    path: str
    inode: int


class SharedSamples:
    """`size` float32 samples (zeros), writable from other processes through write_at(target, ...)
    until close(); `array` stays valid after it."""

    def __init__(self, size: int) -> None:
        if size <= 0:
            raise ValueError(f"size must be positive, got {size}")
        self._unlink: str | None = None
        if hasattr(os, "memfd_create") and sys.platform.startswith("linux"):
            self._fd = os.memfd_create("stenopod-audio", os.MFD_CLOEXEC)
            path = f"/proc/{os.getpid()}/fd/{self._fd}"
        else:
            self._fd, path = tempfile.mkstemp(prefix="stenopod-audio-")
            self._unlink = path
        os.ftruncate(self._fd, size * _ITEM)
        self.target = Target(path, os.fstat(self._fd).st_ino)
        # The mapping, not the file, holds the samples: the array keeps it alive after close().
        self.array = np.frombuffer(mmap.mmap(self._fd, size * _ITEM), dtype=np.float32)

    def close(self) -> None:
        """No more writers: the file goes; the array stays."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._unlink is not None:
            os.unlink(self._unlink)
            self._unlink = None


def write_at(target: Target, offset: int, samples: np.ndarray) -> bool:
    """samples into the SharedSamples at target from sample `offset` on; False when it is gone or
    they do not fit there (the caller sends them back instead)."""
    try:
        with open(target.path, "r+b") as file:
            status = os.fstat(file.fileno())
            # The size checked here: numpy would grow the file, past the end of the owner's mapping.
            if status.st_ino != target.inode or (offset + samples.size) * _ITEM > status.st_size:
                return False
            mapped = np.memmap(
                file, dtype=np.float32, mode="r+", offset=offset * _ITEM, shape=(samples.size,)
            )
            mapped[:] = samples
            del mapped  # a shared mapping: the owner sees the samples without a flush
    except (OSError, ValueError):
        return False
    return True
