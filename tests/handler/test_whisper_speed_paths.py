"""Whisper's fast path: short audios packed into shared 30 s windows, decoded in batches.

The planning and attribution rules are checked on their own (no model); then real speech through
the real tiny.en model checks that each packed audio gets its own words, at times in its own
clock, and that what cannot be attributed goes the sequential way.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from handler.audio import decode_audio
from handler.engines.base import SAMPLE_RATE, Transcript
from handler.engines.whisper_packing import (
    DEFAULT_CAPACITY_S,
    DEFAULT_GAP_S,
    WINDOW_S,
    Placement,
    TimedText,
    Window,
    owner_of,
    plan_windows,
    unfinished,
    window_audio,
    word_owners,
)

JFK_PHRASE = "ask not what your country can do for you"


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


# --- planning (no model) ------------------------------------------------------------------------


def test_plan_places_every_audio_once_within_the_window_with_gaps() -> None:
    durations = [7.9, 3.1, 3.3, 8.4, 2.9, 11.3, 4.0, 9.8, 4.6, 4.3]
    windows = plan_windows(durations)

    placed = sorted(placement.index for window in windows for placement in window.placements)
    assert placed == list(range(len(durations)))
    assert len(windows) == 3  # 59.6 s of audio: two windows cannot hold it, three do
    for window in windows:
        ordered = sorted(window.placements, key=lambda placement: placement.start_s)
        assert ordered[0].start_s == 0.0
        assert window.end_s <= DEFAULT_CAPACITY_S
        for placement in ordered:
            assert placement.end_s - placement.start_s == pytest.approx(durations[placement.index])
        for before, after in zip(ordered, ordered[1:], strict=False):
            assert after.start_s - before.end_s == pytest.approx(DEFAULT_GAP_S)


def test_plan_spreads_equal_lengths_over_windows() -> None:
    # Two takes of one recording (equal lengths) and two of another: each window gets a mix.
    windows = plan_windows([12.0, 12.0, 4.0, 4.0])
    assert len(windows) == 2
    for window in windows:
        lengths = {round(placement.end_s - placement.start_s) for placement in window.placements}
        assert lengths == {12, 4}


def test_plan_refuses_audio_longer_than_a_window_and_accepts_none() -> None:
    with pytest.raises(ValueError, match="must fit"):
        plan_windows([WINDOW_S + 0.1])
    assert plan_windows([]) == []


def test_plan_gives_audio_longer_than_the_shared_capacity_a_window_of_its_own() -> None:
    # A long-form chunk of 29 s cannot share a window, but it still takes the batched path.
    windows = plan_windows([29.0, 4.0, 28.0, 5.0])
    alone = [window for window in windows if len(window.placements) == 1]
    assert sorted(window.placements[0].index for window in alone) == [0, 2]
    assert all(window.placements[0].start_s == 0.0 for window in alone)
    shared = [window for window in windows if len(window.placements) > 1]
    assert [sorted(p.index for p in window.placements) for window in shared] == [[1, 3]]


def test_window_audio_puts_each_audio_at_its_place_with_silence_between() -> None:
    first = np.full(SAMPLE_RATE, 0.5, dtype=np.float32)
    second = np.full(SAMPLE_RATE // 2, -0.25, dtype=np.float32)
    window = Window([Placement(0, 0.0, 1.0), Placement(1, 2.5, 3.0)])

    samples = window_audio(window, [first, second])

    assert samples.shape == (3 * SAMPLE_RATE,)
    assert np.all(samples[:SAMPLE_RATE] == 0.5)
    assert np.all(samples[SAMPLE_RATE : int(2.5 * SAMPLE_RATE)] == 0.0)
    assert np.all(samples[int(2.5 * SAMPLE_RATE) :] == -0.25)


def test_segment_owner_allows_drift_but_not_a_run_across_two_audios() -> None:
    window = Window([Placement(7, 0.0, 4.0), Placement(3, 5.5, 9.0)])  # silence 4.0-5.5
    assert owner_of(TimedText(0.0, 4.6), window).index == 7  # overruns into the silence
    assert owner_of(TimedText(5.0, 9.0), window).index == 3
    assert owner_of(TimedText(0.0, 9.0), window) is None  # runs across both: no single owner


def test_words_go_to_the_audio_they_overlap_even_when_stretched_into_the_silence() -> None:
    # Seen with tiny.en: "counseled" stretched to the next audio, "him." zero-length in the
    # silence, and the next audio's "Ask" aligned to start 0.7 s before its first sample.
    window = Window([Placement(0, 9.4, 12.675), Placement(2, 14.175, 17.275)])
    words = [
        TimedText(11.30, 11.60),  # belly
        TimedText(11.60, 13.54),  # counseled
        TimedText(13.54, 13.54),  # him.
        TimedText(13.45, 14.94),  # Ask
        TimedText(14.94, 15.20),  # what
    ]
    owners = word_owners(words, window)
    assert owners is not None
    assert [owner.index for owner in owners] == [0, 0, 0, 2, 2]
    assert word_owners([TimedText(13.0, 13.5)], window) is None  # nothing on any audio


def test_unfinished_names_the_audios_after_the_last_complete_timestamp() -> None:
    window = Window([Placement(0, 0.0, 4.0), Placement(1, 5.5, 9.0), Placement(2, 10.5, 14.0)])
    assert unfinished(window, 14.0) == []
    assert unfinished(window, 9.1) == [2]
    assert unfinished(window, 6.0) == [1, 2]


# --- real speech through tiny.en ----------------------------------------------------------------


@pytest.fixture(scope="module")
def clips(data_dir: Path) -> dict[str, np.ndarray]:
    """Real speech: jfk cut at its pause (7.9 s), the LibriSpeech clip, the right channel's speaker."""
    jfk = decode_audio(data_dir / "jfk.flac", 60)
    cut = int(7.9 * SAMPLE_RATE)
    return {
        "jfk-a": jfk[:cut],
        "jfk-b": jfk[cut:],
        "libri": decode_audio(data_dir / "librispeech_1089-134686-0001.wav", 60),
        "hotwords": decode_audio(data_dir / "hotwords.mp3", 60),
    }


@pytest.fixture(scope="module")
def engine(tiny_en_dir: Path):  # type: ignore[no-untyped-def]
    from handler.engines.whisper import WhisperEngine

    return WhisperEngine("tiny.en", tiny_en_dir, device="cpu", pack=True)


def _check_times(transcript: Transcript, duration: float) -> None:
    previous = 0.0
    for segment in transcript.segments:
        assert 0.0 <= segment.start <= segment.end <= duration
        assert segment.start >= previous - 1e-6
        previous = segment.start
        for word in segment.words:
            assert segment.start - 1e-6 <= word.start <= word.end <= segment.end + 1e-6


def test_packed_clips_each_get_their_own_words(engine, clips: dict[str, np.ndarray]) -> None:  # type: ignore[no-untyped-def]
    names = list(clips)
    before = dict(engine.stats)

    transcripts = engine.transcribe([clips[name] for name in names])

    assert engine.stats["windows"] - before["windows"] < len(names)  # they shared windows
    by_name = {name: normalise(t.text) for name, t in zip(names, transcripts, strict=True)}
    assert JFK_PHRASE in by_name["jfk-a"]
    assert "ask what you can do for your country" in by_name["jfk-b"]
    assert "belly" in by_name["libri"] and "stuff" in by_name["libri"]
    assert "folder" in by_name["hotwords"]
    # No audio carries a neighbour's words.
    assert "country" not in by_name["libri"] and "country" not in by_name["hotwords"]
    assert "belly" not in by_name["jfk-a"] and "belly" not in by_name["jfk-b"]
    for name, transcript in zip(names, transcripts, strict=True):
        assert transcript.language == "en"
        assert transcript.segments
        assert all(segment.words == [] for segment in transcript.segments)
        _check_times(transcript, clips[name].size / SAMPLE_RATE)


def test_packed_word_times_are_in_each_clips_own_clock(engine, clips: dict[str, np.ndarray]) -> None:  # type: ignore[no-untyped-def]
    jfk_a, jfk_b, libri = clips["jfk-a"], clips["jfk-b"], clips["libri"]

    transcripts = engine.transcribe([libri, jfk_a, jfk_b], word_timestamps=True)

    for transcript, audio in zip(transcripts, (libri, jfk_a, jfk_b), strict=True):
        _check_times(transcript, audio.size / SAMPLE_RATE)
        assert [word for segment in transcript.segments for word in segment.words]
    words_b = [word for segment in transcripts[2].segments for word in segment.words]
    # jfk-b starts with "ask" right away (0.1-0.4 s into it), wherever it sat in the window.
    assert normalise(words_b[0].text) == "ask"
    assert words_b[0].start < 1.0
    words_a = [word for segment in transcripts[1].segments for word in segment.words]
    # In jfk.flac "country" is said at about 5.6-6.2 s, well inside jfk-a's first 7.9 s.
    country = [word for word in words_a if normalise(word.text) == "country"]
    assert country and 4.5 < country[0].start < 7.0


def test_packed_and_one_by_one_agree_on_real_speech(
    tiny_en_dir: Path, engine, clips: dict[str, np.ndarray]
) -> None:  # type: ignore[no-untyped-def]
    from handler.engines.whisper import WhisperEngine

    sequential = WhisperEngine("tiny.en", tiny_en_dir, device="cpu", pack=False)
    audios = list(clips.values())

    packed = engine.transcribe(audios)
    alone = sequential.transcribe(audios)

    assert sequential.stats["windows"] == 0
    for one, other in zip(packed, alone, strict=True):
        packed_words, alone_words = normalise(one.text).split(), normalise(other.text).split()
        shared = len(set(packed_words) & set(alone_words))
        assert shared >= 0.8 * len(set(alone_words))


def test_audio_too_long_to_pack_goes_the_sequential_way(engine, clips: dict[str, np.ndarray]) -> None:  # type: ignore[no-untyped-def]
    long = np.concatenate([clips["jfk-a"], clips["libri"], clips["hotwords"]] * 2)
    assert long.size / SAMPLE_RATE > DEFAULT_CAPACITY_S
    before = dict(engine.stats)

    [transcript, short] = engine.transcribe([long, clips["jfk-b"]])

    assert JFK_PHRASE in normalise(transcript.text)
    assert "belly" in normalise(transcript.text)
    _check_times(transcript, long.size / SAMPLE_RATE)
    assert transcript.segments[-1].end > 20.0  # times run past the first 30 s window
    assert "ask what you can do" in normalise(short.text)
    assert engine.stats["windows"] - before["windows"] == 1  # only the short clip was packed


def test_silence_and_empty_audio_do_not_break_a_packed_batch(engine, clips: dict[str, np.ndarray]) -> None:  # type: ignore[no-untyped-def]
    empty = np.zeros(0, dtype=np.float32)

    transcripts = engine.transcribe([clips["jfk-a"], empty, clips["jfk-b"]])

    assert len(transcripts) == 3
    assert transcripts[1].text == "" and transcripts[1].segments == []
    assert JFK_PHRASE in normalise(transcripts[0].text)
    assert "ask what you can do" in normalise(transcripts[2].text)


# --- windows the decoder leaves unfinished, and doubtful shares ---------------------------------


class _Tokens:
    """Token ids as faster-whisper's tokenizer numbers them: timestamps from timestamp_begin."""

    timestamp_begin = 1000

    def at(self, seconds: float) -> int:
        return self.timestamp_begin + int(round(seconds / 0.02))


def test_seek_continues_from_the_end_of_the_last_complete_segment() -> None:
    from handler.engines.whisper_windows import seek_after

    t = _Tokens()
    text = [5, 6, 7]
    # <0.00> text <4.00><4.20> text <9.80>: ends on a lone timestamp: the window is done.
    done = [t.at(0.0), *text, t.at(4.0), t.at(4.2), *text, t.at(9.8)]
    assert seek_after(done, t, single_ending=True) is None
    # ... <9.80><10.40> text (cut off): the last segment is unfinished; continue from 9.80.
    cut = [t.at(0.0), *text, t.at(9.8), t.at(10.4), *text]
    assert seek_after(cut, t, single_ending=False) == pytest.approx(9.8)
    # No pair of timestamps at all: faster-whisper takes the window as one complete segment.
    assert seek_after([t.at(0.0), *text], t, single_ending=False) is None


def test_uncovered_speech_counts_loud_audio_outside_the_words() -> None:
    from handler.engines.whisper_packing import uncovered_speech_s

    loud = np.full(SAMPLE_RATE, 0.3, dtype=np.float32)
    quiet = np.zeros(SAMPLE_RATE, dtype=np.float32)
    audio = np.concatenate([loud, quiet, loud])  # speech 0-1 s and 2-3 s
    assert uncovered_speech_s(audio, 0.0, 3.0) == pytest.approx(0.0)
    assert uncovered_speech_s(audio, 0.0, 1.0) == pytest.approx(1.0, abs=0.05)  # the second second missed
    assert uncovered_speech_s(quiet, 0.0, 0.1) == 0.0  # silence: nothing to miss


def _tempo(audio: np.ndarray, factor: float) -> np.ndarray:
    positions = np.arange(0, audio.size - 1, factor)
    return np.interp(positions, np.arange(audio.size), audio).astype(np.float32)


def test_two_takes_of_one_sentence_each_keep_their_words(engine, clips: dict[str, np.ndarray]) -> None:  # type: ignore[no-untyped-def]
    # Seen on the benchmark corpus: two takes of the LibriSpeech sentence shared a window, the
    # decoder wrote it once, and alignment spread its words over both takes ("counseled him." for
    # one, the rest for the other). Each take must come back whole.
    libri = clips["libri"]
    takes = [libri, _tempo(libri, 1.06), _tempo(libri, 0.94), clips["jfk-a"]]

    transcripts = engine.transcribe(takes)

    for transcript in transcripts[:3]:
        words = normalise(transcript.text)
        assert "belly" in words and "him" in words and "into you" in words, words
    assert JFK_PHRASE in normalise(transcripts[3].text)


def test_a_dense_chunk_of_almost_30_s_takes_the_batched_path_whole(
    engine, clips: dict[str, np.ndarray]
) -> None:  # type: ignore[no-untyped-def]
    # A long-form chunk just under 30 s of dense speech, decoded in a window of its own.
    chunk = np.concatenate(
        [clips["jfk-a"], clips["jfk-b"], clips["libri"], clips["hotwords"], clips["jfk-a"]]
    )
    chunk = chunk[: int(29.5 * SAMPLE_RATE)]
    before = dict(engine.stats)

    [transcript] = engine.transcribe([chunk], word_timestamps=True)

    text = normalise(transcript.text)
    assert JFK_PHRASE in text and "ask what you can do for your country" in text
    assert "belly" in text and "folder" in text
    assert engine.stats["windows"] > before["windows"]  # the batched path, not the sequential one
    assert engine.stats["fallback_audios"] == before["fallback_audios"]
    _check_times(transcript, chunk.size / SAMPLE_RATE)
    # The last words (the second "ask not what your country ...") are reached and timed late.
    assert transcript.segments[-1].end > 25.0


def test_an_unfinished_window_continues_from_its_last_complete_segment(
    engine, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """The round bookkeeping, with a test double for the decoder: a 20 s audio whose first window
    stops after 8 s continues with a window of the remaining 12 s, and the two parts come back as
    one transcript in the audio's own clock."""
    from handler.engines import whisper as whisper_module
    from handler.engines.whisper_windows import DecodedWindow

    seen: list[float] = []

    def decoder_double(model, windows, audios, tokenizer, **options):  # type: ignore[no-untyped-def]
        out = []
        for window in windows:
            length = audios[window.placements[0].index].size / SAMPLE_RATE
            seen.append(round(length, 2))
            if length > 15:  # the first window: one complete segment, then the decoder stopped
                segments = [{"start": 0.0, "end": 8.0, "text": "first part", "tokens": []}]
                out.append(DecodedWindow(window, segments, 8.0, 8.0, reliable=True))
            else:  # the rest, read from 8.0 s on
                segments = [{"start": 0.5, "end": length - 0.5, "text": "the rest", "tokens": []}]
                out.append(DecodedWindow(window, segments, window.end_s, None, reliable=True))
        return out

    monkeypatch.setattr(whisper_module, "decode_windows", decoder_double)
    before = dict(engine.stats)
    audio = np.full(20 * SAMPLE_RATE, 0.1, dtype=np.float32)

    [transcript] = engine.transcribe([audio])

    assert seen == [20.0, 12.0]
    assert engine.stats["remainders"] - before["remainders"] == 1
    assert transcript.text == "first part the rest"
    assert [(s.start, s.end) for s in transcript.segments] == [(0.0, 8.0), (8.5, 19.5)]
