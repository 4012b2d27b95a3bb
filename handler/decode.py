"""Decode an audio file to 16 kHz mono float32, at the speed of ffmpeg's own decoder.

ffmpeg's libraries (PyAV) decode; downmixing and resampling happen here, on blocks of about
BLOCK_S seconds, with soxr's streaming resampler. Handing each 26 ms mp3 frame to ffmpeg's
resampler through PyAV cost about 40 us of Python a frame: on a 44.1 kHz stereo podcast the
decoder ran at ~430x real time where its own decoding runs at ~1,100x (bench/gpu_feed.py). A GPU
worker decodes every second it transcribes, so this is the pipeline's ceiling.

Frames already at 16 kHz go through no resampler at all. A 16 kHz mono 16-bit WAV skips ffmpeg
(handler.wav).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from stenopod.schema import ErrorCode

from .engines.base import SAMPLE_RATE
from .errors import StageError
from .wav import PlainWav, probe_plain_wav, read_plain_wav

log = logging.getLogger("stenopod.handler.decode")

BLOCK_S = 10.0
# Integer sample formats as numpy does them exactly (an int times a power of two), as ffmpeg does.
_SCALES = {"u8": 1.0 / 2**7, "s16": 1.0 / 2**15, "s32": 1.0 / 2**31, "s64": 1.0 / 2**63}
_DTYPES = {
    "u8": np.uint8,
    "s16": np.int16,
    "s32": np.int32,
    "s64": np.int64,
    "flt": np.float32,
    "dbl": np.float64,
}


def decode_audio(path: Path, max_seconds: float) -> np.ndarray:
    """Decode the first audio stream of path to 16 kHz mono float32; StageError when it cannot."""
    import av  # PyAV loads its bundled ffmpeg libraries; keep that off the import of this module

    if path.stat().st_size == 0:
        raise StageError(ErrorCode.not_audio, "audio: the file is empty (0 bytes)")
    plain = probe_plain_wav(path)
    if plain is not None:
        return _decode_plain_wav(path, plain, max_seconds)
    try:
        container = av.open(str(path), mode="r", metadata_errors="ignore")
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as error:
        raise StageError(ErrorCode.not_audio, f"audio: not a readable audio file ({short(error)})") from None
    with container:
        if not container.streams.audio:
            raise StageError(ErrorCode.not_audio, "audio: the file has no audio stream")
        stream = container.streams.audio[0]
        declared = _declared_seconds(container, stream)
        if declared is not None and declared > max_seconds:
            raise too_long(declared, max_seconds)
        samples = _Decoder(max_seconds).run(container, stream)
    if samples.size == 0 and declared is not None and declared >= 1.0:
        # ffmpeg skips frames it cannot decode without an error: a corrupt file must not pass for
        # silence (an "ok" empty transcript) when its header promises seconds of audio.
        raise StageError(
            ErrorCode.not_audio, f"audio: the stream declares {declared:.0f} s but none of it decodes"
        )
    return samples


def _decode_plain_wav(path: Path, layout: PlainWav, max_seconds: float) -> np.ndarray:
    """A 16 kHz mono 16-bit WAV without ffmpeg (handler.wav), with the same caps and errors."""
    declared = layout.declared_seconds()
    if declared is not None and declared > max_seconds:
        raise too_long(declared, max_seconds)
    max_samples = int(max_seconds * SAMPLE_RATE)
    samples = read_plain_wav(path, layout, max_samples)
    if samples.size > max_samples:
        raise too_long(samples.size / SAMPLE_RATE, max_seconds)
    if samples.size == 0 and declared is not None and declared >= 1.0:
        raise StageError(
            ErrorCode.not_audio, f"audio: the file declares {declared:.0f} s but holds none of it"
        )
    return samples


def peak(audio: np.ndarray) -> float:
    """The loudest sample's magnitude (0 for no samples), without a temporary array of the audio."""
    return float(max(audio.max(), -audio.min())) if audio.size else 0.0


def frame_kind(frame: Any) -> tuple[str, int, int]:
    """What frames must share to be converted together: sample format, channels, rate."""
    return frame.format.name, frame.layout.nb_channels, frame.sample_rate


class FrameBlock:
    """Decoded frames of one kind, gathered in ffmpeg's own FIFO and converted in one go.

    Converting each 26 ms mp3 frame to an array on its own (to_ndarray) cost half as much again
    as decoding it; the FIFO copies frames together in C, and one array comes out per block.
    """

    def __init__(self) -> None:
        self._fifo: Any = None

    @property
    def samples(self) -> int:
        """Samples per channel gathered so far."""
        return 0 if self._fifo is None else int(self._fifo.samples)

    def add(self, frame: Any) -> None:
        import av

        if self._fifo is None:
            self._fifo = av.AudioFifo()
        # The FIFO would check timestamps for gaps; callers check positions themselves.
        frame.pts = None
        self._fifo.write(frame)

    def take_mono(self, kind: tuple[str, int, int]) -> np.ndarray:
        """Everything gathered, as one float32 channel; the block is empty afterwards."""
        if self._fifo is None or self._fifo.samples == 0:
            return np.zeros(0, dtype=np.float32)
        frame = self._fifo.read()
        self._fifo = None
        return to_mono(channel_rows(frame, kind), kind)


def channel_rows(frame: Any, kind: tuple[str, int, int]) -> list[np.ndarray]:
    """A frame's samples, one array per channel, read from its planes in place: to_ndarray()
    would stack them into a copy first (half the cost of the downmix)."""
    name, channels, _ = kind
    dtype = _DTYPES[name.rstrip("p")]
    count = frame.samples
    if name.endswith("p"):
        return [np.frombuffer(plane, dtype, count) for plane in frame.planes[:channels]]
    packed = np.frombuffer(frame.planes[0], dtype, count * channels)  # L R L R ...
    return [packed[channel::channels] for channel in range(channels)]


def to_mono(rows: list[np.ndarray], kind: tuple[str, int, int]) -> np.ndarray:
    """One row per channel (channel_rows) as one float32 channel."""
    name, channels, _ = kind
    base = name.rstrip("p")
    if base in ("flt", "dbl"):
        rows = [row.astype(np.float32, copy=False) for row in rows]
    elif base == "u8":
        rows = [(row.astype(np.float32) - 128.0) * np.float32(_SCALES["u8"]) for row in rows]
    else:
        rows = [row.astype(np.float32) * np.float32(_SCALES[base]) for row in rows]
    if channels == 1:
        return rows[0]
    if channels == 2:
        # ffmpeg's own stereo downmix (each side at -3 dB), as faster-whisper's decode_audio gives
        # the plain loop: the same loudness, so the same log-mel features.
        mono = np.add(rows[0], rows[1])
        mono *= np.float32(np.sqrt(0.5))
        return mono
    return np.stack(rows).mean(axis=0, dtype=np.float32)


class _Decoder:
    """Frames -> blocks of mono samples -> 16 kHz, stopping as soon as the length cap is passed."""

    def __init__(self, max_seconds: float) -> None:
        self.max_seconds = max_seconds
        self.max_samples = int(max_seconds * SAMPLE_RATE)
        self.out: list[np.ndarray] = []
        self.total = 0  # output samples so far
        self.kind: tuple[str, int, int] | None = None
        self.block = FrameBlock()  # frames of self.kind, not yet converted
        self.resampler: Any = None

    def run(self, container: Any, stream: Any) -> np.ndarray:
        import av

        try:
            for frame in container.decode(stream):
                kind = frame_kind(frame)
                if kind != self.kind:
                    self._flush(last=self.kind is not None and kind[2] != self.kind[2])
                    self._start(kind)
                self.block.add(frame)
                # Stop as soon as the cap is passed: a file with a missing or lying duration header
                # must not make the worker decode (and hold in memory) days of audio.
                pending = self.total + self.block.samples * SAMPLE_RATE / kind[2]
                if pending > self.max_samples + SAMPLE_RATE:
                    raise too_long(pending / SAMPLE_RATE, self.max_seconds)
                if self.block.samples >= BLOCK_S * kind[2]:
                    self._flush(last=False)
        except av.FFmpegError as error:
            if self.total + self.block.samples == 0:
                raise StageError(ErrorCode.not_audio, f"audio: cannot decode ({short(error)})") from None
            # A file truncated mid-stream still yields what decoded before the damage.
            log.warning("decode stopped early after %.1f s: %s", self.total / SAMPLE_RATE, short(error))
        self._flush(last=True)
        if self.total > self.max_samples:
            raise too_long(self.total / SAMPLE_RATE, self.max_seconds)
        return np.concatenate(self.out) if self.out else np.zeros(0, dtype=np.float32)

    def _start(self, kind: tuple[str, int, int]) -> None:
        import soxr

        rate_changed = self.kind is None or kind[2] != self.kind[2]
        self.kind = kind
        if rate_changed:
            rate = kind[2]
            self.resampler = (
                None
                if rate == SAMPLE_RATE
                else soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
            )

    def _flush(self, *, last: bool) -> None:
        """Convert the block; last: the stream ends, or its rate changes, so the resampler drains."""
        if self.block.samples:
            assert self.kind is not None
            samples = self.block.take_mono(self.kind)
        elif last and self.resampler is not None:
            samples = np.zeros(0, dtype=np.float32)
        else:
            return
        if self.resampler is not None:
            samples = self.resampler.resample_chunk(samples, last=last)
        if samples.size:
            self.out.append(samples)
            self.total += samples.size


def _declared_seconds(container: Any, stream: Any) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000  # AV_TIME_BASE units
    return None


def too_long(seconds: float, cap: float) -> StageError:
    return StageError(
        ErrorCode.too_long,
        f"audio: {seconds:.0f} s is longer than the {cap:.0f} s limit (STENOPOD_MAX_AUDIO_SECONDS)",
    )


def short(error: Exception) -> str:
    # FFmpegError's text names the temp file; the user only needs the reason.
    reason = str(getattr(error, "strerror", None) or error or type(error).__name__)
    filename = getattr(error, "filename", None)
    if filename:
        reason = reason.replace(str(filename), "")
    return reason.strip(" :'").splitlines()[0][:200] if reason.strip() else type(error).__name__
