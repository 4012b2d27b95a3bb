"""The wire format's answer half: item results, error codes, a job's failure (see schema.py)."""

from __future__ import annotations

import json
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, ValidationError


class ErrorCode(str, Enum):
    """Stable error codes. Clients branch on these; never rename one."""

    invalid_input = "invalid_input"  # the job input failed validation (names the field)
    url_forbidden = "url_forbidden"  # scheme not allowed, or host resolves to a private address
    fetch_failed = "fetch_failed"  # network error, HTTP 4xx/5xx, timeout, S3 get failed
    too_large = "too_large"  # the audio exceeds STENOPOD_MAX_AUDIO_BYTES (or the data: cap)
    too_long = "too_long"  # the decoded duration exceeds STENOPOD_MAX_AUDIO_SECONDS
    not_audio = "not_audio"  # no decodable audio stream (HTML, image, zip, truncated file)
    model_unavailable = "model_unavailable"  # the requested model is not baked into this image
    inference_failed = "inference_failed"  # the engine raised while transcribing
    gpu_failed = "gpu_failed"  # a CUDA error: the worker asks RunPod to replace it
    storage_failed = "storage_failed"  # writing an output to object storage failed
    output_too_large = "output_too_large"  # inline answer over the cap: give an "output"
    callback_failed = "callback_failed"  # the signed callback could not be delivered (item is still ok)
    cancelled = "cancelled"
    internal_error = "internal_error"  # a bug: reported without a traceback, logged on the worker


def _absent(value: Any) -> bool:
    return value is None


# Only diarized transcripts carry speakers; elsewhere the key is left out rather than null.
SpeakerLabel = Annotated[
    str | None,
    Field(default=None, exclude_if=_absent, description="SPEAKER_0, SPEAKER_1, ... (jobs with diarize)."),
]


class Word(BaseModel):
    start: float
    end: float
    word: str
    probability: float | None = Field(
        default=None, description="The engine's confidence, where it gives one."
    )
    speaker: SpeakerLabel = None


class Segment(BaseModel):
    id: int
    start: float
    end: float
    text: str
    words: list[Word] | None = None
    language: str | None = Field(default=None, description="The language this segment was heard in.")
    # Whisper's quality measures, as OpenAI's verbose_json has them; null for engines without them.
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    compression_ratio: float | None = None
    speaker: SpeakerLabel = None


class ItemError(BaseModel):
    code: ErrorCode
    message: str


class Timings(BaseModel):
    fetch_s: float = 0.0
    decode_s: float = 0.0
    plan_s: float = 0.0  # where long audio is cut (handler.chunking), after decoding
    inference_s: float = 0.0
    diarize_s: float = 0.0  # the diarizer's share of its batched calls (jobs with diarize)
    write_s: float = 0.0


class ItemResult(BaseModel):
    id: str
    status: Literal["ok", "error"]
    model: str | None = None
    language: str | None = None
    language_probability: float | None = Field(
        default=None,
        description="How sure the detection was; null when the language was given or not detected.",
    )
    duration_s: float | None = None
    text: str | None = None
    segments: list[Segment] | None = None
    speakers: list[str] | None = Field(
        default=None,
        exclude_if=_absent,
        description="The labels used in this item's segments, in order of first words (jobs with diarize).",
    )
    outputs: dict[str, str] = Field(default_factory=dict, description="format -> URI of the written file")
    timings: Timings = Field(default_factory=Timings)
    rtfx: float | None = Field(
        default=None, description="Real-time factor: audio seconds per inference second."
    )
    error: ItemError | None = None


class JobOutput(BaseModel):
    items: list[ItemResult]
    model: str | None = None
    worker: dict[str, Any] | None = Field(default=None, description="Worker facts: version, device, engine.")
    duplicate_of: str | None = Field(
        default=None,
        description="Set instead of transcribing when another job already holds this input's submission token.",
    )


class JobError(BaseModel):
    """What a job that failed as a whole carries, JSON-encoded, in RunPod's `error` string."""

    code: ErrorCode
    message: str
    fields: list[str] | None = None
    items: list[ItemResult] | None = None

    def to_runpod_error(self) -> str:
        return self.model_dump_json(exclude_none=True)

    @classmethod
    def from_runpod_error(cls, error: Any) -> JobError:
        """Parse RunPod's `error` field back; anything not ours becomes internal_error with its text."""
        if isinstance(error, dict):
            payload: Any = error
        else:
            try:
                payload = json.loads(error)
            except (TypeError, ValueError):
                return cls(code=ErrorCode.internal_error, message=str(error)[:2000])
        try:
            return cls.model_validate(payload)
        except ValidationError:
            return cls(code=ErrorCode.internal_error, message=str(error)[:2000])


def describe_validation_error(error: ValidationError, root: str = "input") -> JobError:
    """Turn pydantic's error into an invalid_input JobError naming each offending field.

    The input values themselves are left out: they may hold secrets (callback.secret).
    """
    fields: list[str] = []
    messages: list[str] = []
    for detail in error.errors(include_url=False, include_input=False):
        loc = ".".join([root, *[str(part) for part in detail["loc"]]])
        fields.append(loc)
        messages.append(f"{loc}: {detail['msg']}")
    return JobError(code=ErrorCode.invalid_input, message="; ".join(messages), fields=fields)


def output_json_schema() -> dict[str, Any]:
    return JobOutput.model_json_schema()
