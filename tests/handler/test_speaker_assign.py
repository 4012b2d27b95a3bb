"""Who said what, on real speech: tiny.en's words of two different recordings joined, against the
join's known speaker turns (as a diarizer's 80 ms frames would give them).

JFK (11 s) then a LibriSpeech reader (3.3 s) after a 0.3 s pause: every word of the first must be
SPEAKER_0's and every word of the second SPEAKER_1's, and a segment spanning the change (as a
long-segment engine writes one) must be split exactly there.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

from handler.engines.base import SAMPLE_RATE, SegmentTiming, Transcript, WordTiming
from handler.speaker_assign import assign_speakers
from handler.speaker_turns import SpeakerTurn, speaker_turns

FRAME_S = 0.08
PAUSE_S = 0.3


@dataclass
class Join:
    audio: np.ndarray
    transcript: Transcript
    activity: np.ndarray  # frames x 4 speakers, as the diarizer reports it
    change_s: float  # where the second recording starts


@pytest.fixture(scope="module")
def join(data_dir: Path, tiny_en_dir: Path) -> Join:
    from faster_whisper import decode_audio

    from handler.engines.whisper import WhisperEngine

    first = decode_audio(str(data_dir / "jfk.flac"))
    second = decode_audio(str(data_dir / "librispeech_1089-134686-0001.wav"))
    audio = np.concatenate([first, np.zeros(int(PAUSE_S * SAMPLE_RATE), np.float32), second])
    transcript = WhisperEngine("tiny.en", tiny_en_dir).transcribe([audio], word_timestamps=True)[0]
    change_s = first.size / SAMPLE_RATE + PAUSE_S
    # The diarizer's view of the join: its third slot talks first, its first slot second (slots are
    # arbitrary; labels follow who is heard first).
    frames = int(np.ceil(audio.size / SAMPLE_RATE / FRAME_S))
    activity = np.full((frames, 4), 0.05, np.float32)
    times = np.arange(frames) * FRAME_S
    activity[times < first.size / SAMPLE_RATE, 2] = 0.9
    activity[times >= change_s, 0] = 0.9
    return Join(audio, transcript, activity, change_s)


def _turns(join: Join, max_speakers: int | None = None) -> list[SpeakerTurn]:
    return speaker_turns(join.activity, FRAME_S, join.audio.size / SAMPLE_RATE, max_speakers)


def _first_of_second_recording(words: list[WordTiming]) -> int:
    return next(i for i, word in enumerate(words) if word.text.strip().lower().startswith("stuff"))


def test_every_word_is_in_its_speakers_turn(join: Join) -> None:
    labelled, speakers = assign_speakers(join.transcript, _turns(join))
    words = [word for segment in labelled.segments for word in segment.words]
    assert len(words) == sum(len(segment.words) for segment in join.transcript.segments) > 15
    change = _first_of_second_recording(words)
    assert "country" in words[change - 1].text.lower()
    assert [word.speaker for word in words] == ["SPEAKER_0"] * change + ["SPEAKER_1"] * (len(words) - change)
    assert speakers == ["SPEAKER_0", "SPEAKER_1"]
    for segment in labelled.segments:
        assert {word.speaker for word in segment.words} == {segment.speaker}
    assert labelled.text == join.transcript.text


def test_a_segment_spanning_the_change_is_split_there(join: Join) -> None:
    # One segment over both recordings, of tiny.en's real words and times.
    words = [word for segment in join.transcript.segments for word in segment.words]
    text = " ".join(segment.text.strip() for segment in join.transcript.segments)
    spanning = Transcript(
        text=text, segments=[SegmentTiming(0.0, join.audio.size / SAMPLE_RATE, text, words)]
    )
    labelled, speakers = assign_speakers(spanning, _turns(join))

    first, second = labelled.segments
    change = _first_of_second_recording(words)
    assert (first.speaker, second.speaker) == ("SPEAKER_0", "SPEAKER_1")
    assert first.text.endswith("country.") and second.text.lower().startswith("stuff it into you")
    assert f"{first.text} {second.text}" == text
    assert [w.text for w in first.words] == [w.text for w in words[:change]]
    assert [w.text for w in second.words] == [w.text for w in words[change:]]
    # The cut falls between the recordings: the first part ends with its last word, the second
    # starts with its first, and the segment's own outer edges are kept.
    assert first.start == 0.0 and first.end == words[change - 1].end <= join.change_s
    assert second.start == words[change].start >= join.change_s - 2 * FRAME_S
    assert second.end == spanning.segments[0].end
    assert speakers == ["SPEAKER_0", "SPEAKER_1"]


def test_labelling_keeps_every_other_field_of_the_transcript(join: Join) -> None:
    # tiny.en's real quality measures, word probabilities and language: diarization only adds speakers.
    segments = [replace(segment, language="en") for segment in join.transcript.segments]
    source = replace(
        join.transcript, segments=segments, language_probability=0.97, language_probabilities={"en": 0.97}
    )
    labelled, _ = assign_speakers(source, _turns(join))
    assert (labelled.language, labelled.language_probability, labelled.language_probabilities) == (
        "en",
        0.97,
        {"en": 0.97},
    )
    original = {(w.start, w.end, w.text): (s, w) for s in source.segments for w in s.words}
    for segment in labelled.segments:
        for word in segment.words:
            parent, before = original[(word.start, word.end, word.text)]
            assert word.probability == before.probability is not None
            quality = ("avg_logprob", "no_speech_prob", "compression_ratio", "language")
            assert [getattr(segment, name) for name in quality] == [getattr(parent, name) for name in quality]
            assert segment.avg_logprob is not None and segment.compression_ratio is not None
    assert labelled.segments[0].language == "en"


def test_one_allowed_speaker_gets_every_word(join: Join) -> None:
    labelled, speakers = assign_speakers(join.transcript, _turns(join, max_speakers=1))
    assert speakers == ["SPEAKER_0"]
    assert {word.speaker for segment in labelled.segments for word in segment.words} == {"SPEAKER_0"}


# --- frames to turns, and words outside every turn ------------------------------------------------


def test_turns_follow_the_dominant_speaker_and_pauses() -> None:
    p = np.array(
        [
            [0.1, 0.9, 0.0],  # speaker column 1 starts: it becomes speaker 0
            [0.1, 0.9, 0.0],
            [0.1, 0.2, 0.0],  # silence
            [0.7, 0.6, 0.0],  # overlap: the more probable voice holds the frame
            [0.9, 0.1, 0.0],
            [0.1, 0.8, 0.0],
        ]
    )
    turns = speaker_turns(p, 0.08, duration=0.46)
    assert turns == [
        SpeakerTurn(0.0, 0.16, 0),
        SpeakerTurn(0.24, 0.4, 1),
        SpeakerTurn(0.4, 0.46, 0),  # clamped to the audio's end
    ]


def test_max_speakers_keeps_the_most_talkative_and_gives_the_rest_to_the_likeliest() -> None:
    p = np.zeros((10, 4))
    p[0:4, 0] = 0.9  # 4 frames
    p[4:7, 1] = 0.9  # 3 frames
    p[7:8, 2], p[7:8, 1] = 0.9, 0.3  # 1 frame, most like speaker column 1
    p[8:10, 3] = 0.8  # 2 frames
    assert [t.speaker for t in speaker_turns(p, 1.0, 10.0)] == [0, 1, 2, 3]
    kept = speaker_turns(p, 1.0, 10.0, max_speakers=3)
    assert [(t.start, t.end, t.speaker) for t in kept] == [(0.0, 4.0, 0), (4.0, 8.0, 1), (8.0, 10.0, 2)]


def test_words_in_pauses_go_to_the_nearest_turn_and_no_turns_means_one_speaker() -> None:
    words = [WordTiming(0.0, 0.4, "a"), WordTiming(1.1, 1.1, "b"), WordTiming(1.8, 2.0, "c")]
    transcript = Transcript("a b c", [SegmentTiming(0.0, 2.0, "a b c", words)])
    turns = [SpeakerTurn(0.0, 0.5, 3), SpeakerTurn(1.5, 2.0, 1)]
    labelled, speakers = assign_speakers(transcript, turns)
    assert [w.speaker for s in labelled.segments for w in s.words] == ["SPEAKER_0", "SPEAKER_1", "SPEAKER_1"]
    assert [(s.text, s.start, s.end) for s in labelled.segments] == [("a", 0.0, 0.4), ("b c", 1.1, 2.0)]
    assert speakers == ["SPEAKER_0", "SPEAKER_1"]

    alone, speakers = assign_speakers(transcript, [])
    assert speakers == ["SPEAKER_0"] and [s.speaker for s in alone.segments] == ["SPEAKER_0"]
    no_words = Transcript("x", [SegmentTiming(0.0, 0.4, "x"), SegmentTiming(1.6, 2.0, "y")])
    labelled, speakers = assign_speakers(no_words, turns)
    assert [s.speaker for s in labelled.segments] == ["SPEAKER_0", "SPEAKER_1"]
