"""Where long audio is cut: bounded chunks in pauses, planned while the audio is prepared.

Whisper reads 30 s windows and drops whole sentences when a window spans a change of speaker or a
cut falls inside a word. So audio longer than an engine's `max_chunk_s` is cut where nobody speaks
(Silero VAD, shipped with faster-whisper as ONNX), adjacent speech regions are merged up to the
bound, and a region that is itself too long is cut at its quietest moment. For an engine whose
bound is long (Parakeet reads minutes of context), only the stretch before each needed cut is run
through the VAD: a handful of seconds per cut instead of the whole recording.

The job plans an item's chunks in its preparation thread, right after decoding, so the engine's
calls never wait for the VAD (handler.job).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from handler.engines.base import SAMPLE_RATE, Engine

# For an engine that names no bound of its own.
DEFAULT_MAX_CHUNK_S = 30.0
# From this bound on, cuts are few and the engine reads the pauses itself: only the last
# CUT_SEARCH_S before each needed cut goes through the VAD, to find a pause to cut in.
SPARSE_CUTS_FROM_S = 120.0
CUT_SEARCH_S = 20.0


@dataclass(frozen=True)
class ChunkingOptions:
    """How long audio is cut. Defaults come from the sweep in docs/performance.md."""

    pad_s: float = 0.2  # VAD padding around each speech region (Silero's speech_pad_ms)
    edge_s: float = 1.0  # then each chunk widens into the pauses beside it by up to this much:
    # Silero notices a word onset after digital silence late, and a lost "ask" is a lost word
    vad_threshold: float = 0.5  # Silero speech probability above which a 32 ms frame is speech
    min_silence_s: float = 0.3  # a pause at least this long ends a speech region (a cut candidate)
    min_speech_s: float = 0.1  # shorter blips (clicks, breaths) are not speech regions


@dataclass(frozen=True)
class Chunk:
    """Samples [start, end) of one audio, and the speech the VAD found inside (empty: not looked for)."""

    start: int
    end: int
    speech: tuple[tuple[int, int], ...] = ()

    @property
    def duration_s(self) -> float:
        return (self.end - self.start) / SAMPLE_RATE


def _speech_regions(audio: np.ndarray, options: ChunkingOptions) -> list[Chunk]:
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    vad = VadOptions(
        threshold=options.vad_threshold,
        min_speech_duration_ms=int(options.min_speech_s * 1000),
        min_silence_duration_ms=int(options.min_silence_s * 1000),
        speech_pad_ms=int(options.pad_s * 1000),
    )
    regions = get_speech_timestamps(audio, vad, sampling_rate=SAMPLE_RATE)
    return [Chunk(int(region["start"]), int(region["end"])) for region in regions]


def _quietest_sample(audio: np.ndarray, lo: int, hi: int, stretch_s: float = 0.3) -> int:
    """The quietest 20 ms frame of the quietest stretch_s of audio[lo:hi]: where a speaker
    stops for breath or another takes over. One quiet frame alone is not enough: stop consonants
    have those inside words."""
    frame = SAMPLE_RATE // 50
    count = (hi - lo) // frame
    if count <= 1:
        return hi
    frames = audio[lo : lo + count * frame].reshape(count, frame)
    energy = np.einsum("ij,ij->i", frames, frames)
    width = max(1, min(count, int(stretch_s * 50)))
    stretch = np.convolve(energy, np.ones(width), mode="valid")
    first = int(np.argmin(stretch))
    # At the quietest frame of that stretch: its middle may still be the end of a word.
    quietest = first + int(np.argmin(energy[first : first + width]))
    return lo + quietest * frame + frame // 2


def _split_long_region(audio: np.ndarray, region: Chunk, max_len: int) -> list[Chunk]:
    pieces: list[Chunk] = []
    start = region.start
    while region.end - start > max_len:
        # Not in the first third of the allowed span, so no piece is needlessly short.
        cut = _quietest_sample(audio, start + max_len // 3, start + max_len)
        pieces.append(Chunk(start, cut))
        start = cut
    pieces.append(Chunk(start, region.end))
    return pieces


def plan_chunks(audio: np.ndarray, max_chunk_s: float, options: ChunkingOptions | None = None) -> list[Chunk]:
    """Where to cut one audio: chunks of at most max_chunk_s, cut in pauses, in time order.

    Audio no longer than max_chunk_s is one chunk. Long audio in which the VAD finds no speech
    gives no chunks: Whisper invents text ("Thank you.") on silence and music.
    """
    options = options or ChunkingOptions()
    total = int(audio.shape[0])
    max_len = int(max_chunk_s * SAMPLE_RATE)
    if total <= max_len:
        return [Chunk(0, total)] if total else []

    if max_chunk_s >= SPARSE_CUTS_FROM_S:
        return _cut_where_needed(audio, max_len, options)

    regions: list[Chunk] = []
    for region in _speech_regions(audio, options):
        regions.extend(_split_long_region(audio, region, max_len))

    groups = _group(regions, max_len) if regions else []
    chunks = [
        Chunk(group[0].start, group[-1].end, tuple((r.start, r.end) for r in group)) for group in groups
    ]
    return _widen(audio, chunks, max_len, int(options.edge_s * SAMPLE_RATE))


def _group(regions: list[Chunk], max_len: int) -> list[list[Chunk]]:
    """Consecutive speech regions grouped into chunks of at most max_len, split at the longest pauses.

    Filling each chunk greedily would cut at whatever pause comes last before the bound, often one
    inside a sentence, and put the change of speaker a moment earlier inside the chunk: Whisper then
    drops the sentence begun at its end. The longest pause is where a turn or a sentence ends. A
    split that leaves a side under a quarter of the bound is taken only when no other pause fits.
    """
    groups: list[list[Chunk]] = []
    pending = [regions]  # a stack, leftmost on top: groups come out in time order, no recursion
    while pending:
        part = pending.pop()
        if part[-1].end - part[0].start <= max_len:
            groups.append(part)
            continue
        gaps = range(1, len(part))
        balanced = [
            i
            for i in gaps
            if part[i - 1].end - part[0].start >= max_len // 4
            and part[-1].end - part[i].start >= max_len // 4
        ]
        split = max(
            balanced or gaps, key=lambda i: (part[i].start - part[i - 1].end, -abs(2 * i - len(part)))
        )
        pending += [part[split:], part[:split]]
    return groups


def _cut_where_needed(audio: np.ndarray, max_len: int, options: ChunkingOptions) -> list[Chunk]:
    """Contiguous chunks of at most max_len, each cut in the longest pause of the stretch before
    the bound (the quietest moment there when nobody pauses)."""
    total = int(audio.shape[0])
    search = min(max_len // 2, int(CUT_SEARCH_S * SAMPLE_RATE))
    chunks: list[Chunk] = []
    start = 0
    while total - start > max_len:
        cut = _pause_in(audio, start + max_len - search, start + max_len, options)
        chunks.append(Chunk(start, cut))
        start = cut
    chunks.append(Chunk(start, total))
    return chunks


def _pause_in(audio: np.ndarray, lo: int, hi: int, options: ChunkingOptions) -> int:
    """The middle of the longest stretch of audio[lo:hi] without speech."""
    regions = _speech_regions(audio[lo:hi], options)
    edges = [0, *(edge for region in regions for edge in (region.start, region.end)), hi - lo]
    gaps = [(edges[i], edges[i + 1]) for i in range(0, len(edges) - 1, 2)]
    first, last = max(gaps, key=lambda gap: gap[1] - gap[0])
    if last - first < int(options.min_silence_s * SAMPLE_RATE):
        return _quietest_sample(audio, lo, hi)
    return lo + (first + last) // 2


def _widen(audio: np.ndarray, chunks: list[Chunk], max_len: int, edge: int) -> list[Chunk]:
    """Grow each chunk into the pauses beside it (up to the pause's quietest frame, `edge` per side,
    and never past max_len), so a word whose onset the VAD missed is still inside its chunk."""
    total = int(audio.shape[0])
    meets = [_quietest_sample(audio, a.end, b.start, 0.0) for a, b in zip(chunks, chunks[1:], strict=False)]
    widened: list[Chunk] = []
    for index, chunk in enumerate(chunks):
        left_limit = 0 if index == 0 else meets[index - 1]
        right_limit = total if index == len(chunks) - 1 else meets[index]
        budget = max(0, max_len - (chunk.end - chunk.start))
        left = min(edge, chunk.start - left_limit, budget // 2)
        right = min(edge, right_limit - chunk.end, budget - left)
        widened.append(Chunk(chunk.start - max(0, left), chunk.end + max(0, right), chunk.speech))
    return widened


def chunk_bound(engine: Engine, max_chunk_s: float | None = None) -> float | None:
    """The longest audio an engine is handed whole: max_chunk_s when given, else the engine's own
    `max_chunk_s` (DEFAULT_MAX_CHUNK_S when it names none); None means any length."""
    if max_chunk_s is None:
        # Whisper engines keep the default; an engine that reads long audio natively says None.
        max_chunk_s = getattr(engine, "max_chunk_s", DEFAULT_MAX_CHUNK_S)
    if max_chunk_s is None or math.isinf(max_chunk_s):
        return None
    if max_chunk_s <= 1.0:
        raise ValueError(f"max_chunk_s must be above 1 second, got {max_chunk_s}")
    return float(max_chunk_s)


def plan_audio(audio: np.ndarray, bound: float | None, options: ChunkingOptions | None = None) -> list[Chunk]:
    """One audio's chunks: the whole of it when no longer than the bound (or with no bound)."""
    total = int(audio.shape[0])
    if bound is None or total <= bound * SAMPLE_RATE:
        return [Chunk(0, total)]
    return plan_chunks(audio, bound, options)
