"""Whisper through faster-whisper (CTranslate2): float16 on a GPU, int8 on the CPU."""

from __future__ import annotations

import math
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from handler.engines.base import (
    SAMPLE_RATE,
    Arrivals,
    BatchLimits,
    Engine,
    EngineError,
    SegmentTiming,
    Transcript,
    WordTiming,
)
from handler.engines.gpu_memory import windows_for_memory
from handler.engines.whisper_intake import OnlinePacker
from handler.engines.whisper_packing import (
    UNCOVERED_SPEECH_LIMIT_S,
    WINDOW_S,
    TimedText,
    Window,
    owner_of,
    plan_windows,
    uncovered_speech_s,
    unfinished,
    word_owners,
)
from handler.engines.whisper_windows import DecodedWindow, decode_windows, encode_window

if TYPE_CHECKING:
    from faster_whisper.tokenizer import Tokenizer
    from faster_whisper.transcribe import Segment

# Models are local folders; a hub lookup at run time would be a bug, so make it impossible.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Rounds of batched windows per call: a window the decoder left unfinished continues from where
# it stopped in the next round (as faster-whisper's loop seeks), and a packed audio whose share
# cannot be trusted gets a window of its own in the next round. What is left after the last round, and every
# window failing faster-whisper's quality thresholds, goes the sequential way.
MAX_ROUNDS = 8
# Less than this left after a window's last complete segment is not worth a window: it holds at
# most the tail of a pause.
MIN_REMAINDER_S = 0.2


def _clamp(value: float, duration: float) -> float:
    return min(max(float(value), 0.0), duration)


def _env_positive_int(name: str) -> int | None:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw.isdigit() and int(raw) > 0 else None


def _default_streams(device: str) -> int:
    """How many CTranslate2 calls run at once.

    On the CPU, CTranslate2's intra-op threads scale poorly on a model this small: two streams of
    one thread each beat one stream using both cores (docs/performance.md). On a GPU one stream
    keeps the device busy.
    """
    configured = _env_positive_int("STENOPOD_WHISPER_STREAMS")
    if configured is not None:
        return configured
    return 1 if device == "cuda" else max(1, os.cpu_count() or 1)


@dataclass
class _Piece:
    """A stretch of one input audio still to transcribe: all of it, or what a window left over."""

    index: int  # the input audio
    offset_s: float  # where the stretch starts in that audio
    audio: np.ndarray
    own_window: bool = False  # a shared window could not be attributed: one to itself next

    @property
    def duration_s(self) -> float:
        return self.audio.shape[0] / SAMPLE_RATE

    def after(self, seek_s: float) -> _Piece:
        start = int(round(seek_s * SAMPLE_RATE))
        return _Piece(self.index, self.offset_s + start / SAMPLE_RATE, self.audio[start:])


@dataclass
class _Round:
    """What one round of windows made of its pieces."""

    done: list[tuple[_Piece, Transcript]] = field(default_factory=list)
    again: list[_Piece] = field(default_factory=list)  # into the next round's windows
    sequential: list[_Piece] = field(default_factory=list)  # to faster-whisper's transcribe()


class WhisperEngine(Engine):
    """A CTranslate2 Whisper model folder, loaded once.

    Audios up to 30 s (the usual backlog, and long-form chunks) are decoded in batches of 30 s
    windows through CTranslate2 directly: short ones packed several to a window (see
    whisper_packing for why and how), longer ones a window each; a window the decoder leaves
    unfinished continues from its last complete segment in the next batch, as faster-whisper's
    own loop would. Audios longer than a window, that need language detection on a multilingual
    model, or whose batched decode fails faster-whisper's quality thresholds go through
    faster-whisper's sequential transcribe() with beam 5, as the plain loop does, several at once
    on parallel CTranslate2 streams (num_workers). Long-form chunking is the caller's job
    (handler.longform), hence vad_filter=False here. On the CPU, transcribe_arriving() takes a
    job's first call audio by audio and encodes its windows while the rest is still fetched.
    """

    engine_name = "whisper"

    def __init__(
        self,
        model_id: str,
        path: Path,
        device: str | None = None,
        *,
        pack: bool | None = None,
        beam_size: int = 5,
    ) -> None:
        import ctranslate2
        from faster_whisper import WhisperModel

        if device is None:
            device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        self.model_id = model_id
        self.device = device
        self.path = Path(path)
        self.beam_size = beam_size
        # Batched windows are off only on request (STENOPOD_WHISPER_PACK=0): the comparison in the docs.
        self.pack = pack if pack is not None else os.environ.get("STENOPOD_WHISPER_PACK", "1") != "0"
        compute_type = "float16" if device == "cuda" else "int8"
        self.streams = _default_streams(device)
        cpu_threads = max(1, (os.cpu_count() or 1) // self.streams) if device == "cpu" else 0
        self.model = WhisperModel(
            str(self.path),
            device=device,
            compute_type=compute_type,
            cpu_threads=cpu_threads,
            num_workers=self.streams,
            local_files_only=True,
        )
        # Windows per CTranslate2 call: on a GPU as many as its free memory holds (with a cap);
        # on the CPU the beam search's gain from batching levels off at about eight.
        self.windows_per_call = _env_positive_int("STENOPOD_WHISPER_WINDOW_BATCH") or (
            windows_for_memory(self.path, beam_size) if device == "cuda" else 12
        )
        self._pool = (
            ThreadPoolExecutor(self.streams, thread_name_prefix="whisper") if self.streams > 1 else None
        )
        # Counters for the benchmark and tests: windows decoded, audios that shared one, window
        # remainders carried to the next round, audios that fell back to the sequential path.
        self._stats_lock = threading.Lock()
        self.stats = {
            "windows": 0,
            "packed_audios": 0,
            "remainders": 0,
            "fallback_audios": 0,
            "split_segments": 0,
            "uncovered": 0,
        }

    def _count(self, name: str, amount: int) -> None:
        # Calls may run in parallel (the job keeps two in flight): counters are shared.
        with self._stats_lock:
            self.stats[name] += amount

    def batch_limits(self) -> BatchLimits:
        # A call should fill every stream's batch of windows once: fewer leaves a core idle.
        windows = self.streams * self.windows_per_call
        return BatchLimits(max_items=2 * windows, max_audio_s=windows * WINDOW_S)

    # --- the interface --------------------------------------------------------------------------

    def transcribe(
        self,
        audios: list[np.ndarray],
        language: str | None = None,
        word_timestamps: bool = False,
    ) -> list[Transcript]:
        arrays = [np.ascontiguousarray(audio, dtype=np.float32) for audio in audios]
        packable = set(self._packable(arrays, language))
        pending = [_Piece(index, 0.0, arrays[index]) for index in sorted(packable)]
        sequential = [
            _Piece(index, 0.0, arrays[index]) for index in range(len(arrays)) if index not in packable
        ]
        try:
            return self._rounds(arrays, pending, sequential, language, word_timestamps)
        except RuntimeError as error:
            raise EngineError(f"whisper failed: {error}", gpu_failed="CUDA" in str(error)) from error

    @property
    def streams_arrivals(self) -> bool:  # type: ignore[override]
        # On the CPU windows are encoded one at a time anyway, so each can be encoded as soon as
        # it fills. On a GPU one batched encode is faster, and outputs encoded apart would have
        # to be gathered from device memory: there the call waits for its audios.
        return self.pack and self.device == "cpu"

    def transcribe_arriving(
        self,
        arrivals: Arrivals,
        language: str | None = None,
        word_timestamps: bool = False,
    ) -> list[Transcript]:
        """The first round's windows packed and encoded while the audios are still arriving
        (whisper_intake), its beam search once the intake is closed; then as transcribe()."""
        if not self.streams_arrivals or (self.model.model.is_multilingual and language is None):
            return super().transcribe_arriving(arrivals, language, word_timestamps)
        arrays: list[np.ndarray] = []
        pieces: list[_Piece] = []  # the first round's; its windows' placements index this list
        sequential: list[_Piece] = []
        packer = OnlinePacker()
        encodes: list[tuple[Window, Future[np.ndarray]]] = []
        # When each encode ran ([start, end], end inf while it runs): the intake's idle time is
        # what none of them covers.
        busy: list[list[float]] = []

        def encode(window: Window, audios: list[np.ndarray]) -> np.ndarray:
            interval = [time.perf_counter(), math.inf]
            busy.append(interval)
            try:
                return encode_window(self.model, window, audios)
            finally:
                interval[1] = time.perf_counter()

        def submit(window: Window) -> None:
            audios = [piece.audio for piece in pieces]
            if self._pool is None:
                future: Future[np.ndarray] = Future()
                future.set_result(encode(window, audios))
            else:
                future = self._pool.submit(encode, window, audios)
            encodes.append((window, future))

        try:
            intake_started = time.perf_counter()
            try:
                while (audio := arrivals.next(idle=False)) is not None:
                    array = np.ascontiguousarray(audio, dtype=np.float32)
                    arrays.append(array)
                    piece = _Piece(len(arrays) - 1, 0.0, array)
                    if not 0 < array.shape[0] <= WINDOW_S * SAMPLE_RATE:
                        sequential.append(piece)
                        continue
                    pieces.append(piece)
                    ready = packer.add(len(pieces) - 1, piece.duration_s)
                    # A window for each stream the encoder has free; the rest waits for more audio.
                    running = sum(not future.done() for _, future in encodes) + len(ready)
                    ready += packer.full_windows(self.streams - running)
                    for window in ready:
                        submit(window)
            finally:
                spans = [(start, end) for start, end in list(busy)]
                arrivals.add_idle(_uncovered(intake_started, time.perf_counter(), spans))
            for window in packer.finish():
                submit(window)
            planned = [(window, future.result()) for window, future in encodes]
            first = self._batched_round(pieces, language, word_timestamps, planned=planned)
            self._count("fallback_audios", len(first.sequential))
            return self._rounds(
                arrays, first.again, sequential + first.sequential, language, word_timestamps, first
            )
        except RuntimeError as error:
            raise EngineError(f"whisper failed: {error}", gpu_failed="CUDA" in str(error)) from error

    def _rounds(
        self,
        arrays: list[np.ndarray],
        pending: list[_Piece],
        sequential: list[_Piece],
        language: str | None,
        word_timestamps: bool,
        first: _Round | None = None,
    ) -> list[Transcript]:
        """Rounds of batched windows until every piece is done (first: a round already run), then
        the sequential path for what is left, and each audio's transcript put together."""
        parts: list[list[tuple[float, Transcript]]] = [[] for _ in arrays]
        for piece, transcript in first.done if first is not None else []:
            parts[piece.index].append((piece.offset_s, transcript))
        for _ in range(MAX_ROUNDS - (first is not None)):
            if not pending:
                break
            outcome = self._batched_round(pending, language, word_timestamps)
            for piece, transcript in outcome.done:
                parts[piece.index].append((piece.offset_s, transcript))
            sequential.extend(outcome.sequential)
            self._count("fallback_audios", len(outcome.sequential))
            pending = outcome.again
        self._count("fallback_audios", len(pending))
        sequential.extend(pending)
        sequential_results = self._map(
            lambda piece: self._transcribe_one(piece.audio, language, word_timestamps), sequential
        )
        for piece, transcript in zip(sequential, sequential_results, strict=True):
            parts[piece.index].append((piece.offset_s, transcript))
        spoken = self._spoken(language)
        return [_assemble(parts[index], arrays[index], spoken) for index in range(len(arrays))]

    def _map(self, func: Any, values: list[Any]) -> list[Any]:
        # CTranslate2 releases the GIL while it computes, so threads give real parallel streams.
        if self._pool is None or len(values) < 2:
            return [func(value) for value in values]
        return list(self._pool.map(func, values))

    def _spoken(self, language: str | None) -> str | None:
        """What a batched decode used: the given language, or English, all an English-only model speaks."""
        if self.model.model.is_multilingual:
            return language
        return "en"

    def _packable(self, arrays: list[np.ndarray], language: str | None) -> list[int]:
        """Audios that may be decoded in batched windows: up to 30 s, not empty, and with a known
        language (one window has one language token; detecting it per audio would cost an
        encoder pass each)."""
        if not self.pack or (self.model.model.is_multilingual and language is None):
            return []
        limit = WINDOW_S * SAMPLE_RATE
        return [index for index, audio in enumerate(arrays) if 0 < audio.shape[0] <= limit]

    # --- batched windows ----------------------------------------------------------------------------

    def _tokenizer(self, language: str | None) -> Tokenizer:
        from faster_whisper.tokenizer import Tokenizer

        multilingual = self.model.model.is_multilingual
        return Tokenizer(
            self.model.hf_tokenizer,
            multilingual,
            task="transcribe",
            language=(language or "en") if multilingual else None,
        )

    def _groups(self, windows: list[Window]) -> list[list[Window]]:
        """The windows dealt out to the streams, most speech first, so every stream gets an even
        share; no group above windows_per_call."""
        if not windows:
            return []
        per_round = self.streams * self.windows_per_call
        count = min(len(windows), self.streams * math.ceil(len(windows) / per_round))
        ordered = sorted(windows, key=lambda window: -sum(p.end_s - p.start_s for p in window.placements))
        return [group for group in (ordered[position::count] for position in range(count)) if group]

    def _batched_round(
        self,
        pieces: list[_Piece],
        language: str | None,
        word_timestamps: bool,
        planned: list[tuple[Window, np.ndarray]] | None = None,
    ) -> _Round:
        """Plan windows for the pieces (planned: windows already packed and encoded, with their
        encoder outputs), decode them in batches, and sort out what each window made."""
        if planned is None:
            windows = plan_windows(
                [piece.duration_s for piece in pieces],
                alone={position for position, piece in enumerate(pieces) if piece.own_window},
            )
            encoded: dict[int, np.ndarray] = {}
        else:
            windows = [window for window, _ in planned]
            encoded = {id(window): output for window, output in planned}
        audios = [piece.audio for piece in pieces]
        tokenizer = self._tokenizer(language)
        spoken = self._spoken(language) or "en"
        decoded: list[DecodedWindow] = [
            item
            for group in self._map(
                lambda group: decode_windows(
                    self.model,
                    group,
                    audios,
                    tokenizer,
                    beam_size=self.beam_size,
                    word_timestamps=word_timestamps,
                    encode_one_by_one=self.device == "cpu",
                    encoded=[encoded[id(window)] for window in group] if encoded else None,
                ),
                self._groups(windows),
            )
            for item in group
        ]
        self._count("windows", len(windows))
        outcome = _Round()
        for item in decoded:
            placements = item.window.placements
            if len(placements) == 1:
                self._settle_single(item, pieces[placements[0].index], spoken, word_timestamps, outcome)
                continue
            attributed = self._attribute(item, audios, spoken, word_timestamps)
            self._count("packed_audios", len(attributed))
            for placement in placements:
                piece = pieces[placement.index]
                if placement.index in attributed:
                    outcome.done.append((piece, attributed[placement.index]))
                else:
                    # A window of its own next round: decoded as the plain loop would, in a batch.
                    outcome.again.append(_Piece(piece.index, piece.offset_s, piece.audio, own_window=True))
        return outcome

    def _settle_single(
        self, item: DecodedWindow, piece: _Piece, language: str, word_timestamps: bool, outcome: _Round
    ) -> None:
        """A window of one audio: keep its complete segments, carry what it left to the next round."""
        if not item.reliable:
            # The sequential path retries at higher temperatures, as faster-whisper would.
            outcome.sequential.append(piece)
            return
        if item.seek_s is not None and item.seek_s <= 0.0:
            outcome.sequential.append(piece)  # nothing complete: another window would decode the same
            return
        duration = piece.duration_s
        segments = [
            self._packed_segment(segment, segment.get("words") or [], 0.0, duration)
            for segment in item.segments
            if segment["text"]
        ]
        segments = [segment for segment in segments if segment.text]
        if not word_timestamps:
            for segment in segments:
                segment.words = []
        outcome.done.append(
            (piece, Transcript(text=" ".join(s.text for s in segments), segments=segments, language=language))
        )
        if item.seek_s is not None and duration - item.seek_s >= MIN_REMAINDER_S:
            self._count("remainders", 1)
            outcome.again.append(piece.after(item.seek_s))

    def _attribute(
        self,
        item: DecodedWindow,
        audios: list[np.ndarray],
        language: str,
        word_timestamps: bool,
    ) -> dict[int, Transcript]:
        """Give each placement of a shared window its words and segments, in its own time; leave
        out any audio whose share cannot be trusted (the caller gives those a window of their own
        in the next round).

        Each word goes to the audio its aligned time overlaps most (tiny.en rounds segment
        timestamps to whole seconds, so segment times alone cannot say where one audio ends); a
        segment whose words fall in two audios makes both doubtful.
        """
        window = item.window
        if not item.reliable:
            return {}
        doubtful = set(unfinished(window, item.decoded_until_s))
        owned: dict[int, list[tuple[dict[str, Any], list[dict[str, Any]]]]] = {
            placement.index: [] for placement in window.placements
        }
        for segment in item.segments:
            if not segment["text"]:
                continue
            words = [word for word in segment.get("words") or [] if str(word["word"]).strip()]
            if not words:
                owner = owner_of(TimedText(segment["start"], segment["end"]), window)
                if owner is None:
                    doubtful.update(placement.index for placement in window.placements)
                    continue
                owned[owner.index].append((segment, []))
                continue
            owners = word_owners([TimedText(word["start"], word["end"]) for word in words], window)
            if owners is None:
                doubtful.update(placement.index for placement in window.placements)
                continue
            groups: list[tuple[int, list[dict[str, Any]]]] = []
            for word, owner in zip(words, owners, strict=True):
                if groups and groups[-1][0] == owner.index:
                    groups[-1][1].append(word)
                else:
                    groups.append((owner.index, [word]))
            if len(groups) > 1:
                # One segment across two audios: seen when two takes of one sentence shared a
                # window and the decoder wrote it once, its words then spread over both. Neither
                # share can be trusted; both get a window of their own in the next round.
                self._count("split_segments", 1)
                doubtful.update(index for index, _ in groups)
                continue
            for index, group in groups:
                owned[index].append((segment, group))
        out: dict[int, Transcript] = {}
        for placement in window.placements:
            pieces = owned[placement.index]
            if placement.index in doubtful or not pieces:
                # No words at all for an audio that is not silence: the decoder skipped it.
                continue
            duration = audios[placement.index].shape[0] / SAMPLE_RATE
            segments = [
                self._packed_segment(segment, words, placement.start_s, duration) for segment, words in pieces
            ]
            segments = [segment for segment in segments if segment.text]
            words_in_audio = [word for segment in segments for word in segment.words]
            if words_in_audio and (
                uncovered_speech_s(audios[placement.index], words_in_audio[0].start, words_in_audio[-1].end)
                > UNCOVERED_SPEECH_LIMIT_S
            ):
                # Speech the words do not reach: the decoder skipped part of this audio.
                self._count("uncovered", 1)
                continue
            if not word_timestamps:
                for segment in segments:
                    segment.words = []
            out[placement.index] = Transcript(
                text=" ".join(segment.text for segment in segments), segments=segments, language=language
            )
        return out

    @staticmethod
    def _packed_segment(
        segment: dict[str, Any], words: list[dict[str, Any]], offset: float, duration: float
    ) -> SegmentTiming:
        """A segment (or the part of one whose words are this audio's) in the audio's own time."""
        if not words:
            start = _clamp(segment["start"] - offset, duration)
            end = max(start, _clamp(segment["end"] - offset, duration))
            return SegmentTiming(start=start, end=end, text=segment["text"], words=[])
        timings: list[WordTiming] = []
        floor = 0.0
        for word in words:
            start = max(floor, _clamp(word["start"] - offset, duration))
            end = max(start, _clamp(word["end"] - offset, duration))
            timings.append(WordTiming(start=start, end=end, text=str(word["word"]).strip()))
            floor = start
        text = "".join(str(word["word"]) for word in words).strip()
        return SegmentTiming(start=timings[0].start, end=timings[-1].end, text=text, words=timings)

    # --- sequential path (faster-whisper's transcribe, as the plain loop) ---------------------------

    def _transcribe_one(self, audio: np.ndarray, language: str | None, word_timestamps: bool) -> Transcript:
        duration = audio.shape[0] / SAMPLE_RATE
        if audio.size == 0:
            # No inference to ask; an English-only model can only ever mean English.
            return Transcript(
                text="", segments=[], language=language if self.model.model.is_multilingual else "en"
            )
        # Deterministic settings: beam search as faster-whisper's default, no carry-over of
        # previous text (it makes errors snowball on long audio), no VAD (the caller chunks).
        pieces, info = self.model.transcribe(
            audio,
            language=language,
            beam_size=self.beam_size,
            word_timestamps=word_timestamps,
            condition_on_previous_text=False,
            vad_filter=False,
        )
        segments = [self._segment(piece, duration, word_timestamps) for piece in pieces]
        segments = [segment for segment in segments if segment.text]
        text = " ".join(segment.text for segment in segments)
        # info.language is what was used: detected, given, or "en" forced by an English-only model.
        return Transcript(text=text, segments=segments, language=info.language)

    @staticmethod
    def _segment(piece: Segment, duration: float, word_timestamps: bool) -> SegmentTiming:
        words: list[WordTiming] = []
        if word_timestamps:
            for word in piece.words or []:
                start = _clamp(word.start, duration)
                words.append(
                    WordTiming(
                        start=start, end=max(start, _clamp(word.end, duration)), text=word.word.strip()
                    )
                )
        start = _clamp(piece.start, duration)
        end = max(start, _clamp(piece.end, duration))
        return SegmentTiming(start=start, end=end, text=piece.text.strip(), words=words)


def _uncovered(start: float, end: float, busy: list[tuple[float, float]]) -> float:
    """Seconds of [start, end] that no interval in busy covers (the engine had nothing running)."""
    covered, reach = 0.0, start
    for lo, hi in sorted(busy):
        lo, hi = max(lo, reach), min(hi, end)
        if hi > lo:
            covered += hi - lo
            reach = hi
    return max(0.0, end - start - covered)


def _assemble(parts: list[tuple[float, Transcript]], audio: np.ndarray, language: str | None) -> Transcript:
    """One audio's transcript from the stretches it was decoded in, each shifted to its offset."""
    if len(parts) == 1 and parts[0][0] == 0.0:
        return parts[0][1]
    duration = audio.shape[0] / SAMPLE_RATE
    segments: list[SegmentTiming] = []
    floor = 0.0
    for offset, part in sorted(parts, key=lambda pair: pair[0]):
        for segment in part.segments:
            start = max(floor, _clamp(segment.start + offset, duration))
            words: list[WordTiming] = []
            word_floor = start
            for word in segment.words:
                word_start = max(word_floor, _clamp(word.start + offset, duration))
                words.append(
                    WordTiming(word_start, max(word_start, _clamp(word.end + offset, duration)), word.text)
                )
                word_floor = word_start
            end = max(start, _clamp(segment.end + offset, duration), words[-1].end if words else start)
            segments.append(
                SegmentTiming(start=start, end=min(end, duration), text=segment.text, words=words)
            )
            floor = start
    first_language = next(
        (part.language for _, part in sorted(parts, key=lambda p: p[0]) if part.language), None
    )
    return Transcript(
        text=" ".join(segment.text for segment in segments),
        segments=segments,
        language=language or first_language,
    )
