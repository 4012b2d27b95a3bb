"""TEST DOUBLES and helpers shared by the run_job tests (tests/handler/test_job*.py).

The engine and registry here are test doubles: they stand in for a GPU model so the pipeline's own
logic (batching, scheduling, failures, outputs) can be checked fast; real speech goes through the
real tiny.en model in test_job.py.
"""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from stenopod.schema import JobError

from handler.engines.base import (
    SAMPLE_RATE,
    BatchLimits,
    DecodeOptions,
    Engine,
    EngineError,
    SegmentTiming,
    Transcript,
    WordTiming,
    per_audio_options,
)
from handler.engines.registry import ModelUnavailable
from handler.job import run_job

POISON_SAMPLES = 12_345  # the test-double engine fails any batch holding audio of exactly this length


class TestDoubleEngine(Engine):
    """TEST DOUBLE: a fake engine that 'transcribes' by describing the audio's length.

    It records every batch it is given, and can be told to fail like a real engine would.
    """

    __test__ = False
    model_id = "test-double"
    engine_name = "test-double"
    device = "cpu"

    def __init__(self, failure: Exception | None = None) -> None:
        self.batches: list[list[int]] = []
        self.failure = failure

    def transcribe(
        self,
        audios: list[np.ndarray],
        language: str | None = None,
        word_timestamps: bool = False,
        options: Sequence[DecodeOptions] | None = None,
    ) -> list[Transcript]:
        self.batches.append([audio.size for audio in audios])
        if self.failure is not None:
            raise self.failure
        if any(audio.size == POISON_SAMPLES for audio in audios):
            raise EngineError("cannot transcribe this batch")
        out = []
        for audio, setting in zip(
            audios, per_audio_options(len(audios), language, word_timestamps, options), strict=True
        ):
            seconds = audio.size / SAMPLE_RATE
            words = [WordTiming(0.0, seconds / 2, " heard"), WordTiming(seconds / 2, seconds, " audio")]
            segment = SegmentTiming(0.0, seconds, " heard audio", words if setting.word_timestamps else [])
            out.append(Transcript(text=" heard audio", segments=[segment], language=setting.language or "en"))
        return out


class TestDoubleRegistry:
    """TEST DOUBLE of EngineRegistry: serves one TestDoubleEngine."""

    __test__ = False

    def __init__(self, engine: TestDoubleEngine | None = None) -> None:
        self.engine = engine or TestDoubleEngine()

    def available(self) -> list[str]:
        return [self.engine.model_id]

    def default_model(self) -> str:
        return self.engine.model_id

    def get(self, model_id: str | None) -> Engine:
        if model_id not in (None, self.engine.model_id):
            raise ModelUnavailable(model_id, self.available())
        return self.engine


def run(job_input: Any, registry: Any = None, **job: Any) -> dict[str, Any]:
    return asyncio.run(run_job({"id": "job-1", "input": job_input, **job}, registry or TestDoubleRegistry()))


def job_error(answer: dict[str, Any]) -> JobError:
    assert set(answer) <= {"error", "refresh_worker"}, answer
    return JobError.from_runpod_error(answer["error"])


def data_uri(path: Path) -> str:
    return "data:audio/wav;base64," + base64.b64encode(path.read_bytes()).decode()


def wav_uri(samples: int, sample: bytes = b"\x00\x01") -> str:
    """wav_of(samples, sample) as a data: URI, inline in the job input."""
    return "data:audio/wav;base64," + base64.b64encode(wav_of(samples, sample)).decode()


def wav_of(samples: int, sample: bytes = b"\x00\x01") -> bytes:
    """A 16 kHz mono 16-bit WAV of `samples` copies of one sample (b"\\0\\0": digital silence)."""
    import io
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(sample * samples)
    return buf.getvalue()


class SlowOneAtATimeTestEngine(TestDoubleEngine):
    """TEST DOUBLE: one audio per call, each call taking a while; records how many ran at once."""

    __test__ = False

    def __init__(self) -> None:
        super().__init__()
        self.running = 0
        self.most_at_once = 0
        self.lock = threading.Lock()

    def batch_limits(self) -> BatchLimits:
        return BatchLimits(max_items=1, max_audio_s=3600.0)

    def transcribe(
        self,
        audios: list[np.ndarray],
        language: str | None = None,
        word_timestamps: bool = False,
        options: Sequence[DecodeOptions] | None = None,
    ) -> list[Transcript]:
        with self.lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            time.sleep(0.4)
            return super().transcribe(audios, language, word_timestamps, options)
        finally:
            with self.lock:
                self.running -= 1
