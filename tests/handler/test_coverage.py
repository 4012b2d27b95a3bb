"""Speech a chunk's transcript skipped is transcribed again on its own (handler.coverage)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

import handler.chunking
from handler.chunking import Chunk
from handler.coverage import missed_speech
from handler.engines.base import SAMPLE_RATE, DecodeOptions, Engine, SegmentTiming, Transcript
from handler.longform import transcribe_long

S = SAMPLE_RATE


def _transcript(*spans: tuple[float, float]) -> Transcript:
    return Transcript("x", [SegmentTiming(start, end, f"w{start:g}") for start, end in spans])


def test_regions_no_segment_reaches_are_missed_and_merged_when_consecutive() -> None:
    chunk = Chunk(
        10 * S, 40 * S, ((10 * S, 14 * S), (15 * S, 18 * S), (19 * S, 23 * S), (24 * S, 24 * S + S // 2))
    )
    # Segments (in chunk time) reach the first region only; the last region is too short to count.
    missed = missed_speech(chunk, _transcript((0.2, 3.9)))
    assert missed == [Chunk(15 * S, 23 * S)]
    # A segment whose times are a little off still reaches its region.
    assert missed_speech(chunk, _transcript((0.2, 3.9), (5.6, 12.8))) == []
    # Nothing known about the speech (a chunk passed whole): nothing to check.
    assert missed_speech(Chunk(0, 30 * S), _transcript()) == []


class SkippingTestEngine(Engine):
    """TEST DOUBLE: transcribes only the first 10 s of any audio (as Whisper ending a window early
    does), writing one segment per second of audio that is not silence."""

    model_id = engine_name = "skipping-test-double"
    device = "cpu"
    max_chunk_s = 30.0

    def transcribe(
        self,
        audios: list[np.ndarray],
        language: str | None = None,
        word_timestamps: bool = False,
        options: Sequence[DecodeOptions] | None = None,
    ) -> list[Transcript]:
        out = []
        for audio in audios:
            loud = [
                second
                for second in range(min(10, audio.size // S))
                if np.abs(audio[second * S : (second + 1) * S]).max() > 0.05
            ]
            segments = [SegmentTiming(float(second), second + 1.0, f"s{second}") for second in loud]
            out.append(Transcript(" ".join(s.text for s in segments), segments, "en"))
        return out


def test_skipped_speech_is_transcribed_again_and_lands_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    # 3 s of noise-like "speech" then 0.6 s of silence, ten times: 36 s, more than one chunk.
    block = np.concatenate([0.3 * rng.standard_normal(3 * S), np.zeros(int(0.6 * S))]).astype(np.float32)
    audio = np.tile(block, 10)
    regions = [Chunk(int((i * 3.6) * S), int((i * 3.6 + 3) * S)) for i in range(10)]
    monkeypatch.setattr(
        handler.chunking, "_speech_regions", lambda audio, options: regions
    )  # the VAD's double
    (transcript,) = transcribe_long(SkippingTestEngine(), [audio])
    starts = [segment.start for segment in transcript.segments]
    assert starts == sorted(starts)
    # Every 3 s stretch of speech is reached by some segment, though each pass saw only 10 s.
    for region in regions:
        assert any(region.start / S - 0.5 <= s.start <= region.end / S for s in transcript.segments), region
