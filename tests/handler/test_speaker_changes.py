"""Long-form chunking keeps speaker changes apart: no sentence of a multi-speaker join is lost.

Real speech of seven different recordings joined with 0.5 s pauses ("a panel"), through the real
tiny.en model and the engine's own chunk bound. A 30 s window spanning a change of speaker made
Whisper skip whole sentences; each sentence here must come back nearly whole.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.corpus import BASE_CLIPS, load_clip
from bench.wer import normalize, word_error_rate
from handler.engines.base import SAMPLE_RATE, Engine
from handler.longform import transcribe_long

PANEL = ["wizard", "mit-1", "jfk-a", "horizon", "libri-1089", "jfk-b", "mit-2", "comfyui", "mit-3"]
LJ = ["LJ001-0001", "LJ001-0003", "LJ001-0005"]


@pytest.fixture(scope="module")
def whisper(tiny_en_dir: Path) -> Engine:
    from handler.engines.whisper import WhisperEngine

    return WhisperEngine("tiny.en", tiny_en_dir)


def _panel(data_dir: Path) -> list[tuple[np.ndarray, str]]:
    from faster_whisper import decode_audio

    clips = {clip.name: clip for clip in BASE_CLIPS}
    texts = dict(
        line.split("|", 1) for line in (data_dir / "ljspeech" / "transcripts.psv").read_text().splitlines()
    )
    parts = [(load_clip(clips[name]), clips[name].text) for name in PANEL]
    readings = [(decode_audio(str(data_dir / "ljspeech" / f"{name}.flac")), texts[name]) for name in LJ]
    # A reader between every few other speakers.
    return parts[:3] + readings[:1] + parts[3:6] + readings[1:2] + parts[6:] + readings[2:]


def _recalled(sentence: str, hypothesis: list[str]) -> float:
    """Share of the sentence's words found, in order, in the hypothesis (a longest common subsequence)."""
    words = normalize(sentence).split()
    previous = [0] * (len(hypothesis) + 1)
    for word in words:
        current = [0]
        for position, heard in enumerate(hypothesis):
            current.append(
                previous[position] + 1 if word == heard else max(previous[position + 1], current[-1])
            )
        previous = current
    return previous[-1] / len(words)


def test_no_sentence_of_a_multi_speaker_join_is_lost(whisper: Engine, data_dir: Path) -> None:
    parts = _panel(data_dir)
    pause = np.zeros(SAMPLE_RATE // 2, dtype=np.float32)
    joined = np.concatenate([piece for audio, _ in parts for piece in (audio, pause)])
    assert joined.size / SAMPLE_RATE > 80  # several chunks at any bound

    (transcript,) = transcribe_long(whisper, [joined])

    heard = normalize(transcript.text).split()
    recall = {text[:40]: round(_recalled(text, heard), 2) for _, text in parts}
    assert min(recall.values()) >= 0.7, recall
    assert word_error_rate([" ".join(text for _, text in parts)], [transcript.text]) < 0.12
    times = [segment.start for segment in transcript.segments]
    assert times == sorted(times) and transcript.segments[-1].end <= joined.size / SAMPLE_RATE
