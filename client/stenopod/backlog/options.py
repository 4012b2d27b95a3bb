"""BacklogOptions: everything a run needs, checked once; stored in the ledger for `stenopod retry`.

The fields are listed here and only here: the CLI and stenopod.api build options by field name
(BacklogOptions.from_values), and the ledger stores and reads them back the same way.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any
from urllib.parse import urlparse

from stenopod.backlog.errors import UsageError
from stenopod.backlog.job_options import job_fields, options_problem
from stenopod.backlog.packing import DEFAULT_JOB_SECONDS, DEFAULT_MAX_ITEMS_PER_JOB
from stenopod.backlog.preflight import PreflightError, check_settings
from stenopod.schema import MAX_SPEAKERS, OutputFormat, Timestamps
from stenopod.storage import DEFAULT_PRESIGN_SECONDS

DEFAULT_FORMATS = ("json", "txt", "srt", "vtt")
DEFAULT_MAX_IN_FLIGHT = 16
DEFAULT_MAX_ATTEMPTS = 3


@dataclass
class BacklogOptions:
    """Everything a run needs; stored in the ledger so `stenopod retry` can run it again."""

    sources: list[str]
    output: str
    endpoint: str | None = None  # RunPod endpoint id or base URL; None: the embedded local endpoint
    model: str | None = None
    formats: tuple[str, ...] = DEFAULT_FORMATS
    timestamps: str = "segment"
    language: str | None = None
    diarize: bool = False  # speaker labels (the worker needs its diarizer baked in)
    max_speakers: int | None = None
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    job_seconds: float = DEFAULT_JOB_SECONDS
    max_items_per_job: int = DEFAULT_MAX_ITEMS_PER_JOB
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    webhook_listen: str | None = None
    webhook_url: str | None = None
    presign_expiry_s: int = DEFAULT_PRESIGN_SECONDS
    poll_initial_s: float = 0.5
    poll_max_s: float = 10.0
    # With webhooks, status is still polled (webhooks get lost) but this rarely.
    webhook_poll_s: float = 60.0
    # Before asking again, under the same token, after a /run whose answers were all lost.
    resubmit_wait_s: float = 10.0
    gpu: str | None = None
    price_per_s: float | None = None
    price_table: str | None = None
    # Sent with every job (stenopod.backlog.job_options): translation, vocabulary, subtitle limits.
    task: str = "transcribe"
    prompt: str | None = None
    hotwords: tuple[str, ...] = ()
    subtitles: dict[str, Any] | None = None

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> BacklogOptions:
        """Options from any mapping that names fields (CLI arguments, a call's keywords, the ledger);
        other keys are ignored, missing ones take their defaults."""
        known = {item.name: values[item.name] for item in fields(cls) if item.name in values}
        known["formats"] = tuple(known.get("formats") or DEFAULT_FORMATS)
        known["hotwords"] = tuple(known.get("hotwords") or ())
        if isinstance(known.get("sources"), str):
            known["sources"] = [known["sources"]]
        known["sources"] = list(known.get("sources") or [])
        return cls(**known)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["formats"] = list(self.formats)
        data["hotwords"] = list(self.hotwords)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BacklogOptions:
        return cls.from_values(data)

    def job_fields(self) -> dict[str, Any]:
        """The transcription options as job input fields."""
        return job_fields(self.task, self.prompt, self.hotwords, self.subtitles)

    def validate(self) -> None:
        if not self.sources:
            raise UsageError(
                "give at least one source (a file, folder, glob, URL, manifest, s3:// prefix or feed)"
            )
        if not self.output:
            raise UsageError("--output: give a folder or an s3://bucket/prefix/ URI")
        known_formats = {fmt.value for fmt in OutputFormat}
        bad = [fmt for fmt in self.formats if fmt not in known_formats]
        if bad or not self.formats:
            raise UsageError(
                f"--formats: {','.join(bad) or 'empty'} not among {','.join(sorted(known_formats))}"
            )
        if self.timestamps not in {value.value for value in Timestamps}:
            raise UsageError("--timestamps: must be none, segment or word")
        if self.max_speakers is not None and not self.diarize:
            raise UsageError("--max-speakers: applies only with --diarize")
        if self.max_speakers is not None and not 1 <= self.max_speakers <= MAX_SPEAKERS:
            raise UsageError(
                f"--max-speakers: 1 to {MAX_SPEAKERS}, the most speakers the diarizer tells apart"
            )
        for name in ("max_in_flight", "max_attempts", "max_items_per_job"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')}: must be at least 1")
        if self.job_seconds <= 0:
            raise UsageError("--job-seconds: must be positive")
        if self.presign_expiry_s < 60:
            raise UsageError("--presign-expiry: must be at least 60 seconds")
        try:
            check_settings(self.language, self.webhook_listen)
        except PreflightError as error:
            raise UsageError(str(error)) from None
        problem = options_problem(self.job_fields())
        if problem is not None:
            raise UsageError(problem)


def is_local_endpoint(endpoint: str | None) -> bool:
    """True for the embedded endpoint and for a `stenopod serve` URL on a loopback address."""
    if endpoint is None:
        return True
    if "://" not in endpoint:
        return False
    host = urlparse(endpoint).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
