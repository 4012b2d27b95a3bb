"""The Engine interface: load once at worker start-up, transcribe batches of 16 kHz mono audio."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

SAMPLE_RATE = 16_000


@dataclass
class WordTiming:
    start: float
    end: float
    text: str
    probability: float | None = None  # the engine's confidence in the word, where it gives one
    speaker: str | None = None  # set by handler.speaker_assign when the job asks for diarization


@dataclass
class SegmentTiming:
    start: float
    end: float
    text: str
    words: list[WordTiming] = field(default_factory=list)
    # Whisper's own quality measures (OpenAI's verbose_json has them); None where the engine has none.
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    compression_ratio: float | None = None
    language: str | None = None  # the language this stretch was transcribed in, where known
    speaker: str | None = None


@dataclass
class Transcript:
    """One audio's transcript; times in seconds from the start of that audio."""

    text: str
    segments: list[SegmentTiming]
    language: str | None = None
    # How sure the detection was; None when nothing was detected (given, or the engine cannot say).
    language_probability: float | None = None
    # Each language's probability where the engine detected one (weighs chunks of long audio).
    language_probabilities: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class DecodeOptions:
    """What one audio is transcribed with. Per audio, so two items of one job never share settings."""

    language: str | None = None
    task: str = "transcribe"  # or "translate" (to English)
    prompt: str | None = None
    hotwords: tuple[str, ...] = ()
    word_timestamps: bool = False


@dataclass(frozen=True)
class OptionProblem:
    """Why an engine cannot honour an option: the job input field and a message naming the model."""

    field: str
    message: str


@dataclass(frozen=True)
class BatchLimits:
    """How much one transcribe() call should carry for the engine to run at its best.

    The job pipeline fills each engine call up to these limits (whichever is reached first), and
    long-form chunking hands the engine its chunks in calls of the same size: a call that is too
    small leaves batch slots (or CPU streams) idle, one that is too large holds more decoded audio
    in memory than the engine can use at once.
    """

    max_items: int
    max_audio_s: float

    def group(self, durations: list[float]) -> list[list[int]]:
        """Consecutive positions grouped into calls within these limits (one audio longer than
        max_audio_s has a call of its own)."""
        calls: list[list[int]] = []
        seconds = 0.0
        for position, duration in enumerate(durations):
            if calls and len(calls[-1]) < self.max_items and seconds + duration <= self.max_audio_s:
                calls[-1].append(position)
                seconds += duration
            else:
                calls.append([position])
                seconds = duration
        return calls


class EngineError(Exception):
    """The engine failed on this batch. gpu_failed marks CUDA errors that poison the process."""

    def __init__(self, message: str, gpu_failed: bool = False) -> None:
        super().__init__(message)
        self.gpu_failed = gpu_failed


class Engine(ABC):
    """A loaded model. Constructed once per worker process; transcribe() is called per batch."""

    model_id: str
    engine_name: str
    device: str

    @abstractmethod
    def transcribe(
        self,
        audios: list[np.ndarray],
        language: str | None = None,
        word_timestamps: bool = False,
        options: Sequence[DecodeOptions] | None = None,
    ) -> list[Transcript]:
        """Transcribe float32 16 kHz mono arrays; one Transcript per input, in order.

        options: one per audio; when given, it replaces language and word_timestamps.
        """

    def check_options(self, options: DecodeOptions) -> OptionProblem | None:
        """Whether this model can honour the options; engines that can do more override it."""
        return plain_options_problem(self.model_id, options)

    def batch_limits(self) -> BatchLimits:
        """What one transcribe() call should carry; engines with a batch sweet spot override it."""
        return BatchLimits(max_items=8, max_audio_s=8 * 30.0)

    def smoke_test(self) -> None:
        """Run one second of silence through the model so a broken GPU or model fails at start-up."""
        self.transcribe([np.zeros(SAMPLE_RATE, dtype=np.float32)])


def per_audio_options(
    count: int, language: str | None, word_timestamps: bool, options: Sequence[DecodeOptions] | None
) -> list[DecodeOptions]:
    """Each audio's options: the given ones, or the call's language and word_timestamps for all."""
    if options is None:
        return [DecodeOptions(language=language, word_timestamps=word_timestamps)] * count
    if len(options) != count:
        raise ValueError(f"{len(options)} options for {count} audios")
    return list(options)


def plain_options_problem(model_id: str, options: DecodeOptions) -> OptionProblem | None:
    """For an engine with no prompt, hotwords or translation: which of those was asked for."""
    if options.task != "transcribe":
        return OptionProblem("task", f"model {model_id!r} cannot translate; only task 'transcribe'")
    if options.prompt:
        return OptionProblem("prompt", f"model {model_id!r} takes no prompt")
    if options.hotwords:
        return OptionProblem("hotwords", f"model {model_id!r} takes no hotwords")
    return None
