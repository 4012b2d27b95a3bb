"""Speaker turns from a diarizer's frame activity: who holds the floor, frame by frame.

A frame is speech when any speaker's probability reaches ACTIVE (the threshold NeMo's own
post-processing uses by default); it goes to the most probable speaker, so overlapping speech has
one label, the dominant voice's. Runs of frames with one label become turns. With max_speakers
below the model's count, only the max_speakers speakers who talk most keep their label; the others'
frames go to whichever kept speaker the model finds most likely there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ACTIVE = 0.5


@dataclass(frozen=True)
class SpeakerTurn:
    """A stretch of speech by one speaker, in seconds from the start of the audio."""

    start: float
    end: float
    speaker: int


def speaker_turns(
    probabilities: np.ndarray, frame_s: float, duration: float, max_speakers: int | None = None
) -> list[SpeakerTurn]:
    """Turns, in time order, from (frames x speakers) probabilities of frame_s seconds each.

    Speakers are numbered by their first turn (0 speaks first). duration clamps the last turn to
    the audio's end (the last frame may reach past it).
    """
    if probabilities.ndim != 2 or probabilities.shape[0] == 0 or probabilities.shape[1] == 0:
        return []
    speech = probabilities.max(axis=1) >= ACTIVE
    kept = _kept_speakers(probabilities, speech, max_speakers)
    labels = kept[np.argmax(probabilities[:, kept], axis=1)]
    turns: list[SpeakerTurn] = []
    run_start: int | None = None
    for frame in range(len(labels) + 1):
        ends = (
            frame == len(labels)
            or not speech[frame]
            or (run_start is not None and labels[frame] != labels[run_start])
        )
        if run_start is not None and ends:
            start, end = run_start * frame_s, min(frame * frame_s, duration)
            if end > start:
                turns.append(SpeakerTurn(round(start, 3), round(end, 3), int(labels[run_start])))
            run_start = None
        if frame < len(labels) and speech[frame] and run_start is None:
            run_start = frame
    return _numbered_by_arrival(turns)


def _kept_speakers(probabilities: np.ndarray, speech: np.ndarray, max_speakers: int | None) -> np.ndarray:
    """The columns of the speakers that keep their label: all, or the max_speakers who talk most."""
    count = probabilities.shape[1]
    if max_speakers is None or max_speakers >= count:
        return np.arange(count)
    # Talk time: the speech frames each speaker would win; ties go to the earlier column.
    wins = np.bincount(np.argmax(probabilities[speech], axis=1), minlength=count)
    order = sorted(range(count), key=lambda column: (-int(wins[column]), column))
    return np.array(sorted(order[: max(1, max_speakers)]))


def _numbered_by_arrival(turns: list[SpeakerTurn]) -> list[SpeakerTurn]:
    numbers: dict[int, int] = {}
    for turn in turns:
        numbers.setdefault(turn.speaker, len(numbers))
    return [SpeakerTurn(turn.start, turn.end, numbers[turn.speaker]) for turn in turns]
