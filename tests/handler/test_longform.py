"""Long-form chunking: cut in pauses, bounded chunks, all chunks batched together, times stitched back."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from bench.corpus import BASE_CLIPS, load_clip
from bench.wer import normalize
from handler.chunking import DEFAULT_MAX_CHUNK_S, plan_chunks
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
from handler.longform import transcribe_long

CLIPS = {clip.name: clip for clip in BASE_CLIPS}
SPEECH_RMS = 0.1


class RecordingTestEngine(Engine):
    """Test double: records every batch it is given and answers one segment per audio, 0.5 s in.

    The segment ends `overrun_s` after the audio does, as Whisper's timestamps sometimes do, so the
    stitcher's clamping is exercised.
    """

    model_id = "recording-test-double"
    engine_name = "test-double"
    device = "cpu"

    def __init__(self, overrun_s: float = 0.0) -> None:
        self.batches: list[list[np.ndarray]] = []
        self.overrun_s = overrun_s

    def transcribe(
        self,
        audios: list[np.ndarray],
        language: str | None = None,
        word_timestamps: bool = False,
        options: Sequence[DecodeOptions] | None = None,
    ) -> list[Transcript]:
        self.batches.append([audio.copy() for audio in audios])
        out = []
        for audio, setting in zip(
            audios, per_audio_options(len(audios), language, word_timestamps, options), strict=True
        ):
            word_timestamps = setting.word_timestamps
            duration = audio.shape[0] / SAMPLE_RATE
            text = f"n{audio.shape[0]}"
            words = [WordTiming(0.5, 0.6, text)] if word_timestamps else []
            segment = SegmentTiming(0.5, duration + self.overrun_s, text, words)
            out.append(Transcript(text=text, segments=[segment], language="en"))
        return out

    @property
    def received(self) -> list[np.ndarray]:
        return [audio for batch in self.batches for audio in batch]


class NativeLongTestEngine(RecordingTestEngine):
    """Test double for an engine that reads long audio whole (as NeMo does)."""

    max_chunk_s = None


def _frame_rms(audio: np.ndarray, frame: int = SAMPLE_RATE // 50) -> np.ndarray:
    count = audio.shape[0] // frame
    frames = audio[: count * frame].reshape(count, frame)
    return np.sqrt(np.mean(frames**2, axis=1))


@pytest.fixture(scope="module")
def speech() -> tuple[np.ndarray, list[tuple[str, int, int]]]:
    """About 80 s of real speech: the base clips twice over, with 0.4-1.4 s pauses between them."""
    rng = np.random.default_rng(7)
    pieces, spans, position = [], [], 0
    for name in [*CLIPS, *reversed(CLIPS)]:
        audio = load_clip(CLIPS[name])
        pause = np.zeros(int(rng.uniform(0.4, 1.4) * SAMPLE_RATE), dtype=np.float32)
        pieces += [audio, pause]
        spans.append((name, position, position + audio.shape[0]))
        position += audio.shape[0] + pause.shape[0]
    return np.concatenate(pieces), spans


def test_chunks_are_bounded_cut_in_pauses_and_keep_all_speech(speech) -> None:
    audio, _ = speech
    chunks = plan_chunks(audio, 12.0)
    assert len(chunks) >= math.ceil(audio.shape[0] / (12.0 * SAMPLE_RATE))
    assert all(0 < chunk.duration_s <= 12.0 for chunk in chunks)
    assert all(a.end <= b.start for a, b in zip(chunks, chunks[1:], strict=False))

    rms = _frame_rms(audio)
    # Vowels are loud (0.1-0.3 RMS in these recordings, pauses below 0.02): a cut through a word
    # lands on a loud frame.
    for chunk in chunks:
        for boundary in (chunk.start, chunk.end):
            frame = min(boundary // (SAMPLE_RATE // 50), rms.shape[0] - 1)
            assert rms[frame] < SPEECH_RMS, f"cut at {boundary / SAMPLE_RATE:.2f} s is inside speech"
    # Every clearly spoken frame lies inside some chunk: nothing said is dropped.
    covered = np.zeros(audio.shape[0], dtype=bool)
    for chunk in chunks:
        covered[chunk.start : chunk.end] = True
    loud = np.flatnonzero(rms > SPEECH_RMS) * (SAMPLE_RATE // 50) + SAMPLE_RATE // 100
    assert covered[loud].all()


def test_one_long_speech_region_is_cut_at_its_quietest_point() -> None:
    # 40 s of continuous speech: jfk and the licence reading back to back, no pause to cut in.
    audio = np.concatenate([load_clip(CLIPS[name]) for name in ("mit-1", "jfk-a", "mit-2", "jfk-b", "mit-1")])
    chunks = plan_chunks(audio, 10.0)
    assert all(chunk.duration_s <= 10.0 for chunk in chunks)
    rms = _frame_rms(audio)
    for a, b in zip(chunks, chunks[1:], strict=False):
        if a.end == b.start:  # a forced cut inside a region: quieter than the speech around it
            frame = a.end // (SAMPLE_RATE // 50)
            assert rms[frame] <= np.median(rms[max(0, frame - 250) : frame + 250])


def test_engine_receives_exactly_the_chunks_and_times_come_back_shifted(speech) -> None:
    audio, _ = speech
    engine = RecordingTestEngine(overrun_s=3.0)
    (result,) = transcribe_long(engine, [audio], max_chunk_s=12.0, word_timestamps=True)
    chunks = plan_chunks(audio, 12.0)

    received = sorted(engine.received, key=len)
    expected = sorted((audio[c.start : c.end] for c in chunks), key=len)
    assert [len(a) for a in received] == [len(a) for a in expected]
    assert all(np.array_equal(a, b) for a, b in zip(received, expected, strict=True))

    duration = audio.shape[0] / SAMPLE_RATE
    assert len(result.segments) == len(chunks)
    for segment, chunk in zip(result.segments, chunks, strict=True):
        assert segment.text == f"n{chunk.end - chunk.start}"
        assert segment.start == pytest.approx(chunk.start / SAMPLE_RATE + 0.5)
        assert segment.end == pytest.approx(min(chunk.end / SAMPLE_RATE, duration))  # overrun clamped
        assert segment.words[0].start == pytest.approx(segment.start)
    starts = [segment.start for segment in result.segments]
    assert starts == sorted(starts)
    assert result.text == " ".join(segment.text for segment in result.segments)
    assert result.language == "en"


def test_chunks_of_all_audios_share_batches_and_short_audio_passes_through(speech) -> None:
    long_audio, _ = speech
    short_a = load_clip(CLIPS["jfk-b"])
    short_b = load_clip(CLIPS["horizon"])
    engine = RecordingTestEngine()
    results = transcribe_long(engine, [short_a, long_audio, short_b], max_chunk_s=12.0, batch_size=4)

    chunk_count = len(plan_chunks(long_audio, 12.0))
    assert len(engine.batches) == math.ceil((chunk_count + 2) / 4)
    assert all(len(batch) <= 4 for batch in engine.batches)
    for result, audio in ((results[0], short_a), (results[2], short_b)):
        assert result.text == f"n{audio.shape[0]}"
        assert result.segments[0].start == pytest.approx(0.5)  # nothing shifted
    assert len(results[1].segments) == chunk_count


def test_progress_reports_each_chunk_after_its_engine_call(speech) -> None:
    long_audio, _ = speech
    short = load_clip(CLIPS["horizon"])
    engine = RecordingTestEngine()
    seen: list[tuple[int, float, int]] = []
    transcribe_long(
        engine,
        [long_audio, short],
        max_chunk_s=12.0,
        batch_size=1,
        progress=lambda chunks: seen.extend(
            (index, seconds, len(engine.batches)) for index, seconds in chunks
        ),
    )
    chunks = plan_chunks(long_audio, 12.0)
    long_seen = [(seconds, calls) for index, seconds, calls in seen if index == 0]
    # One report per chunk, each right after its own call: a long item's progress moves.
    assert len(long_seen) == len(chunks) > 1
    assert sorted(calls for _, calls in long_seen) == sorted(set(calls for _, calls in long_seen))
    # The chunks' seconds (the worker tops an item up to its length, pauses between chunks and all).
    planned_s = sum(chunk.end - chunk.start for chunk in chunks) / SAMPLE_RATE
    assert sum(seconds for seconds, _ in long_seen) == pytest.approx(planned_s)
    assert [seconds for index, seconds, _ in seen if index == 1] == [pytest.approx(short.size / SAMPLE_RATE)]


class SmallCallsTestEngine(RecordingTestEngine):
    """Test double whose batch sweet spot is three audios or 25 s, whichever comes first."""

    def batch_limits(self) -> BatchLimits:
        return BatchLimits(max_items=3, max_audio_s=25.0)


def test_engine_calls_follow_the_engines_batch_limits(speech) -> None:
    long_audio, _ = speech
    engine = SmallCallsTestEngine()
    transcribe_long(engine, [long_audio], max_chunk_s=12.0)

    sizes = [[audio.size / SAMPLE_RATE for audio in batch] for batch in engine.batches]
    assert sum(len(batch) for batch in sizes) == len(plan_chunks(long_audio, 12.0))
    assert all(len(batch) <= 3 for batch in sizes)
    # Within 25 s of audio, unless one chunk is a call by itself.
    assert all(sum(batch) <= 25.0 or len(batch) == 1 for batch in sizes)
    assert len(engine.batches) > math.ceil(len(plan_chunks(long_audio, 12.0)) / 3)  # seconds bound too


def test_max_chunk_comes_from_the_engine() -> None:
    audio = np.concatenate([load_clip(CLIPS[name]) for name in ("mit-1", "mit-2", "jfk-a", "mit-1", "mit-2")])
    assert audio.shape[0] / SAMPLE_RATE > DEFAULT_MAX_CHUNK_S

    native = NativeLongTestEngine()
    transcribe_long(native, [audio])
    assert [len(a) for a in native.received] == [audio.shape[0]]

    default = RecordingTestEngine()
    transcribe_long(default, [audio])
    assert len(default.received) > 1
    assert max(len(a) for a in default.received) <= DEFAULT_MAX_CHUNK_S * SAMPLE_RATE

    forced_whole = RecordingTestEngine()
    transcribe_long(forced_whole, [audio], max_chunk_s=math.inf)
    assert len(forced_whole.received) == 1


def test_long_silence_is_not_sent_to_the_engine() -> None:
    engine = RecordingTestEngine()
    (result,) = transcribe_long(engine, [np.zeros(40 * SAMPLE_RATE, dtype=np.float32)], max_chunk_s=10.0)
    assert engine.batches == []
    assert result.text == "" and result.segments == []


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"max_chunk_s": 0.5}])
def test_bad_arguments_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        transcribe_long(RecordingTestEngine(), [np.zeros(SAMPLE_RATE, dtype=np.float32)], **kwargs)


@pytest.mark.timeout(300)
def test_real_tiny_en_keeps_the_words_of_every_clip(tiny_en_dir: Path) -> None:
    from handler.engines.whisper import WhisperEngine

    names = ["jfk-a", "libri-1089", "wizard", "mit-1", "horizon", "jfk-b", "mit-3", "comfyui"]
    pieces, spans, position = [], [], 0
    for name in names:
        clip = load_clip(CLIPS[name])
        pause = np.zeros(int(0.8 * SAMPLE_RATE), dtype=np.float32)
        pieces += [clip, pause]
        spans.append((name, position / SAMPLE_RATE, (position + clip.shape[0]) / SAMPLE_RATE))
        position += clip.shape[0] + pause.shape[0]
    audio = np.concatenate(pieces)
    assert 40 <= audio.shape[0] / SAMPLE_RATE <= 60

    engine = WhisperEngine("tiny.en", tiny_en_dir, device="cpu")
    (result,) = transcribe_long(engine, [audio])  # the default bound: 30 s

    heard = set(normalize(result.text).split())
    for name, _, _ in spans:
        expected = set(normalize(CLIPS[name].text).split()) - {"comfyui"}  # tiny.en hears "comfy eye"
        found = expected & heard
        assert len(found) >= 0.75 * len(expected), f"{name}: missing {sorted(expected - heard)}"

    duration = audio.shape[0] / SAMPLE_RATE
    starts = [segment.start for segment in result.segments]
    assert starts == sorted(starts)
    assert all(0 <= s.start <= s.end <= duration for s in result.segments)
    # Times are the recording's, not the chunk's: the horizon sentence is placed where it was said.
    _, horizon_start, horizon_end = next(span for span in spans if span[0] == "horizon")
    horizon = next(s for s in result.segments if "horizon" in normalize(s.text))
    assert horizon_start - 1.0 <= horizon.start <= horizon_end


def test_hours_of_speech_regions_are_grouped_in_order_without_recursion() -> None:
    from handler.chunking import Chunk, _group

    # 4 hours of 2 s regions whose pauses grow towards the end: the longest pause that leaves both
    # sides a quarter of the bound is always near the right edge, the deepest case for splitting.
    regions, start = [], 0
    for index in range(6000):
        regions.append(Chunk(start, start + 2 * SAMPLE_RATE))
        start += 2 * SAMPLE_RATE + 1000 + index
    groups = _group(regions, 30 * SAMPLE_RATE)
    assert [region for group in groups for region in group] == regions
    assert all(group[-1].end - group[0].start <= 30 * SAMPLE_RATE for group in groups)
