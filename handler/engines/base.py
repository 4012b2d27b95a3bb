"""The Engine interface: load once at worker start-up, transcribe batches of 16 kHz mono audio."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

SAMPLE_RATE = 16_000


@dataclass
class WordTiming:
    start: float
    end: float
    text: str
    speaker: str | None = None  # set by handler.speaker_assign when the job asks for diarization


@dataclass
class SegmentTiming:
    start: float
    end: float
    text: str
    words: list[WordTiming] = field(default_factory=list)
    speaker: str | None = None


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

    def batch_limits(self) -> BatchLimits:
        """What one transcribe() call should carry; engines with a batch sweet spot override it."""
        return BatchLimits(max_items=8, max_audio_s=8 * 30.0)

    def smoke_test(self) -> None:
        """Run one second of silence through the model so a broken GPU or model fails at start-up."""
        self.transcribe([np.zeros(SAMPLE_RATE, dtype=np.float32)])
