"""What one job's stages share: the job's context, and each item's state while the job runs."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from stenopod.formats import TranscriptDocument
from stenopod.schema import ErrorCode, ItemError, ItemResult, JobInput, JobItem, Timestamps
from stenopod.storage import ObjectStore, S3Credentials

from .chunking import Chunk
from .engines.base import SAMPLE_RATE, BatchLimits, Engine, Transcript
from .engines.registry import Diarizer
from .progress import Progress
from .settings import JobSettings, decode_processes_for

log = logging.getLogger("stenopod.handler.job")


@dataclass
class ItemState:
    """One item's state while the job runs; its result is what the answer reports."""

    spec: JobItem
    result: ItemResult
    audio: np.ndarray | None = None
    chunks: list[Chunk] | None = None  # where the engine call cuts the audio, planned in preparation
    peak: float = 0.0  # the loudest sample, measured in preparation
    transcript: Transcript | None = None
    document: TranscriptDocument | None = None
    audio_done_s: float = 0.0  # seconds of its audio transcribed so far (chunk by chunk when long)

    @property
    def ok(self) -> bool:
        return self.result.status == "ok"

    @property
    def audio_s(self) -> float:
        """Seconds of decoded audio the item holds (0 before decoding and after a failure)."""
        return self.audio.size / SAMPLE_RATE if self.audio is not None else 0.0

    def fail(self, code: ErrorCode, message: str) -> None:
        self.result.status = "error"
        self.result.error = ItemError(code=code, message=message)
        self.release()

    def release(self) -> None:
        """Drop what the item holds in memory once it is no longer needed."""
        self.audio = None
        self.chunks = None
        self.transcript = None
        self.document = None


@dataclass
class JobContext:
    """The job's input and what it runs with, once its engine and output store are known."""

    job_id: str
    input: JobInput
    settings: JobSettings
    engine: Engine
    store: ObjectStore | None
    credentials: S3Credentials | None
    progress: Progress
    total: int
    done: int = 0
    diarizer: Diarizer | None = None  # jobs with diarize
    audio_done_s: float = 0.0  # seconds of the job's audio transcribed so far, for progress updates

    @property
    def word_timestamps(self) -> bool:
        return self.input.timestamps == Timestamps.word

    @property
    def engine_word_timestamps(self) -> bool:
        """Word times from the engine: when the answer shows them, and when speakers are assigned
        word by word (handler.speaker_assign); the answer then leaves them out unless asked."""
        # Subtitle cues are cut from word times too (stenopod.subtitles).
        return self.word_timestamps or self.diarizer is not None or self.input.subtitles is not None

    def decode_processes(self) -> int:
        return decode_processes_for(self.settings, self.engine.device)

    def batch_limits(self) -> BatchLimits:
        """The engine's own batch limits; STENOPOD_BATCH_SIZE, when set, caps the items per call."""
        limits = self.engine.batch_limits()
        if self.settings.batch_size is not None:
            return BatchLimits(min(limits.max_items, self.settings.batch_size), limits.max_audio_s)
        return limits

    def add_audio(self, item: ItemState, seconds: float) -> None:
        """Count seconds more of item's audio as transcribed, never past its length."""
        seconds = max(0.0, min(seconds, item.audio_s - item.audio_done_s))
        item.audio_done_s += seconds
        self.audio_done_s += seconds

    def report(self, item: ItemState, stage: str) -> None:
        # audio_done_s lets a client's progress move during one long item (a chunk at a time).
        payload = {
            "item": item.spec.id,
            "stage": stage,
            "done": self.done,
            "total": self.total,
            "audio_done_s": round(self.audio_done_s, 3),
        }
        try:
            self.progress(payload)
        except Exception as error:  # progress is a courtesy; it never fails the job
            log.warning("progress update failed: %s", type(error).__name__)
