"""Whisper through faster-whisper (CTranslate2): float16 on a GPU, int8 on the CPU.

Every audio is transcribed on its own, as the plain faster-whisper loop would (WhisperModel.transcribe,
beam 5) but at temperature 0 only, so a transcript depends only on its audio and options, never on
what else is in the job, the order things arrive in, or an earlier run. Speed comes from running several audios at once on parallel CTranslate2 streams
(num_workers), not from sharing windows between audios: packing short clips into one 30 s window
made each clip's words depend on its neighbours and cost up to 2.7 WER points (docs/performance.md).
Long-form chunking is the caller's job (handler.chunking, bound `max_chunk_s`), hence no VAD here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from handler.engines.base import (
    SAMPLE_RATE,
    BatchLimits,
    DecodeOptions,
    Engine,
    EngineError,
    OptionProblem,
    SegmentTiming,
    Transcript,
    WordTiming,
    per_audio_options,
)

if TYPE_CHECKING:
    from faster_whisper.transcribe import Segment, TranscriptionInfo

# Models are local folders; a hub lookup at run time would be a bug, so make it impossible.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Long audio reaches Whisper in chunks of at most one 30 s window, cut at the longest pauses
# (handler.chunking), with skipped speech transcribed again (handler.coverage). Measured on a
# multi-speaker join, a continuous reading and German speech (docs/performance.md), 30 s chunks cut
# this way beat 15 and 20 s on every case: what lost sentences at speaker changes was chunks filled
# greedily up to the bound, which cut inside sentences, not the window's length.
WHISPER_MAX_CHUNK_S = 30.0
# Audios a call should carry per stream: enough that no stream idles while another finishes.
AUDIOS_PER_STREAM = 16
# Whisper reads at most half its 448-token context as the text before a window (faster-whisper
# cuts the rest from the END, where the hotwords are): the prompt and hotwords together get this
# many tokens. Hotwords that do not fit are refused; a prompt is cut from its start to what the
# hotwords leave, as OpenAI's Whisper keeps a long prompt's end, but keeps at least this many tokens.
CONTEXT_TOKENS = 223
MIN_PROMPT_TOKENS = 32


def _clamp(value: float, duration: float) -> float:
    return min(max(float(value), 0.0), duration)


def default_streams(device: str, cpu_count: int | None = None) -> int:
    """How many audios are transcribed at once.

    On the CPU, CTranslate2's intra-op threads scale poorly on a small model: one stream per core
    of one thread each ran 2.2x the plain loop's speed with both cores on one stream (tiny.en, 16
    clips, docs/performance.md). On a GPU a few streams keep the device busy between one audio's
    decoding steps.
    """
    return 4 if device == "cuda" else max(1, cpu_count or os.cpu_count() or 1)


class WhisperEngine(Engine):
    """A CTranslate2 Whisper model folder, loaded once; audios transcribed each on its own, in parallel."""

    engine_name = "whisper"
    max_chunk_s = WHISPER_MAX_CHUNK_S

    def __init__(
        self,
        model_id: str,
        path: Path,
        device: str | None = None,
        *,
        streams: int | None = None,
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
        self.streams = streams or default_streams(device)
        cpu_threads = max(1, (os.cpu_count() or 1) // self.streams) if device == "cpu" else 0
        self.model = WhisperModel(
            str(self.path),
            device=device,
            compute_type="float16" if device == "cuda" else "int8",
            cpu_threads=cpu_threads,
            num_workers=self.streams,
            local_files_only=True,
        )
        self._pool = ThreadPoolExecutor(self.streams, thread_name_prefix="whisper")

    @property
    def multilingual(self) -> bool:
        return bool(self.model.model.is_multilingual)

    def batch_limits(self) -> BatchLimits:
        items = AUDIOS_PER_STREAM * self.streams
        return BatchLimits(max_items=items, max_audio_s=items * self.max_chunk_s)

    @property
    def languages(self) -> list[str]:
        """The language codes this model can be asked for (["en"] for an English-only model)."""
        return list(self.model.supported_languages)

    @property
    def can_translate(self) -> bool:
        # English-only models know no other language to translate from, and large-v3-turbo was
        # fine-tuned on transcription only: asked to translate, it transcribes.
        turbo = "turbo" in self.model_id.lower() or "turbo" in self.path.name.lower()
        return self.multilingual and not turbo

    def check_options(self, options: DecodeOptions) -> OptionProblem | None:
        if options.language is not None and options.language not in self.languages:
            return OptionProblem(
                "language",
                f"model {self.model_id!r} does not know language {options.language!r}; "
                f"it knows: {', '.join(self.languages)}",
            )
        if options.task == "translate" and not self.can_translate:
            why = "is English-only" if not self.multilingual else "was not trained to translate"
            return OptionProblem(
                "task",
                f"model {self.model_id!r} {why} and cannot translate; use a multilingual Whisper model "
                "other than large-v3-turbo, or task 'transcribe'",
            )
        return self._context_problem(options)

    def _tokens(self, text: str) -> int:
        return len(self.model.hf_tokenizer.encode(" " + text, add_special_tokens=False).ids)

    def _context_problem(self, options: DecodeOptions) -> OptionProblem | None:
        """Hotwords that do not fit Whisper's context, or leave a prompt too little of it: refused,
        as faster-whisper would silently cut them."""
        words = _hotword_text(options)
        used = self._tokens(words) if words else 0
        if used > CONTEXT_TOKENS:
            return OptionProblem(
                "hotwords",
                f"the hotwords take {used} tokens; model {self.model_id!r} reads at most {CONTEXT_TOKENS} "
                "tokens of prompt and hotwords together before each 30 s window: use fewer or shorter hotwords",
            )
        prompt = (options.prompt or "").strip()
        if prompt and words:
            room = CONTEXT_TOKENS - used - 1  # one token for the space between them
            if room < min(MIN_PROMPT_TOKENS, self._tokens(prompt)):
                return OptionProblem(
                    "prompt",
                    f"the hotwords take {used} of the {CONTEXT_TOKENS} tokens model {self.model_id!r} reads "
                    f"before each 30 s window, leaving {max(room, 0)} for the prompt (it needs at least "
                    f"{MIN_PROMPT_TOKENS}, or all of a shorter prompt): use fewer hotwords or a shorter prompt",
                )
        return None

    def transcribe(
        self,
        audios: list[np.ndarray],
        language: str | None = None,
        word_timestamps: bool = False,
        options: Sequence[DecodeOptions] | None = None,
    ) -> list[Transcript]:
        arrays = [np.ascontiguousarray(audio, dtype=np.float32) for audio in audios]
        settings = per_audio_options(len(arrays), language, word_timestamps, options)
        # Longest first, so the streams end together; CTranslate2 releases the GIL while it computes.
        order = sorted(range(len(arrays)), key=lambda index: -arrays[index].size)
        futures = {
            index: self._pool.submit(self._transcribe_one, arrays[index], settings[index]) for index in order
        }
        try:
            return [futures[index].result() for index in range(len(arrays))]
        except RuntimeError as error:
            raise EngineError(f"whisper failed: {error}", gpu_failed="CUDA" in str(error)) from error

    def _transcribe_one(self, audio: np.ndarray, options: DecodeOptions) -> Transcript:
        duration = audio.shape[0] / SAMPLE_RATE
        if audio.size == 0:
            # No inference to ask; an English-only model can only ever mean English.
            return Transcript(text="", segments=[], language=options.language if self.multilingual else "en")
        # Beam search at temperature 0 only, no carry-over of the previous window's text (on long
        # audio it makes one error snowball into the next). faster-whisper's temperature fallback
        # (0.2 ... 1.0 where a window looks like a hallucination) samples from CTranslate2's random
        # generator, which is seeded once per thread and cannot be seeded per audio: the same noisy
        # audio gave a different transcript on every run. The product promises the same transcript
        # for the same audio and options, so a window is decoded once, greedily by beam, and kept.
        # The prompt goes in as faster-whisper's `hotwords` text, which precedes EVERY 30 s window
        # (its initial_prompt reaches only the first); for the first window the tokens are the same.
        pieces, info = self.model.transcribe(
            audio,
            language=options.language,
            task=options.task,
            beam_size=self.beam_size,
            temperature=0.0,
            word_timestamps=options.word_timestamps,
            condition_on_previous_text=False,
            vad_filter=False,
            hotwords=self._context(options),
        )
        segments = [_segment(piece, duration, options.word_timestamps, info.language) for piece in pieces]
        segments = [segment for segment in segments if segment.text]
        # info.language is what was used: detected, given, or "en" forced by an English-only model.
        return Transcript(
            text=" ".join(segment.text for segment in segments),
            segments=segments,
            language=info.language,
            **_detection(info, options, self.multilingual),
        )

    def _context(self, options: DecodeOptions) -> str | None:
        """The text Whisper reads before each window: the prompt, then the hotwords.

        check_options has made sure the hotwords fit CONTEXT_TOKENS whole and leave the prompt
        room; a prompt longer than that room loses its start (its end, nearest the speech, is kept,
        as Whisper keeps the end of a long prompt), so faster-whisper never cuts the hotwords."""
        words = _hotword_text(options)
        prompt = (options.prompt or "").strip()
        if not prompt:
            return words or None
        tokenizer = self.model.hf_tokenizer
        tokens = tokenizer.encode(" " + prompt, add_special_tokens=False).ids
        keep = min(len(tokens), CONTEXT_TOKENS - (self._tokens(words) + 1 if words else 0))
        while keep > 0:
            context = f"{tokenizer.decode(tokens[-keep:]).strip()} {words}".strip()
            # Counted as a whole: a cut inside a word can encode to more tokens than it was.
            if self._tokens(context) <= CONTEXT_TOKENS:
                return context
            keep -= 1
        return words or None


def _hotword_text(options: DecodeOptions) -> str:
    return ", ".join(word.strip() for word in options.hotwords if word.strip())


def _detection(info: TranscriptionInfo, options: DecodeOptions, multilingual: bool) -> dict[str, object]:
    """language_probability(ies) only where Whisper detected the language: a given language, or
    an English-only model's forced "en", was not detected and has no probability to report."""
    if options.language is not None or not multilingual:
        return {}
    probabilities = {code: float(p) for code, p in info.all_language_probs or [] if p >= 0.001}
    return {
        "language_probability": float(info.language_probability),
        "language_probabilities": probabilities or {info.language: float(info.language_probability)},
    }


def _segment(piece: Segment, duration: float, word_timestamps: bool, language: str) -> SegmentTiming:
    words: list[WordTiming] = []
    if word_timestamps:
        for word in piece.words or []:
            start = _clamp(word.start, duration)
            words.append(
                WordTiming(
                    start=start,
                    end=max(start, _clamp(word.end, duration)),
                    text=word.word.strip(),
                    probability=float(word.probability),
                )
            )
    start = _clamp(piece.start, duration)
    end = max(start, _clamp(piece.end, duration))
    return SegmentTiming(
        start=start,
        end=end,
        text=piece.text.strip(),
        words=words,
        avg_logprob=float(piece.avg_logprob),
        no_speech_prob=float(piece.no_speech_prob),
        compression_ratio=float(piece.compression_ratio),
        language=language,
    )
