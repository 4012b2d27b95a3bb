"""Speech a chunk's transcript does not reach: found by time, transcribed again on its own.

Whisper sometimes ends a window early: after a change of speaker, or with a sentence begun just
before the window's end, it writes end-of-text and the rest of the window is silently lost (the
issue that made long-form joins of several speakers lose whole sentences). The VAD that planned the
chunks already knows where people speak, so a speech region that no segment of its chunk comes
near is speech the engine skipped; it goes to the engine again as a chunk of its own.
"""

from __future__ import annotations

from handler.chunking import Chunk
from handler.engines.base import SAMPLE_RATE, Transcript

# A skipped region must be at least this long: shorter ones are breaths and clicks the VAD let in.
MIN_MISSED_S = 1.0
# Segment times are approximate (tiny.en rounds them to about a second): a region this close to a
# segment counts as reached.
TOLERANCE_S = 0.5
# A region counts as skipped when segments reach less than this share of it.
REACHED_SHARE = 0.2


def missed_speech(chunk: Chunk, transcript: Transcript) -> list[Chunk]:
    """Runs of the chunk's speech regions that the transcript's segments do not reach, merged when
    consecutive, each as a chunk to transcribe again."""
    tolerance = TOLERANCE_S * SAMPLE_RATE
    reached = [
        (
            chunk.start + segment.start * SAMPLE_RATE - tolerance,
            chunk.start + segment.end * SAMPLE_RATE + tolerance,
        )
        for segment in transcript.segments
        if segment.text.strip()
    ]
    missed: list[Chunk] = []
    previous_missed = False
    for start, end in chunk.speech:
        overlap = sum(max(0.0, min(end, hi) - max(start, lo)) for lo, hi in reached)
        skipped = end - start >= MIN_MISSED_S * SAMPLE_RATE and overlap < REACHED_SHARE * (end - start)
        if skipped and previous_missed:
            missed[-1] = Chunk(missed[-1].start, end)
        elif skipped:
            missed.append(Chunk(start, end))
        previous_missed = skipped
    return missed
