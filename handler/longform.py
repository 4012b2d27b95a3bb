"""Long audio: split on silence into bounded chunks, transcribe every chunk in batches, stitch back.

Whisper reads 30 s windows and, on dense speech, drops whole sentences when a window is long or a
cut falls inside a word. So audio longer than `max_chunk_s` is cut where nobody speaks (Silero
VAD, shipped with faster-whisper as ONNX), adjacent speech regions are merged up to the bound, and
a region that is itself too long is cut at its quietest moment. The chunks of ALL audios of a job
go to the engine as one flat list in batches, so a job of many short files and a job of one long
file both keep the engine busy. Segment and word times come back relative to the original audio.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from handler.engines.base import SAMPLE_RATE, Engine, SegmentTiming, Transcript, WordTiming

# Chosen by the sweep in docs/performance.md (tiny.en on a 10-minute recording of real speech).
DEFAULT_MAX_CHUNK_S = 30.0


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
    """Samples [start, end) of one audio."""

    start: int
    end: int

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


def _quietest_sample(audio: np.ndarray, lo: int, hi: int) -> int:
    """The centre of the 20 ms frame with the least energy in audio[lo:hi] (a cut that splits no word
    if a tiny pause exists there)."""
    frame = SAMPLE_RATE // 50
    count = (hi - lo) // frame
    if count <= 1:
        return hi
    frames = audio[lo : lo + count * frame].reshape(count, frame)
    energy = np.einsum("ij,ij->i", frames, frames)
    return lo + int(np.argmin(energy)) * frame + frame // 2


def _split_long_region(audio: np.ndarray, region: Chunk, max_len: int) -> list[Chunk]:
    pieces: list[Chunk] = []
    start = region.start
    while region.end - start > max_len:
        # Search the second half of the allowed span, so no piece is needlessly short.
        cut = _quietest_sample(audio, start + max_len // 2, start + max_len)
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

    regions: list[Chunk] = []
    for region in _speech_regions(audio, options):
        regions.extend(_split_long_region(audio, region, max_len))

    chunks: list[Chunk] = []
    for region in regions:
        if chunks and region.end - chunks[-1].start <= max_len:
            # Merge with the chunk before: the pause between them stays in, as a speaker made it.
            chunks[-1] = Chunk(chunks[-1].start, region.end)
        else:
            chunks.append(region)
    return _widen(chunks, total, max_len, int(options.edge_s * SAMPLE_RATE))


def _widen(chunks: list[Chunk], total: int, max_len: int, edge: int) -> list[Chunk]:
    """Grow each chunk into the pauses beside it (up to the middle of each pause, `edge` per side,
    and never past max_len), so a word whose onset the VAD missed is still inside its chunk."""
    widened: list[Chunk] = []
    for index, chunk in enumerate(chunks):
        left_limit = 0 if index == 0 else (chunks[index - 1].end + chunk.start) // 2
        right_limit = total if index == len(chunks) - 1 else (chunk.end + chunks[index + 1].start) // 2
        budget = max(0, max_len - (chunk.end - chunk.start))
        left = min(edge, chunk.start - left_limit, budget // 2)
        right = min(edge, right_limit - chunk.end, budget - left)
        widened.append(Chunk(chunk.start - max(0, left), chunk.end + max(0, right)))
    return widened


def _resolve_max_chunk_s(engine: Engine, max_chunk_s: float | None) -> float | None:
    if max_chunk_s is None:
        # Whisper engines keep the default; an engine that reads long audio natively says None.
        max_chunk_s = getattr(engine, "max_chunk_s", DEFAULT_MAX_CHUNK_S)
    if max_chunk_s is None or math.isinf(max_chunk_s):
        return None
    if max_chunk_s <= 1.0:
        raise ValueError(f"max_chunk_s must be above 1 second, got {max_chunk_s}")
    return float(max_chunk_s)


def whole_audio_limit_s(engine: Engine) -> float | None:
    """The longest audio transcribe_long hands this engine whole (None: any length)."""
    return _resolve_max_chunk_s(engine, None)


def _shift(transcript: Transcript, offset: float, limit: float, floor: float) -> list[SegmentTiming]:
    """The chunk's segments in the audio's time: offset added, within [floor, limit], monotonic."""

    def place(value: float, low: float) -> float:
        return min(max(offset + float(value), low), limit)

    segments: list[SegmentTiming] = []
    for segment in transcript.segments:
        start = place(segment.start, floor)
        end = place(segment.end, start)
        words: list[WordTiming] = []
        word_floor = start
        for word in segment.words:
            word_start = place(word.start, word_floor)
            word_end = place(word.end, word_start)
            words.append(WordTiming(start=word_start, end=word_end, text=word.text))
            word_floor = word_start
        segments.append(SegmentTiming(start=start, end=end, text=segment.text, words=words))
        floor = start
    return segments


def _stitch(
    audio: np.ndarray, chunks: list[Chunk], parts: list[Transcript], language: str | None
) -> Transcript:
    duration = audio.shape[0] / SAMPLE_RATE
    segments: list[SegmentTiming] = []
    texts: list[str] = []
    spoken: Counter[str] = Counter()
    for chunk, part in zip(chunks, parts, strict=True):
        floor = segments[-1].start if segments else 0.0
        limit = min(chunk.end / SAMPLE_RATE, duration)
        segments.extend(_shift(part, chunk.start / SAMPLE_RATE, limit, floor))
        if part.text.strip():
            texts.append(part.text.strip())
        if part.language:
            spoken[part.language] += chunk.end - chunk.start
    detected = spoken.most_common(1)[0][0] if spoken else None
    return Transcript(text=" ".join(texts), segments=segments, language=language or detected)


def _calls(durations: list[float], max_items: int, max_audio_s: float) -> list[list[int]]:
    """Consecutive positions grouped into engine calls: up to max_items audios and max_audio_s
    seconds each (one audio longer than that has a call of its own)."""
    calls: list[list[int]] = []
    seconds = 0.0
    for position, duration in enumerate(durations):
        if calls and len(calls[-1]) < max_items and seconds + duration <= max_audio_s:
            calls[-1].append(position)
            seconds += duration
        else:
            calls.append([position])
            seconds = duration
    return calls


def transcribe_long(
    engine: Engine,
    audios: list[np.ndarray],
    *,
    language: str | None = None,
    word_timestamps: bool = False,
    max_chunk_s: float | None = None,
    batch_size: int | None = None,
    options: ChunkingOptions | None = None,
) -> list[Transcript]:
    """Transcribe 16 kHz mono arrays of any length; one Transcript per input, in order.

    max_chunk_s: None takes the engine's `max_chunk_s` attribute (DEFAULT_MAX_CHUNK_S when it has
    none; an engine that sets it to None reads long audio whole). math.inf turns chunking off.
    Audio no longer than the bound reaches the engine as it is. Each engine call carries up to the
    engine's batch_limits() (batch_size, when given, caps the number of audios per call).
    """
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    limits = engine.batch_limits()
    max_items = batch_size or limits.max_items
    bound = _resolve_max_chunk_s(engine, max_chunk_s)
    plans: list[list[Chunk]] = []
    for audio in audios:
        total = int(audio.shape[0])
        if bound is None or total <= bound * SAMPLE_RATE:
            plans.append([Chunk(0, total)])
        else:
            plans.append(plan_chunks(audio, bound, options))

    flat = [(index, chunk) for index, plan in enumerate(plans) for chunk in plan]
    # Similar lengths side by side: a batch pads to its longest member (NeMo) and Whisper's
    # decoder finishes a batch when its longest text does.
    order = sorted(range(len(flat)), key=lambda i: flat[i][1].end - flat[i][1].start)
    results: list[Transcript | None] = [None] * len(flat)
    sizes = [(flat[i][1].end - flat[i][1].start) / SAMPLE_RATE for i in order]
    for picked_positions in _calls(sizes, max_items, limits.max_audio_s):
        picked = [order[position] for position in picked_positions]
        batch = [audios[flat[i][0]][flat[i][1].start : flat[i][1].end] for i in picked]
        transcripts = engine.transcribe(batch, language=language, word_timestamps=word_timestamps)
        if len(transcripts) != len(batch):
            raise RuntimeError(f"engine returned {len(transcripts)} transcripts for {len(batch)} audios")
        for i, transcript in zip(picked, transcripts, strict=True):
            results[i] = transcript

    out: list[Transcript] = []
    position = 0
    for index, plan in enumerate(plans):
        parts = [result for result in results[position : position + len(plan)] if result is not None]
        position += len(plan)
        if len(plan) == 1 and plan[0].start == 0 and plan[0].end == audios[index].shape[0]:
            out.append(parts[0])  # passed through whole: nothing to shift
        else:
            out.append(_stitch(audios[index], plan, parts, language))
    return out
