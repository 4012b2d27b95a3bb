"""A long recording decoded as fixed stretches, each in its own process, joined exactly.

A GPU worker's job of a few hour-long podcasts would otherwise wait for one core to decode a whole
file before the engine hears its first second. So a file longer than two SEGMENT_S is cut, by time,
into stretches of SEGMENT_S (fixed by the file alone: the same samples on any machine, whatever
its core count); each is decoded in a decode-pool process from a seek WARMUP_S before its start
(the decoder's look-back: mp3's bit reservoir, the codec's overlap), and resampled to 16 kHz with
PAD of margin on both sides. Each stretch also decodes CHECK beyond its end; where that differs from
the next stretch's own start the container's seeking is not sample-exact (a VBR mp3 without a seek
table), and the file is decoded start to end instead (SeamMismatch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .decode import BLOCK_S, SAMPLE_RATE, FrameBlock, frame_kind, peak
from .shared_samples import AVAILABLE as SHARED
from .shared_samples import SharedSamples, Target, write_at

SEGMENT_S = 120.0
WARMUP_S = 1.0
PAD_S = 0.05  # the resampler's margin: its filter reaches a few ms around each sample
CHECK_S = 0.1
SEAM_TOLERANCE = 1e-4  # two decodes of the same frames agree to float rounding


class SeamMismatch(Exception):
    """The stretches do not line up sample for sample: decode the file in one pass instead."""


@dataclass(frozen=True)
class Layout:
    """Where a file's stretches start, in samples at its own rate."""

    rate: int
    seconds: float  # as the container declares it
    starts: tuple[int, ...]  # the first is 0; the last stretch runs to the end of the file
    pad: int  # source samples of margin: a whole number of 16 kHz samples
    check: int


def plan_segments(path: Path) -> Layout | None:
    """The stretches of a file worth decoding in parallel; None for a short or unusual file."""
    import av

    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.audio:
                return None
            stream = container.streams.audio[0]
            rate = int(stream.rate or 0)
            if stream.duration is None or stream.time_base is None or rate <= 0:
                return None
            seconds = float(stream.duration * stream.time_base)
    except (av.FFmpegError, UnicodeDecodeError, ValueError):
        return None
    if seconds < 2 * SEGMENT_S:
        return None
    # A unit of source samples that is a whole number of 16 kHz samples: cuts fall on both grids.
    unit = rate // math.gcd(rate, SAMPLE_RATE)
    step = max(1, round(SEGMENT_S * rate / unit)) * unit
    count = int(seconds * rate) // step
    pad = math.ceil(PAD_S * rate / unit) * unit
    return Layout(
        rate, seconds, tuple(index * step for index in range(count)), pad, math.ceil(CHECK_S * rate)
    )


@dataclass
class Stretch:
    """One stretch at 16 kHz, and the source samples around its two seams, to check them.

    samples is empty when they were written into the file's SharedSamples (length says how many)."""

    samples: np.ndarray
    length: int
    peak: float  # measured where the stretch is decoded, in parallel, not over the joined file
    head: np.ndarray  # [start - pad, start + pad + check) at the source rate (empty for the first)
    tail: np.ndarray  # [end - pad, end + pad + check) (empty for the last)


def decode_stretch(path: str, layout: Layout, index: int, target: Target | None = None) -> Stretch:
    """Stretch `index` of the file, decoded and resampled; written into the SharedSamples at
    `target` when given and it fits there, else sent back. Runs in a decode-pool process."""
    import soxr

    start = layout.starts[index]
    last = index == len(layout.starts) - 1
    lo = max(0, start - layout.pad)
    source = _decode_range(
        path, layout, start, lo, None if last else layout.starts[index + 1] + layout.pad + layout.check
    )
    resampled = soxr.resample(source, layout.rate, SAMPLE_RATE, quality="HQ")
    skip = (start - lo) * SAMPLE_RATE // layout.rate
    seam = (start - lo) + layout.pad + layout.check
    head = source[: seam if index else 0]
    if last:
        samples, tail = resampled[skip:], source[:0]
    else:
        end = layout.starts[index + 1]
        samples = resampled[skip : skip + (end - start) * SAMPLE_RATE // layout.rate]
        tail = source[end - layout.pad - lo :]
    samples = samples.astype(np.float32, copy=False)
    offset = start * SAMPLE_RATE // layout.rate
    written = target is not None and write_at(target, offset, samples)
    return Stretch(samples[:0] if written else samples, samples.size, peak(samples), head, tail)


def _decode_range(path: str, layout: Layout, start: int, lo: int, hi: int | None) -> np.ndarray:
    """Mono source samples [lo, hi) (hi None: to the end), decoding from a seek before start."""
    import av

    block = FrameBlock()  # frames not yet converted, from the first one holding sample lo
    mono: list[np.ndarray] = []  # converted every BLOCK_S: arrays of minutes thrash the caches
    kind: tuple[str, int, int] | None = None
    first_kept = None  # the source index of raw's first sample
    position = None  # the source index after the last frame kept
    with av.open(path, metadata_errors="ignore") as container:
        stream = container.streams.audio[0]
        # Positions count from the stream's first sample (an mp3's first frame starts after the
        # encoder's delay, not at 0), as a decode from the start would.
        origin = stream.start_time or 0
        if start > 0:
            seek_s = max(0.0, start / layout.rate - WARMUP_S)
            container.seek(origin + int(seek_s / stream.time_base), stream=stream, backward=True)
        # Integer arithmetic: a Fraction product per 26 ms frame costs as much as decoding it.
        numerator, denominator = stream.time_base.numerator * layout.rate, stream.time_base.denominator
        for frame in container.decode(stream):
            this_kind = frame_kind(frame)
            if frame.pts is None or (kind is not None and this_kind != kind):
                raise SeamMismatch("a frame without a position, or of another format")
            first = ((frame.pts - origin) * numerator * 2 + denominator) // (2 * denominator)
            if first + frame.samples <= lo:
                continue  # warm-up, before the stretch
            if position is None:
                if first > lo:
                    raise SeamMismatch(f"samples {lo}..{first} missing after the seek")
                first_kept, kind = first, this_kind
            elif first != position:
                raise SeamMismatch(f"frames not contiguous at sample {position}")
            position = first + frame.samples
            block.add(frame)
            if block.samples >= BLOCK_S * layout.rate:
                mono.append(block.take_mono(this_kind))
            if hi is not None and position >= hi:
                break
    if kind is None or first_kept is None or position is None or kind[2] != layout.rate:
        raise SeamMismatch("nothing decoded, or at another rate")
    if hi is not None and position < hi:
        raise SeamMismatch("the file ended before its declared length")
    mono.append(block.take_mono(kind))
    samples = np.concatenate(mono)[lo - first_kept :]
    return samples if hi is None else samples[: hi - lo]


class StretchJoin:
    """A file's stretches placed into one array as they are decoded, not copied together at the end.

    A stretch but the last has a length fixed by the layout, so its place is known before it is
    decoded: each decoding process writes its stretch straight into `target` (SharedSamples), while
    the others still decode. A stretch that did not fit there (a file longer than it declares; or
    no shared memory on this system: target None) comes back and is copied in by join(), once no
    process writes any more. join() also checks the seams (neighbours decoded alike); close() must
    come before it in any case.
    """

    def __init__(self, layout: Layout) -> None:
        self.offsets = [start * SAMPLE_RATE // layout.rate for start in layout.starts]
        # Room for the declared length and a second more; a file longer than it declares grows.
        size = max(self.offsets[-1] + 1, round((layout.seconds + 1) * SAMPLE_RATE))
        self._shared = SharedSamples(size) if SHARED else None
        self.target = self._shared.target if self._shared is not None else None
        self._out = self._shared.array if self._shared is not None else np.empty(size, np.float32)
        self._sent_back: list[tuple[int, np.ndarray]] = []
        self._seams: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(self.offsets)
        self._end = 0

    def add(self, index: int, stretch: Stretch) -> None:
        start = self.offsets[index]
        end = start + stretch.length
        last = index == len(self.offsets) - 1
        if not last and end != self.offsets[index + 1]:
            raise SeamMismatch(f"stretch {index} has {stretch.length} samples, not {end - start}")
        if stretch.samples.size:
            self._sent_back.append((start, stretch.samples))
        self._seams[index] = (stretch.head, stretch.tail)
        if last:
            self._end = end

    def join(self) -> np.ndarray:
        """The whole file, after checking that neighbours decoded their seam alike."""
        seams = self._seams
        if any(seam is None for seam in seams):
            raise SeamMismatch("a stretch is missing")
        for index in range(len(seams) - 1):
            mine, theirs = seams[index][1], seams[index + 1][0]  # type: ignore[index]
            if mine.size != theirs.size or np.max(np.abs(mine - theirs), initial=0.0) > SEAM_TOLERANCE:
                raise SeamMismatch(f"stretches {index} and {index + 1} disagree at their seam")
        if self._end > self._out.size:
            # Grown only now: a copy made while other stretches were still being written into the
            # shared array would miss them.
            self._out = np.concatenate([self._out, np.empty(self._end - self._out.size, np.float32)])
        for start, samples in self._sent_back:
            self._out[start : start + samples.size] = samples
        self._sent_back = []
        return self._out[: self._end]

    def close(self) -> None:
        """No more stretches come: the shared file goes (the joined array stays)."""
        if self._shared is not None:
            self._shared.close()
