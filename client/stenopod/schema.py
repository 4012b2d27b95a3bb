"""The wire format shared by the worker and the client: the job input here, its answer in schema_output.

One home for these facts: the worker (handler/) imports this module, the SDK builds its requests
with it, and `stenopod schema` prints the JSON Schema generated from it.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .addresses import url_problem
from .schema_output import (
    ErrorCode,
    ItemError,
    ItemResult,
    JobError,
    JobOutput,
    Segment,
    Timings,
    Word,
    describe_validation_error,
    output_json_schema,
)

# The output half lives in schema_output.py; both halves are imported from here.
__all__ = [
    "ErrorCode",
    "ItemError",
    "ItemResult",
    "JobError",
    "JobOutput",
    "Segment",
    "Timings",
    "Word",
    "describe_validation_error",
    "output_json_schema",
]

# An item id becomes part of an object key (<prefix><id>.<format>), so it must never climb out of
# the prefix or smuggle control characters: a conservative character set, no "..", bounded length.
# '/' separates folders (a backlog keeps its sources' folders); each folder name is as strict as a
# whole id, so there is no leading '/', no empty or dot-only segment.
MAX_ITEM_ID_CHARS = 128
ITEM_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$"
_ITEM_ID_RE = re.compile(ITEM_ID_PATTERN)
AUDIO_SCHEMES = ("http://", "https://", "s3://", "data:")
MAX_ITEMS_PER_JOB = 1000
MAX_AUDIO_REF_CHARS = 16 * 1024 * 1024  # data: URIs are capped again, more tightly, by the fetcher
# The most speakers the image's diarizer tells apart (Sortformer 4spk: four output slots).
MAX_SPEAKERS = 4


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False, use_enum_values=False)


class Timestamps(str, Enum):
    none = "none"
    segment = "segment"
    word = "word"


class OutputFormat(str, Enum):
    json = "json"
    txt = "txt"
    srt = "srt"
    vtt = "vtt"


class Task(str, Enum):
    transcribe = "transcribe"
    translate = "translate"  # to English (Whisper models that can)


MAX_PROMPT_CHARS = 2000  # Whisper reads about 900 characters of it; longer is a mistake, not a prompt
MAX_HOTWORDS = 100
MAX_HOTWORD_CHARS = 100


class Subtitles(_Strict):
    """How srt/vtt cues are cut from word times. Defaults a subtitle editor accepts (Netflix-like)."""

    max_line_width: int = Field(default=42, ge=10, le=200, description="Characters per line at most.")
    max_line_count: int = Field(default=2, ge=1, le=5, description="Lines per cue at most.")
    max_duration_s: float = Field(default=6.0, ge=1.0, le=60.0, description="Seconds a cue is shown at most.")


def is_valid_item_id(value: str) -> bool:
    if len(value) > MAX_ITEM_ID_CHARS or not _ITEM_ID_RE.fullmatch(value) or ".." in value:
        return False
    # A folder named like a transcript (ep.json/) would need the path another item's ep.json
    # takes: one of the two could never be written.
    suffixes = tuple(f".{fmt.value}" for fmt in OutputFormat)
    return not any(folder.lower().endswith(suffixes) for folder in value.split("/")[:-1])


ITEM_ID_RULE = (
    "1-128 characters of letters, digits, '.', '_', '-' and '/' between folder names, each starting "
    "with a letter or digit, with no '..' and no folder name ending in .json, .txt, .srt or .vtt"
)


def _check_item_id(value: str) -> str:
    if not is_valid_item_id(value):
        raise ValueError(f"must be {ITEM_ID_RULE} (it becomes part of an object key)")
    return value


def _check_token(value: str) -> str:
    # A token names one record, <output>_stenopod/submissions/<token>.json: no folders in it.
    if "/" in value:
        raise ValueError("must not contain '/'")
    return _check_item_id(value)


def _check_audio_ref(value: str) -> str:
    if not value or not value.strip():
        raise ValueError("must not be empty")
    if not value.lower().startswith(AUDIO_SCHEMES):
        raise ValueError("must be an http(s):// URL, an s3://bucket/key URI or a data:audio/...;base64 URI")
    if value.lower().startswith(("http://", "https://")):
        _check_http_url(value)
    return value


def _check_language(value: str | None) -> str | None:
    return None if value is None else value.strip().lower()


def _check_prompt(value: str | None) -> str | None:
    return value.strip() or None if value is not None else None


def _check_hotwords(value: list[str] | None) -> list[str] | None:
    if value is None:
        return None
    words = list(dict.fromkeys(word.strip() for word in value))
    if any(not word for word in words):
        raise ValueError("each hotword must have a character other than a space")
    return words or None


def _check_http_url(value: str) -> None:
    # Refused here, naming the field, rather than deep inside a fetch or a callback delivery.
    problem = url_problem(value)
    if problem is not None:
        raise ValueError(f"the URL {problem}")


ItemId = Annotated[
    str,
    Field(
        description="Stable id; becomes the object key stem <prefix><id>.<format> ('/' separates folders)."
    ),
]
AudioRef = Annotated[
    str,
    Field(
        max_length=MAX_AUDIO_REF_CHARS,
        description="http(s):// URL, s3://bucket/key, or data:audio/...;base64,...",
    ),
]


class Callback(_Strict):
    """Where the worker POSTs each finished item, signed with HMAC-SHA256 (see stenopod.signing)."""

    url: str = Field(description="http(s) URL that receives one POST per finished item.")
    secret: SecretStr = Field(min_length=16, description="Shared secret for the signature; never echoed.")

    @field_validator("url")
    @classmethod
    def _http_only(cls, value: str) -> str:
        if not value.lower().startswith(("http://", "https://")):
            raise ValueError("must be an http(s):// URL")
        _check_http_url(value)
        return value


Language = Annotated[str, Field(min_length=2, max_length=8, description="ISO code, such as en or de.")]
Prompt = Annotated[
    str,
    Field(
        max_length=MAX_PROMPT_CHARS,
        description=(
            "Text Whisper reads before every 30 s window of the audio (names, spellings, style). "
            "With the hotwords it gets 223 tokens; a longer prompt keeps its end."
        ),
    ),
]
Hotwords = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=MAX_HOTWORD_CHARS)]],
    Field(
        max_length=MAX_HOTWORDS,
        description="Words or phrases to spell as given (Whisper: its hotwords; Parakeet: NeMo phrase boosting).",
    ),
]


class JobItem(_Strict):
    id: ItemId
    audio: AudioRef
    # Per item, over the job's own: two items of one job can differ in language and vocabulary.
    language: Language | None = Field(default=None, description="This item's language (over the job's).")
    prompt: Prompt | None = Field(default=None, description="This item's prompt (over the job's).")
    hotwords: Hotwords | None = Field(default=None, description="This item's hotwords (over the job's).")

    _language = field_validator("language")(_check_language)
    _prompt = field_validator("prompt")(_check_prompt)
    _hotwords = field_validator("hotwords")(_check_hotwords)

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        return _check_item_id(value)

    @field_validator("audio")
    @classmethod
    def _audio(cls, value: str) -> str:
        return _check_audio_ref(value)


class JobInput(_Strict):
    """The `input` object of a RunPod job."""

    audio: AudioRef | None = Field(default=None, description="One audio file; alternative to items.")
    id: ItemId | None = Field(
        default=None, description="Id for the single `audio` item (default: derived from the URL)."
    )
    items: list[JobItem] | None = Field(
        default=None, max_length=MAX_ITEMS_PER_JOB, description="Several files in one job."
    )
    model: str | None = Field(default=None, description="Model id; default: the image's default model.")
    language: Language | None = Field(default=None, description="ISO code; null: detected.")
    task: Task = Field(default=Task.transcribe, description="translate: English text from any language.")
    prompt: Prompt | None = None
    hotwords: Hotwords | None = None
    subtitles: Subtitles | None = Field(
        default=None,
        description="Re-cut srt/vtt cues on word times to these limits ({} for the defaults); absent: "
        "one cue per segment.",
    )
    timestamps: Timestamps = Timestamps.segment
    formats: list[OutputFormat] = Field(
        default_factory=lambda: [OutputFormat.json, OutputFormat.txt, OutputFormat.srt, OutputFormat.vtt],
        min_length=1,
    )
    output: str | None = Field(
        default=None,
        description="s3://bucket/prefix/ (or, in local mode, a directory path / file:// URI). "
        "Absent: results come back inline.",
    )
    diarize: bool = Field(
        default=False,
        description="Label who speaks when: `speaker` on every segment and word (SPEAKER_0, ... in order of "
        "first words), `speakers` per item, a segment split where the speaker changes. Needs an image with "
        "the diarizer baked in (model_unavailable otherwise).",
    )
    max_speakers: int | None = Field(
        default=None,
        ge=1,
        description=f"With diarize: at most this many speakers ({MAX_SPEAKERS}, the diarizer's own limit, "
        "when absent): the speakers who talk most keep their labels, and any further voice's speech goes "
        "to the kept speaker the diarizer finds most likely there.",
    )
    callback: Callback | None = None
    submission: str | None = Field(
        default=None,
        description="Client's token for this submission. With an output, the worker records the RunPod job "
        "id under <output>_stenopod/submissions/<token>.json, so a client restarted after a crash finds a "
        "job it had submitted, and a second job with the same token is answered with duplicate_of "
        "instead of being transcribed twice.",
    )

    _language = field_validator("language")(_check_language)
    _prompt = field_validator("prompt")(_check_prompt)
    _hotwords = field_validator("hotwords")(_check_hotwords)

    @field_validator("submission")
    @classmethod
    def _submission(cls, value: str | None) -> str | None:
        return None if value is None else _check_token(value)

    @field_validator("audio")
    @classmethod
    def _audio_ref(cls, value: str | None) -> str | None:
        return None if value is None else _check_audio_ref(value)

    @field_validator("id")
    @classmethod
    def _id(cls, value: str | None) -> str | None:
        return None if value is None else _check_item_id(value)

    @field_validator("max_speakers")
    @classmethod
    def _speaker_cap(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and value > MAX_SPEAKERS:
            raise ValueError(
                f"at most {MAX_SPEAKERS}: the diarizer tells apart up to {MAX_SPEAKERS} speakers"
            )
        if value is not None and not info.data.get("diarize"):
            raise ValueError("applies only with 'diarize': true")
        return value

    @field_validator("formats")
    @classmethod
    def _unique_formats(cls, value: list[OutputFormat]) -> list[OutputFormat]:
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _exactly_one_source(self) -> JobInput:
        if (self.audio is None) == (self.items is None):
            raise ValueError("give exactly one of 'audio' or 'items'")
        if self.items is not None:
            if not self.items:
                raise ValueError("'items' must not be empty")
            seen: set[str] = set()
            for item in self.items:
                if item.id in seen:
                    raise ValueError(f"duplicate item id {item.id!r} in 'items'")
                seen.add(item.id)
        if self.id is not None and self.items is not None:
            raise ValueError("'id' names the single 'audio' item; with 'items' give each item its id")
        return self

    def job_items(self) -> list[JobItem]:
        """The items to transcribe, whichever form the input used."""
        if self.items is not None:
            return list(self.items)
        assert self.audio is not None
        return [JobItem(id=self.id or default_item_id(self.audio), audio=self.audio)]


def default_item_id(audio: str) -> str:
    """A readable, key-safe id for a single `audio` given without an id (e.g. ep1 for .../ep1.mp3)."""
    if audio.lower().startswith("data:"):
        return "audio"
    path = audio.split("?", 1)[0].split("#", 1)[0].rstrip("/")
    stem = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._")[:128]
    safe = re.sub(r"\.{2,}", ".", safe)
    return safe if safe and is_valid_item_id(safe) else "audio"


def parse_job_input(raw: Any) -> JobInput | JobError:
    """Validate a job's `input`; never raises for bad input."""
    if not isinstance(raw, dict):
        return JobError(
            code=ErrorCode.invalid_input,
            message=f"input: must be a JSON object, got {type(raw).__name__}",
            fields=["input"],
        )
    try:
        return JobInput.model_validate(raw)
    except ValidationError as error:
        return describe_validation_error(error)


def input_json_schema() -> dict[str, Any]:
    return JobInput.model_json_schema()
