"""Whisper through faster-whisper (CTranslate2): float16 on a GPU, int8 on the CPU."""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from handler.engines.base import SAMPLE_RATE, Engine, EngineError, SegmentTiming, Transcript, WordTiming
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

if TYPE_CHECKING:
    from faster_whisper.tokenizer import Tokenizer
    from faster_whisper.transcribe import Segment

# Models are local folders; a hub lookup at run time would be a bug, so make it impossible.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# faster-whisper's defaults for transcribe(): a decode whose text compresses better than this is
# a repetition loop, one below this average log-probability is unreliable; either sends the
# packed window's audios to the sequential path, which retries at higher temperatures.
COMPRESSION_RATIO_THRESHOLD = 2.4
LOG_PROB_THRESHOLD = -1.0
NO_SPEECH_THRESHOLD = 0.6
MAX_INITIAL_TIMESTAMP_S = 1.0
PACKING_ROUNDS = 2
TIME_PRECISION_S = 0.02  # one timestamp token
PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"


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
class _Decoded:
    """One packed window's decode, split into segments (dicts as faster-whisper makes them)."""

    window: Window
    segments: list[dict[str, Any]]
    decoded_until_s: float
    reliable: bool


def _unfinished_from(tokens: list[int], tokenizer: Tokenizer, window: Window) -> float:
    """Where the speech the decoder left out of a window begins (window.end_s: nothing left out).

    A decode ending in two timestamps ("<|16.80|><|19.52|>" then end of text) closed its last
    segment at 16.80 and announced one at 19.52 that it did not write; one ending in text has an
    unfinished last segment from its last opening timestamp. Both are left out (faster-whisper's
    sequential loop re-reads them from a new window); everything before that time is complete.
    """
    begin = tokenizer.timestamp_begin
    pairs = [i for i in range(1, len(tokens)) if tokens[i] >= begin and tokens[i - 1] >= begin]
    if not pairs:
        return window.end_s  # one segment for the whole window: faster-whisper takes it as complete
    return (tokens[pairs[-1]] - begin) * TIME_PRECISION_S


class WhisperEngine(Engine):
    """A CTranslate2 Whisper model folder, loaded once.

    Short audios (the usual backlog) are packed several to a 30 s window and decoded in batches
    through CTranslate2 directly (see whisper_packing for why and how). Audios that do not fit a
    window, that need language detection on a multilingual model, or whose packed decode cannot be
    attributed safely go through faster-whisper's own sequential transcribe() with beam 5, as the
    plain loop does, several at once on parallel CTranslate2 streams (num_workers). Long-form
    chunking is the caller's job (handler.longform), hence vad_filter=False here.
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
        # Packing is off only on request (STENOPOD_WHISPER_PACK=0): the comparison in the docs.
        self.pack = pack if pack is not None else os.environ.get("STENOPOD_WHISPER_PACK", "1") != "0"
        self.windows_per_call = _env_positive_int("STENOPOD_WHISPER_WINDOW_BATCH") or (
            16 if device == "cuda" else 4
        )
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
        self._pool = (
            ThreadPoolExecutor(self.streams, thread_name_prefix="whisper") if self.streams > 1 else None
        )
        # Counters for the benchmark and tests: how many windows were packed, how many audios fell back.
        self.stats = {"windows": 0, "packed_audios": 0, "fallback_audios": 0, "split_segments": 0}

    # --- the interface --------------------------------------------------------------------------

    def transcribe(
        self,
        audios: list[np.ndarray],
        language: str | None = None,
        word_timestamps: bool = False,
    ) -> list[Transcript]:
        arrays = [np.ascontiguousarray(audio, dtype=np.float32) for audio in audios]
        results: list[Transcript | None] = [None] * len(arrays)
        packable = self._packable(arrays, language)
        try:
            settled: set[int] = set()
            for _ in range(PACKING_ROUNDS):
                pending = [index for index in packable if results[index] is None and index not in settled]
                if not pending:
                    break
                # Audios a window left unattributed (the decoder stopped early, or skipped one)
                # get a second chance in new windows, with other neighbours, before going alone.
                # One that had a window to itself would only get the same decode again.
                done, alone = self._transcribe_packed(arrays, pending, language, word_timestamps)
                for index, transcript in done.items():
                    results[index] = transcript
                settled.update(alone)
            rest = [index for index in range(len(arrays)) if results[index] is None]
            self.stats["fallback_audios"] += len([index for index in rest if index in packable])
            alone_results = self._map(
                lambda i: self._transcribe_one(arrays[i], language, word_timestamps), rest
            )
            for index, transcript in zip(rest, alone_results, strict=True):
                results[index] = transcript
        except RuntimeError as error:
            raise EngineError(f"whisper failed: {error}", gpu_failed="CUDA" in str(error)) from error
        return [transcript for transcript in results if transcript is not None]

    def _map(self, func: Any, values: list[Any]) -> list[Any]:
        # CTranslate2 releases the GIL while it computes, so threads give real parallel streams.
        if self._pool is None or len(values) < 2:
            return [func(value) for value in values]
        return list(self._pool.map(func, values))

    def _packable(self, arrays: list[np.ndarray], language: str | None) -> list[int]:
        """Audios that may share a window: short, not empty, and with a known language (one
        window has one language token; detecting it per audio would cost an encoder pass each).

        Longer audios (long-form chunks of up to 30 s) take faster-whisper's sequential path:
        measured on the 10-minute recording, decoding them as single windows in a batch lost
        words (WER 9.0 % against 5.6 %), and packing VAD chunks lost more (docs/performance.md)."""
        if not self.pack or (self.model.model.is_multilingual and language is None):
            return []
        limit = DEFAULT_CAPACITY_S * SAMPLE_RATE
        return [index for index, audio in enumerate(arrays) if 0 < audio.shape[0] <= limit]

    # --- packed, batched path ----------------------------------------------------------------------

    def _tokenizer(self, language: str | None) -> Tokenizer:
        from faster_whisper.tokenizer import Tokenizer

        multilingual = self.model.model.is_multilingual
        return Tokenizer(
            self.model.hf_tokenizer,
            multilingual,
            task="transcribe",
            language=(language or "en") if multilingual else None,
        )

    def _transcribe_packed(
        self, arrays: list[np.ndarray], packable: list[int], language: str | None, word_timestamps: bool
    ) -> tuple[dict[int, Transcript], set[int]]:
        """The audios' transcripts where attribution is safe, and the audios that had a window alone."""
        durations = [arrays[index].shape[0] / SAMPLE_RATE for index in packable]
        windows = plan_windows(durations, DEFAULT_CAPACITY_S, DEFAULT_GAP_S)
        # Windows hold positions in `packable`; map them back to indices of `arrays`.
        for window in windows:
            window.placements = [
                Placement(packable[placement.index], placement.start_s, placement.end_s)
                for placement in window.placements
            ]
        tokenizer = self._tokenizer(language)
        # What the decode used: the given language, or English, all an English-only model speaks.
        spoken = (language or "en") if self.model.model.is_multilingual else "en"
        # At least one group per stream, so every core has a share; no group above the cap.
        count = min(len(windows), max(self.streams, math.ceil(len(windows) / self.windows_per_call)))
        groups = [windows[position::count] for position in range(count)]
        decoded: list[_Decoded] = [
            item
            for group in self._map(
                lambda group: self._decode_windows(group, arrays, tokenizer, word_timestamps), groups
            )
            for item in group
        ]
        self.stats["windows"] += len(windows)
        out: dict[int, Transcript] = {}
        for item in decoded:
            out.update(self._attribute(item, arrays, spoken, word_timestamps))
        self.stats["packed_audios"] += len(out)
        alone = {window.placements[0].index for window in windows if len(window.placements) == 1}
        return out, alone

    def _decode_windows(
        self, windows: list[Window], arrays: list[np.ndarray], tokenizer: Tokenizer, word_timestamps: bool
    ) -> list[_Decoded]:
        """One batched encode and one batched beam search over the windows, with timestamps."""
        from faster_whisper.audio import pad_or_trim
        from faster_whisper.transcribe import get_compression_ratio, get_suppressed_tokens

        model = self.model
        features = np.stack([pad_or_trim(self._features(window, arrays)) for window in windows])
        encoder_output = model.encode(features)
        prompt = model.get_prompt(tokenizer, [], without_timestamps=False)
        results = model.model.generate(
            encoder_output,
            [list(prompt) for _ in windows],
            beam_size=self.beam_size,
            patience=1,
            length_penalty=1,
            max_length=model.max_length,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=list(get_suppressed_tokens(tokenizer, [-1])),
            max_initial_timestamp_index=int(round(MAX_INITIAL_TIMESTAMP_S / model.time_precision)),
        )
        decoded: list[_Decoded] = []
        frames_per_window = model.feature_extractor.nb_max_frames
        for window, result in zip(windows, results, strict=True):
            tokens = result.sequences_ids[0]
            avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
            text = tokenizer.decode([token for token in tokens if token < tokenizer.eot]).strip()
            reliable = (
                get_compression_ratio(text) <= COMPRESSION_RATIO_THRESHOLD
                and avg_logprob >= LOG_PROB_THRESHOLD
                and not (result.no_speech_prob > NO_SPEECH_THRESHOLD and avg_logprob < LOG_PROB_THRESHOLD)
            )
            segments, _, single_ending = model._split_segments_by_timestamps(
                tokenizer=tokenizer,
                tokens=tokens,
                time_offset=0.0,
                segment_size=frames_per_window,
                segment_duration=window.end_s,
                seek=0,
            )
            decoded_until = window.end_s if single_ending else _unfinished_from(tokens, tokenizer, window)
            decoded.append(_Decoded(window, segments, decoded_until, reliable))
        # Word times say which audio each word belongs to; a window of one audio needs them only
        # when the caller asked for them.
        if word_timestamps or any(len(window.placements) > 1 for window in windows):
            batch = [item.segments for item in decoded]
            for position, segments in enumerate(batch):
                for segment in segments:
                    segment["seek"] = 0
                if not segments:
                    batch[position] = [{"seek": 0, "start": 0.0, "end": 0.0, "tokens": []}]
            model.add_word_timestamps(
                batch,
                tokenizer,
                encoder_output,
                [frames_per_window] * len(batch),
                PREPEND_PUNCTUATIONS,
                APPEND_PUNCTUATIONS,
                0.0,
            )
        for item in decoded:
            for segment in item.segments:
                segment["text"] = tokenizer.decode(
                    [token for token in segment["tokens"] if token < tokenizer.eot]
                ).strip()
        return decoded

    def _features(self, window: Window, arrays: list[np.ndarray]) -> np.ndarray:
        """The window's log-mel features.

        A window of several audios is padded with digital silence to 30 s BEFORE the mel
        transform, as in its gaps: with faster-whisper's padding of the features instead (zeros
        there are not silence), tiny.en took the padding for more speech and stopped before the
        last audio of most windows. A window of one audio is computed exactly as faster-whisper
        does, so that its decode is the plain loop's.
        """
        samples = window_audio(window, arrays)
        if len(window.placements) == 1:
            # faster-whisper's transcribe() leaves out the last frame (its content_frames).
            return self.model.feature_extractor(samples)[:, :-1]
        length = int(WINDOW_S * SAMPLE_RATE)
        return self.model.feature_extractor(np.pad(samples, (0, max(0, length - samples.shape[0]))))

    def _attribute(
        self,
        item: _Decoded,
        arrays: list[np.ndarray],
        language: str,
        word_timestamps: bool,
    ) -> dict[int, Transcript]:
        """Give each placement of the window its words and segments, in its own time; leave out
        any audio whose share cannot be trusted (the caller transcribes those alone).

        Each word goes to the audio its aligned time overlaps most, so a segment that runs across
        the silence between two audios is split there (tiny.en rounds segment
        timestamps to whole seconds, so segment times alone cannot say where one audio ends).
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
                self.stats["split_segments"] += 1
            for index, group in groups:
                owned[index].append((segment, group))
        out: dict[int, Transcript] = {}
        for placement in window.placements:
            pieces = owned[placement.index]
            if placement.index in doubtful or not pieces:
                # No words at all for an audio that is not silence: the decoder skipped it.
                continue
            duration = arrays[placement.index].shape[0] / SAMPLE_RATE
            segments = [
                self._packed_segment(segment, words, placement.start_s, duration) for segment, words in pieces
            ]
            segments = [segment for segment in segments if segment.text]
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
