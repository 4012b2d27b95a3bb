"""A test double engine for load tests of the queueing layers; never a real model."""

from __future__ import annotations

import numpy as np

from handler.engines.base import SAMPLE_RATE, Engine, SegmentTiming, Transcript, WordTiming

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
    ) -> list[Transcript]:
        return [self._fixed(audio.shape[0] / SAMPLE_RATE, language, word_timestamps) for audio in audios]

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
