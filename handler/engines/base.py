"""The Engine interface: load once at worker start-up, transcribe batches of 16 kHz mono audio."""

from __future__ import annotations

import queue
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

SAMPLE_RATE = 16_000


@dataclass
class WordTiming:
    start: float
    end: float
    text: str


@dataclass
class SegmentTiming:
    start: float
    end: float
    text: str
    words: list[WordTiming] = field(default_factory=list)


@dataclass
class Transcript:
    """One audio's transcript; times in seconds from the start of that audio."""

    text: str
    segments: list[SegmentTiming]
    language: str | None = None


@dataclass(frozen=True)
class BatchLimits:
    """How much one transcribe() call should carry for the engine to run at its best.

    The job pipeline fills each engine call up to these limits (whichever is reached first), and
    long-form chunking hands the engine its chunks in calls of the same size: a call that is too
    small leaves batch slots (or CPU streams) idle, one that is too large holds more decoded audio
    in memory than the engine can use at once.
    """

    max_items: int
    max_audio_s: float


class Arrivals:
    """Audios handed to an engine call one by one while the job is still fetching the rest.

    The job puts each audio as soon as it is decoded and closes the intake when the call is full;
    the engine iterates (in its own thread) and may start work on what has arrived. idle_s is the
    time the engine sat waiting for an audio with nothing to do: input on the critical path, which
    the job reports with the rest of it.
    """

    _END = object()

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self.idle_s = 0.0  # written by the engine's thread only, read once the call has ended

    def put(self, audio: np.ndarray) -> None:
        self._queue.put(audio)

    def close(self) -> None:
        """No more audios; safe to call more than once."""
        self._queue.put(self._END)

    def add_idle(self, seconds: float) -> None:
        self.idle_s += seconds

    def next(self, *, idle: bool = True) -> np.ndarray | None:
        """The next audio, blocking until it arrives; None once the intake is closed. idle=False
        when the engine still had work running while it waited (the wait is not idle time)."""
        started = time.perf_counter()
        value = self._queue.get()
        if idle:
            self.add_idle(time.perf_counter() - started)
        if value is self._END:
            self._queue.put(self._END)  # stays closed for any later next()
            return None
        assert isinstance(value, np.ndarray)
        return value

    def __iter__(self) -> Iterator[np.ndarray]:
        while (audio := self.next()) is not None:
            yield audio


class EngineError(Exception):
    """The engine failed on this batch. gpu_failed marks CUDA errors that poison the process."""

    def __init__(self, message: str, gpu_failed: bool = False) -> None:
        super().__init__(message)
        self.gpu_failed = gpu_failed


class Engine(ABC):
    """A loaded model. Constructed once per worker process; transcribe() is called per batch."""

    model_id: str
    engine_name: str
    device: str

    @abstractmethod
    def transcribe(
        self,
        audios: list[np.ndarray],
        language: str | None = None,
        word_timestamps: bool = False,
    ) -> list[Transcript]:
        """Transcribe float32 16 kHz mono arrays; one Transcript per input, in order."""

    # True when transcribe_arriving() starts work before its last audio arrives; the job then
    # streams its first call's audios in as they are decoded instead of waiting for all of them.
    streams_arrivals: bool = False

    def transcribe_arriving(
        self,
        arrivals: Arrivals,
        language: str | None = None,
        word_timestamps: bool = False,
    ) -> list[Transcript]:
        """transcribe() of audios that arrive one by one (each up to 30 s); one Transcript per audio,
        in the order they arrived. This default waits for all of them, all of it idle time."""
        return self.transcribe(list(arrivals), language=language, word_timestamps=word_timestamps)

    def batch_limits(self) -> BatchLimits:
        """What one transcribe() call should carry; engines with a batch sweet spot override it."""
        return BatchLimits(max_items=8, max_audio_s=8 * 30.0)

    def smoke_test(self) -> None:
        """Run one second of silence through the model so a broken GPU or model fails at start-up."""
        self.transcribe([np.zeros(SAMPLE_RATE, dtype=np.float32)])
