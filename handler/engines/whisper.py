"""Whisper through faster-whisper (CTranslate2): float16 on a GPU, int8 on the CPU."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from handler.engines.base import SAMPLE_RATE, Engine, EngineError, SegmentTiming, Transcript, WordTiming

if TYPE_CHECKING:
    from faster_whisper.transcribe import Segment

# Models are local folders; a hub lookup at run time would be a bug, so make it impossible.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _clamp(value: float, duration: float) -> float:
    return min(max(float(value), 0.0), duration)


def _default_streams(device: str) -> int:
    """How many arrays to transcribe at once.

    On the CPU, CTranslate2's intra-op threads scale poorly on a model this small: measured with
    tiny.en on 2 cores, two streams of one thread each give 1.8x the throughput of one stream using
    every core, with identical output (docs/performance.md). On a GPU one stream keeps the device busy.
    """
    raw = os.environ.get("STENOPOD_WHISPER_STREAMS", "").strip()
    if raw.isdigit() and int(raw) > 0:
        return int(raw)
    return 1 if device == "cuda" else max(1, os.cpu_count() or 1)


class WhisperEngine(Engine):
    """A CTranslate2 Whisper model folder, loaded once.

    Each array is transcribed by its own faster-whisper call, several at once on parallel
    CTranslate2 streams (num_workers). faster-whisper's batched pipeline is not used: it batches
    the chunks of ONE audio and detects one language for all of them, so feeding it several
    recordings at once would change results (shared language, no temperature fallback).
    Long-form chunking is the caller's job, hence vad_filter=False here.
    """

    engine_name = "whisper"

    def __init__(self, model_id: str, path: Path, device: str | None = None) -> None:
        import ctranslate2
        from faster_whisper import WhisperModel

        if device is None:
            device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        self.model_id = model_id
        self.device = device
        self.path = Path(path)
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

    def transcribe(
        self,
        audios: list[np.ndarray],
        language: str | None = None,
        word_timestamps: bool = False,
    ) -> list[Transcript]:
        if self._pool is None or len(audios) < 2:
            return [self._transcribe_one(audio, language, word_timestamps) for audio in audios]
        # CTranslate2 releases the GIL while it computes, so threads give real parallel streams.
        return list(
            self._pool.map(lambda audio: self._transcribe_one(audio, language, word_timestamps), audios)
        )

    def _transcribe_one(self, audio: np.ndarray, language: str | None, word_timestamps: bool) -> Transcript:
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        duration = audio.shape[0] / SAMPLE_RATE
        if audio.size == 0:
            # No inference to ask; an English-only model can only ever mean English.
            return Transcript(
                text="", segments=[], language=language if self.model.model.is_multilingual else "en"
            )
        try:
            # Deterministic settings: beam search as faster-whisper's default, no carry-over of
            # previous text (it makes errors snowball on long audio), no VAD (the caller chunks).
            pieces, info = self.model.transcribe(
                audio,
                language=language,
                beam_size=5,
                word_timestamps=word_timestamps,
                condition_on_previous_text=False,
                vad_filter=False,
            )
            segments = [self._segment(piece, duration, word_timestamps) for piece in pieces]
        except RuntimeError as error:
            raise EngineError(f"whisper failed: {error}", gpu_failed="CUDA" in str(error)) from error
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
