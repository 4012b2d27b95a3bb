"""Test double engines for load tests of the queueing layers and the GPU feed; never a real model."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import numpy as np

from handler.engines.base import (
    SAMPLE_RATE,
    BatchLimits,
    DecodeOptions,
    Engine,
    SegmentTiming,
    Transcript,
    WordTiming,
    per_audio_options,
)
from handler.engines.gpu_memory import NEMO_BATCH_DEFAULT
from handler.engines.parakeet import NemoEngine

INSTANT_MODEL_ID = "instant-test-double"
_WORDS = ("instant", "test", "transcript")


class InstantTestEngine(Engine):
    """TEST DOUBLE: answers at once with a fixed-shape transcript and loads no model.

    It exists so load tests can drive the job queue, the local endpoint and the client with
    thousands of items without spending time in speech recognition. The registry offers it
    only when STENOPOD_ENABLE_TEST_ENGINE=1; production images never set that.
    """

    engine_name = "instant"

    def __init__(self, model_id: str = INSTANT_MODEL_ID) -> None:
        self.model_id = model_id
        self.device = "cpu"

    def transcribe(
        self,
        audios: list[np.ndarray],
        language: str | None = None,
        word_timestamps: bool = False,
        options: Sequence[DecodeOptions] | None = None,
    ) -> list[Transcript]:
        settings = per_audio_options(len(audios), language, word_timestamps, options)
        return [
            self._fixed(audio.shape[0] / SAMPLE_RATE, setting.language, setting.word_timestamps)
            for audio, setting in zip(audios, settings, strict=True)
        ]

    @staticmethod
    def _fixed(duration: float, language: str | None, word_timestamps: bool) -> Transcript:
        text = " ".join(_WORDS)
        step = duration / len(_WORDS)
        words = (
            [WordTiming(start=i * step, end=(i + 1) * step, text=word) for i, word in enumerate(_WORDS)]
            if word_timestamps
            else []
        )
        return Transcript(
            text=text,
            segments=[SegmentTiming(start=0.0, end=duration, text=text, words=words)],
            language=language,
        )


PACED_MODEL_ID = "paced-test-double"


class PacedTestEngine(InstantTestEngine):
    """TEST DOUBLE: paces like Parakeet on a GPU, for measuring whether the pipeline keeps one busy.

    Each call takes its audio's seconds / rtfx, sleeping (a GPU call holds no GIL either), with
    Parakeet's batch limits and chunk bound, and answers as the instant engine does. Offered with
    the instant one (STENOPOD_ENABLE_TEST_ENGINE=1); STENOPOD_TEST_ENGINE_RTFX sets its speed.
    """

    engine_name = "paced"
    max_chunk_s = NemoEngine.max_chunk_s

    def __init__(self, rtfx: float = 2000.0, model_id: str = PACED_MODEL_ID) -> None:
        super().__init__(model_id)
        if rtfx <= 0:
            raise ValueError(f"rtfx must be positive, got {rtfx}")
        self.rtfx = rtfx
        self._gpu = threading.Lock()  # one GPU: calls run one after another, as NemoEngine's do

    def batch_limits(self) -> BatchLimits:
        items = 4 * NEMO_BATCH_DEFAULT  # as NemoEngine.batch_limits() without a configured size
        return BatchLimits(max_items=items, max_audio_s=items * 30.0)

    def transcribe(
        self,
        audios: list[np.ndarray],
        language: str | None = None,
        word_timestamps: bool = False,
        options: Sequence[DecodeOptions] | None = None,
    ) -> list[Transcript]:
        with self._gpu:
            time.sleep(sum(audio.shape[0] for audio in audios) / SAMPLE_RATE / self.rtfx)
        return super().transcribe(audios, language, word_timestamps, options)
