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

    def smoke_test(self) -> None:
        """Run one second of silence through the model so a broken GPU or model fails at start-up."""
        self.transcribe([np.zeros(SAMPLE_RATE, dtype=np.float32)])
