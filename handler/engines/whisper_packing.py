"""Packing short audios into shared 30 s Whisper windows, and giving the segments back to them.

Whisper's encoder always reads a 30 s window (3000 mel frames; CTranslate2 refuses any other
length), so a 5 s clip pays for 30 s of encoder work, most of it padding: measured with tiny.en on
this project's 2-core CPU, the encoder is ~2/3 of a short clip's time (docs/performance.md). Placing
several clips in one window, separated by silence, divides that cost by the number of clips. The
decoder reads the window with timestamps, and each segment goes back to the clip it lies in. A
segment whose words fall in two clips, a clip that got no words, or one the decoder did not
reach cannot be attributed safely: those clips get a window of their own in the engine's next
round (and what fails there too, faster-whisper's sequential transcribe()).
These functions are pure (no model), so the rules are unit-tested without inference.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, field

import numpy as np

from handler.engines.base import SAMPLE_RATE

WINDOW_S = 30.0  # Whisper's input window
# Silence between packed clips: long enough that Whisper closes a segment and starts a new one
# (measured: 1.0 s let segments run across clips now and then; see docs/performance.md).
DEFAULT_GAP_S = 2.0
# The last 0.5 s of a window stays empty: a clip cut by the window's edge loses its last word.
DEFAULT_CAPACITY_S = WINDOW_S - 2.5
# A segment whose time range reaches this far into a second clip straddles the gap between them.
STRADDLE_TOLERANCE_S = 0.3


@dataclass(frozen=True)
class Placement:
    """Audio `index` of the call sits at [start_s, end_s) of its window."""

    index: int
    start_s: float
    end_s: float


@dataclass
class Window:
    """One 30 s encoder window holding one or more audios separated by silence."""

    placements: list[Placement] = field(default_factory=list)

    @property
    def end_s(self) -> float:
        return self.placements[-1].end_s if self.placements else 0.0


def plan_windows(
    durations: list[float],
    capacity_s: float = DEFAULT_CAPACITY_S,
    gap_s: float = DEFAULT_GAP_S,
    alone: Collection[int] = (),
) -> list[Window]:
    """As few windows as fit the audios (each no longer than capacity_s), filled evenly.

    Longest first, each audio into the window with the most room left (worst-fit decreasing),
    starting from the least number of windows that could hold them and adding one when an audio
    does not fit. Even windows finish their batched beam search at about the same step, and
    audios of equal length (often takes of the same recording) land in different windows.
    An audio longer than capacity_s but no longer than the window itself (a long-form chunk)
    gets a window of its own: alone in it, it is decoded as faster-whisper's transcribe() would.
    So does every audio whose index is in `alone`.
    """
    if any(duration > WINDOW_S for duration in durations):
        raise ValueError(f"every audio must fit in the {WINDOW_S:.0f} s window to be packed")
    solo = [index for index, duration in enumerate(durations) if duration > capacity_s or index in alone]
    shared = [index for index, duration in enumerate(durations) if index not in solo]
    windows = [Window([Placement(index, 0.0, durations[index])]) for index in solo]
    if not shared:
        return windows
    order = sorted(shared, key=lambda i: (-durations[i], i))
    needed = sum(durations[i] for i in shared) + gap_s * (len(shared) - 1)
    count = max(1, math.ceil(needed / capacity_s))
    while True:
        filled = _fill(durations, order, count, capacity_s, gap_s)
        if filled is not None:
            return windows + [window for window in filled if window.placements]
        count += 1


def _fill(
    durations: list[float], order: list[int], count: int, capacity_s: float, gap_s: float
) -> list[Window] | None:
    windows = [Window() for _ in range(count)]
    for index in order:
        duration = durations[index]
        best: Window | None = None
        best_start = 0.0
        for window in windows:
            start = window.end_s + gap_s if window.placements else 0.0
            if start + duration <= capacity_s and (best is None or start < best_start):
                best, best_start = window, start
        if best is None:
            return None
        best.placements.append(Placement(index, best_start, best_start + duration))
    return windows


def window_audio(window: Window, audios: list[np.ndarray]) -> np.ndarray:
    """The window's samples: each audio at its place, digital silence between."""
    total = int(round(window.end_s * SAMPLE_RATE))
    out = np.zeros(total, dtype=np.float32)
    for placement in window.placements:
        audio = audios[placement.index]
        start = int(round(placement.start_s * SAMPLE_RATE))
        out[start : start + audio.shape[0]] = audio[: max(0, total - start)]
    return out


@dataclass(frozen=True)
class TimedText:
    """A decoded segment or word, in window time."""

    start: float
    end: float


def _overlap(a_start: float, a_end: float, b_start: float, b_end: float) -> float:
    return max(0.0, min(a_end, b_end) - max(a_start, b_start))


def owner_of(span: TimedText, window: Window, tolerance_s: float = STRADDLE_TOLERANCE_S) -> Placement | None:
    """The placement a segment belongs to, or None when it cannot be attributed to exactly one.

    Each placement owns its own time plus half the silence on either side (Whisper's timestamps
    drift by a few hundred ms). A segment reaching more than tolerance_s into the territory of a
    second placement straddles the gap: its text likely mixes two audios. A zero-length segment
    belongs to the territory it sits in.
    """
    territories = _territories(window)
    if span.end <= span.start:
        for placement, (lo, hi) in territories:
            if lo <= span.start < hi:
                return placement
        return territories[-1][0] if span.start >= territories[-1][1][1] else None
    reach = [(placement, _overlap(span.start, span.end, lo, hi)) for placement, (lo, hi) in territories]
    touched = [(placement, amount) for placement, amount in reach if amount > 0]
    if not touched:
        # Past the last territory (timestamps beyond the content): the last audio's.
        return territories[-1][0] if span.start >= territories[-1][1][1] else None
    best = max(touched, key=lambda pair: pair[1])
    if any(amount > tolerance_s for placement, amount in touched if placement is not best[0]):
        return None
    return best[0]


def _territories(window: Window) -> list[tuple[Placement, tuple[float, float]]]:
    placements = sorted(window.placements, key=lambda placement: placement.start_s)
    out = []
    for position, placement in enumerate(placements):
        lo = 0.0 if position == 0 else (placements[position - 1].end_s + placement.start_s) / 2
        hi = (
            WINDOW_S
            if position == len(placements) - 1
            else (placement.end_s + placements[position + 1].start_s) / 2
        )
        out.append((placement, (lo, hi)))
    return out


def unfinished(window: Window, decoded_until_s: float) -> list[int]:
    """Audios the decoder did not reach: those ending after the last complete timestamp."""
    return [placement.index for placement in window.placements if placement.end_s > decoded_until_s + 0.3]


def word_owners(words: list[TimedText], window: Window) -> list[Placement] | None:
    """Which audio each word of one segment belongs to; None when no word lies on any audio.

    A word belongs to the audio its aligned time overlaps most. Cross-attention alignment
    stretches words next to a silence into it (the last word before it forward, the first word
    after it backward), so overlap with the audios themselves, not with the silence, decides. A
    word lying wholly in a silence (a zero-length last word) goes with the word before it.
    """
    placements = sorted(window.placements, key=lambda placement: placement.start_s)
    owners: list[Placement | None] = []
    for word in words:
        best, amount = None, 0.0
        for placement in placements:
            overlap = _overlap(word.start, word.end, placement.start_s, placement.end_s)
            if overlap > amount:
                best, amount = placement, overlap
        owners.append(best)
    if all(owner is None for owner in owners):
        return None
    resolved: list[Placement] = []
    for owner in owners:
        if owner is None:
            # A word stretched backwards still ends inside its audio; one wholly in the silence
            # is the tail of what came before (or, first in the segment, opens what follows).
            owner = resolved[-1] if resolved else next(later for later in owners if later is not None)
        resolved.append(owner)
    return resolved


# A packed audio whose words leave more than this much of its speech uncovered was not fully
# decoded: seen with two takes of one sentence in a window, where the decoder wrote the first take,
# skipped the second, and alignment stretched the first take's last words into it.
UNCOVERED_SPEECH_LIMIT_S = 0.6
COVER_MARGIN_S = 0.3  # alignment puts word edges this far off now and then
_FRAME = SAMPLE_RATE // 50  # 20 ms
SPEECH_LEVEL = 0.2  # a frame this loud relative to the audio's loud frames (90th percentile) is speech


def uncovered_speech_s(audio: np.ndarray, first_word_s: float, last_word_end_s: float) -> float:
    """Seconds of speech-loud 20 ms frames in `audio` before its first word or after its last one
    (with COVER_MARGIN_S of slack on each side), by a plain energy measure: the words were aligned
    to this audio, so what lies outside them and is as loud as speech was not transcribed."""
    count = audio.shape[0] // _FRAME
    if count == 0:
        return 0.0
    frames = audio[: count * _FRAME].reshape(count, _FRAME).astype(np.float64)
    rms = np.sqrt(np.mean(frames * frames, axis=1))
    reference = float(np.percentile(rms, 90))
    if reference <= 1e-4:  # digital silence or nearly: nothing to miss
        return 0.0
    loud = rms > SPEECH_LEVEL * reference
    times = (np.arange(count) + 0.5) * _FRAME / SAMPLE_RATE
    outside = (times < first_word_s - COVER_MARGIN_S) | (times > last_word_end_s + COVER_MARGIN_S)
    return float(np.count_nonzero(loud & outside)) * _FRAME / SAMPLE_RATE
