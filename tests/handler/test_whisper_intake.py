"""Whisper's first call encodes windows while its audios still arrive (whisper_intake, Arrivals).

The packer's rules are checked without a model; then real speech through tiny.en checks that the
streamed call gives each audio its own words, in arrival order, and starts encoding before the
intake closes.
"""

from __future__ import annotations

import random
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from handler.audio import decode_audio
from handler.engines.base import SAMPLE_RATE, Arrivals
from handler.engines.whisper_intake import MIN_FILL, MIN_WINDOWS_PLANNED, OnlinePacker
from handler.engines.whisper_packing import DEFAULT_CAPACITY_S, DEFAULT_GAP_S, Window, plan_windows


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


def _check_layout(windows: list[Window], durations: list[float]) -> None:
    for window in windows:
        ordered = sorted(window.placements, key=lambda placement: placement.start_s)
        assert ordered[0].start_s == 0.0
        assert window.end_s <= DEFAULT_CAPACITY_S + 1e-9
        for placement in ordered:
            assert placement.end_s - placement.start_s == pytest.approx(durations[placement.index])
        for before, after in zip(ordered, ordered[1:], strict=False):
            assert after.start_s - before.end_s == pytest.approx(DEFAULT_GAP_S)


def _stream(durations: list[float], free_slots: int = 2) -> tuple[list[Window], list[Window], int]:
    """Windows handed out while arriving, then at finish; and how many audios had arrived when
    the first window was handed out."""
    packer = OnlinePacker()
    early: list[Window] = []
    first_at = 0
    for position, duration in enumerate(durations):
        ready = packer.add(position, duration) + packer.full_windows(free_slots)
        if ready and not early:
            first_at = position + 1
        early += ready
    return early, packer.finish(), first_at


# --- the packer (no model) ---------------------------------------------------------------------


def test_every_audio_lands_in_exactly_one_window() -> None:
    rng = random.Random(5)
    for _ in range(50):
        durations = [round(rng.uniform(0.5, 14.0), 2) for _ in range(rng.randint(1, 60))]
        early, late, _ = _stream(durations, free_slots=rng.randint(0, 3))
        windows = early + late
        placed = sorted(placement.index for window in windows for placement in window.placements)
        assert placed == list(range(len(durations)))
        _check_layout(windows, durations)


def test_windows_start_once_three_windows_worth_waits_and_are_nearly_full() -> None:
    durations = [5.0] * 40  # 7 s each with its gap
    early, late, first_at = _stream(durations)
    assert early, "windows were handed out before the intake closed"
    needed = first_at * (5.0 + DEFAULT_GAP_S) - DEFAULT_GAP_S
    assert needed >= MIN_WINDOWS_PLANNED * DEFAULT_CAPACITY_S
    assert first_at < len(durations) / 2
    assert all(window.end_s >= MIN_FILL * DEFAULT_CAPACITY_S for window in early)


def test_no_early_window_without_a_free_stream() -> None:
    early, late, _ = _stream([5.0] * 40, free_slots=0)
    assert early == []
    assert len(late) == len(plan_windows([5.0] * 40))


def test_streaming_costs_about_no_extra_windows() -> None:
    # Clip lengths like the benchmark's short backlog (3-12 s), in arrival order.
    rng = random.Random(11)
    for _ in range(20):
        durations = [round(rng.uniform(3.0, 12.0), 1) for _ in range(30)]
        early, late, _ = _stream(durations)
        assert len(early + late) <= len(plan_windows(durations)) + 1


def test_an_audio_longer_than_the_capacity_gets_its_window_at_once() -> None:
    packer = OnlinePacker()
    (window,) = packer.add(0, 29.0)
    assert [(p.index, p.start_s, p.end_s) for p in window.placements] == [(0, 0.0, 29.0)]
    assert packer.waiting == []
    with pytest.raises(ValueError):
        packer.add(1, 31.0)


# --- Arrivals -----------------------------------------------------------------------------------


def test_arrivals_hand_over_in_order_then_stay_closed() -> None:
    arrivals = Arrivals()
    audios = [np.full(10, value, dtype=np.float32) for value in range(3)]

    def feed() -> None:
        for audio in audios:
            time.sleep(0.05)
            arrivals.put(audio)
        arrivals.close()

    thread = threading.Thread(target=feed)
    thread.start()
    received = list(arrivals)
    thread.join()
    assert [float(audio[0]) for audio in received] == [0.0, 1.0, 2.0]
    assert arrivals.next() is None and arrivals.next() is None
    assert arrivals.idle_s >= 3 * 0.05 * 0.9  # every wait counted as idle by default


def test_a_wait_with_work_running_is_not_idle() -> None:
    arrivals = Arrivals()
    arrivals.put(np.zeros(4, dtype=np.float32))
    arrivals.close()
    assert arrivals.next(idle=False) is not None
    assert arrivals.next(idle=False) is None
    assert arrivals.idle_s == 0.0


# --- real speech through tiny.en ----------------------------------------------------------------


@pytest.fixture(scope="module")
def engine(tiny_en_dir: Path):  # type: ignore[no-untyped-def]
    from handler.engines.whisper import WhisperEngine

    return WhisperEngine("tiny.en", tiny_en_dir, device="cpu", pack=True)


@pytest.fixture(scope="module")
def clips(data_dir: Path) -> list[tuple[str, np.ndarray]]:
    """Real speech, each clip four times (at four levels): 16 clips, over three windows' worth with
    their gaps, so windows are encoded before the intake closes."""
    jfk = decode_audio(data_dir / "jfk.flac", 60)
    cut = int(7.9 * SAMPLE_RATE)
    base = [
        ("jfk-a", jfk[:cut]),
        ("jfk-b", jfk[cut:]),
        ("libri", decode_audio(data_dir / "librispeech_1089-134686-0001.wav", 60)),
        ("hotwords", decode_audio(data_dir / "hotwords.mp3", 60)),
    ]
    return [(name, audio * gain) for gain in (1.0, 0.8, 0.6, 0.45) for name, audio in base]


EXPECTED = {
    "jfk-a": "ask not what your country can do for you",
    "jfk-b": "ask what you can do for your country",
    "libri": "belly",
    "hotwords": "folder",
}


def test_streamed_call_gives_each_audio_its_words_in_arrival_order(  # type: ignore[no-untyped-def]
    engine, clips: list[tuple[str, np.ndarray]]
) -> None:
    assert engine.streams_arrivals
    arrivals = Arrivals()
    # Audio arrives as a slow download would give it, and a silent-free 40 s recording is mixed in:
    # longer than a window, it takes the sequential path inside the same call.
    long_audio = np.concatenate([clips[0][1], np.zeros(SAMPLE_RATE, np.float32)] * 5)
    sent = [*clips[:8], ("long", long_audio), *clips[8:]]
    delay = 0.15

    fed: dict[str, float] = {}

    def feed() -> None:
        started = time.perf_counter()
        for _, audio in sent:
            time.sleep(delay)
            arrivals.put(audio)
        arrivals.close()
        fed["seconds"] = time.perf_counter() - started

    before = dict(engine.stats)
    thread = threading.Thread(target=feed)
    thread.start()
    transcripts = engine.transcribe_arriving(arrivals)
    thread.join()

    assert len(transcripts) == len(sent)
    for (name, audio), transcript in zip(sent, transcripts, strict=True):
        text = normalise(transcript.text)
        if name == "long":
            assert text.count("country") >= 4
        else:
            assert EXPECTED[name] in text, (name, text)
            assert "belly" not in text or name == "libri"
        for segment in transcript.segments:
            assert 0.0 <= segment.start <= segment.end <= audio.size / SAMPLE_RATE
    assert engine.stats["windows"] - before["windows"] < len(clips)  # they shared windows
    # Windows were encoded while audio still arrived (the last three or more audios came after
    # three windows' worth had, 0.45 s and more): the engine was idle for clearly less than the
    # time the feed took, and the time it was idle is reported.
    assert 0.0 < arrivals.idle_s < fed["seconds"] - 0.2


def test_streamed_call_without_batched_windows_waits_for_all(tiny_en_dir: Path, clips) -> None:  # type: ignore[no-untyped-def]
    from handler.engines.whisper import WhisperEngine

    plain = WhisperEngine("tiny.en", tiny_en_dir, device="cpu", pack=False)
    assert not plain.streams_arrivals
    arrivals = Arrivals()
    arrivals.put(clips[2][1])
    arrivals.close()
    (transcript,) = plain.transcribe_arriving(arrivals)
    assert "belly" in normalise(transcript.text)
