"""16 kHz mono 16-bit PCM WAV read straight into numpy, without ffmpeg.

This is the model's own format and what most recording pipelines and exports write for speech.
Opening a WAV with PyAV costs ~5 ms of CPU before a sample is read (ffmpeg probes the stream by
decoding into it), then the samples pass through its resampler frame by frame: for a short clip
that is most of the worker's decode time, all of it on the critical path of a job's first engine
call. The samples come out exactly as ffmpeg's s16 -> float conversion makes them (x / 32768), so
the transcript does not depend on which path read the file. Anything else (other rates, channels,
sample formats, RF64, odd headers) is left to PyAV: read_plain_wav answers None.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .engines.base import SAMPLE_RATE

WAVE_FORMAT_PCM = 0x0001
WAVE_FORMAT_EXTENSIBLE = 0xFFFE
# The PCM sub-format GUID of WAVE_FORMAT_EXTENSIBLE (KSDATAFORMAT_SUBTYPE_PCM), after its first 2 bytes.
PCM_SUBFORMAT_TAIL = bytes.fromhex("000000001000800000aa00389b71")
# A data chunk of this size (or 0) is a header written before the length was known (a live
# capture): ffmpeg reads such a chunk to the end of the file, and so does this reader.
UNKNOWN_SIZES = (0, 0xFFFFFFFF)
SCALE = np.float32(1.0 / 32768.0)


@dataclass(frozen=True)
class PlainWav:
    """Where a plain WAV's samples are, and how many its header declares (None: to end of file)."""

    data_offset: int
    declared_bytes: int | None

    def declared_seconds(self) -> float | None:
        return None if self.declared_bytes is None else self.declared_bytes / 2 / SAMPLE_RATE


def probe_plain_wav(path: Path) -> PlainWav | None:
    """The layout of a 16 kHz mono 16-bit PCM WAV, or None for any other file."""
    with path.open("rb") as file:
        head = file.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        plain = False
        while True:
            chunk = file.read(8)
            if len(chunk) < 8:
                return None  # no data chunk: let ffmpeg say what is wrong
            name, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if name == b"fmt ":
                plain = _is_plain_format(file, size)
                if not plain:
                    return None
                continue
            if name == b"data":
                if not plain:
                    return None  # data before fmt: unusual enough to leave to ffmpeg
                declared = None if size in UNKNOWN_SIZES else size
                return PlainWav(file.tell(), declared)
            file.seek(size + (size & 1), 1)  # chunks are padded to an even length


def _is_plain_format(file: BinaryIO, size: int) -> bool:
    body = file.read(size + (size & 1))
    if size < 16 or len(body) < 16:
        return False
    tag, channels, rate, _byte_rate, block_align, bits = struct.unpack("<HHIIHH", body[:16])
    if tag == WAVE_FORMAT_EXTENSIBLE:
        if size < 40 or len(body) < 40:
            return False
        valid_bits = struct.unpack("<H", body[18:20])[0]
        subformat = body[24:40]
        if subformat[2:] != PCM_SUBFORMAT_TAIL or struct.unpack("<H", subformat[:2])[0] != WAVE_FORMAT_PCM:
            return False
        if valid_bits not in (0, 16):
            return False
        tag = WAVE_FORMAT_PCM
    return (
        tag == WAVE_FORMAT_PCM and channels == 1 and rate == SAMPLE_RATE and bits == 16 and block_align == 2
    )


def read_plain_wav(path: Path, layout: PlainWav, max_samples: int | None = None) -> np.ndarray:
    """The samples of a probed plain WAV as float32 in [-1, 1): what the header declares, or what the
    file holds when it is shorter (a truncated download decodes as far as it goes, as with ffmpeg).
    Reads at most max_samples + 1 samples, so a caller can tell a file that is too long."""
    count = -1 if layout.declared_bytes is None else layout.declared_bytes // 2
    if max_samples is not None:
        count = max_samples + 1 if count < 0 else min(count, max_samples + 1)
    samples = np.fromfile(path, dtype="<i2", count=count, offset=layout.data_offset)
    return samples.astype(np.float32) * SCALE
