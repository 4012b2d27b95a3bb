"""OpenAI's transcription routes on `stenopod serve`: POST /v1/audio/transcriptions and /translations.

Code written against OpenAI's audio API (the official clients, base_url=http://HOST:PORT/v1) runs
unchanged. There is no second transcription path: the upload becomes an ordinary job, its audio a
data: URI in the job input, queued beside the RunPod routes' jobs and run by the same workers; the
worker answers inline and openai_answers.py shapes that answer as OpenAI's.

The upload cap (MAX_UPLOAD_BYTES, 10 MB) is the worker's cap on audio carried in a job as a data:
URI, which is also RunPod's /run payload limit; larger files go through /v2/<id>/run with an
http(s):// or s3:// URL.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import BodyPartReader, web

from stenopod.languages import is_language_code
from stenopod.local.client_api import RunRequest
from stenopod.local.jobs import Job, JobState
from stenopod.local.openai_answers import (
    GRANULARITIES,
    RESPONSE_FORMATS,
    OpenAIError,
    job_error_to_openai,
    transcript_response,
)
from stenopod.schema import ItemResult, JobError, JobOutput

if TYPE_CHECKING:
    from stenopod.local.server import LocalEndpoint

log = logging.getLogger("stenopod.local")

MAX_UPLOAD_BYTES = 10 * 1000**2  # = the worker's default STENOPOD_MAX_DATA_URI_BYTES
MAX_FIELD_BYTES = 64 * 1024  # every form field but the file (a prompt is a few hundred words)
# The whole form: the file's cap plus one field's worth for all the others together, so the
# server never holds much more than one upload per request, however the form is made up.
MAX_FORM_BYTES = MAX_UPLOAD_BYTES + MAX_FIELD_BYTES
UPLOAD_ITEM_ID = "upload"
# OpenAI's own model names: code written for OpenAI sends one of these; it gets the server's default.
OPENAI_MODEL_NAMES = frozenset({"whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe"})
FORM_FIELDS = frozenset(
    {"file", "model", "language", "prompt", "response_format", "temperature", "stream"}
    | {"timestamp_granularities[]", "timestamp_granularities"}
)
# The only field given more than once: one value per granularity. Any other is given at most once.
LIST_FIELDS = frozenset({"timestamp_granularities"})
DISCONNECT_POLL_S = 1.0
_MEDIA_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+-]*/[A-Za-z0-9][A-Za-z0-9.+-]*$")


@dataclass
class AudioRequest:
    """One /v1/audio/* form, read and checked."""

    audio: bytes = b""
    media_type: str = "application/octet-stream"
    model: str | None = None
    language: str | None = None
    prompt: str | None = None
    response_format: str = "json"
    temperature: float = 0.0
    granularities: list[str] = field(default_factory=list)


class OpenAIRoutes:
    """The /v1 routes, answering with OpenAI's shapes; jobs go through the endpoint like any other."""

    def __init__(self, endpoint: LocalEndpoint) -> None:
        self.endpoint = endpoint

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/audio/transcriptions", self._openai(self.transcriptions)),
            web.post("/v1/audio/translations", self._openai(self.translations)),
        ]

    def _openai(
        self, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """The API key first (the RunPod routes' rule), then the handler; every failure as OpenAI's."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            if not self.endpoint.authorize_client(request.headers.get("Authorization")):
                return OpenAIError(
                    401,
                    "Incorrect or missing API key: send this server's key as 'Authorization: Bearer <key>' "
                    "(the OpenAI clients' api_key)",
                    code="invalid_api_key",
                ).response()
            try:
                return await handler(request)
            except OpenAIError as error:
                return error.response()
            except Exception:
                log.exception("internal error answering %s %s", request.method, request.path)
                return OpenAIError(500, "internal server error; see the server's log").response()

        return guarded

    async def transcriptions(self, request: web.Request) -> web.StreamResponse:
        return await self._transcribe(request, "transcribe")

    async def translations(self, request: web.Request) -> web.StreamResponse:
        # A model that cannot translate refuses the job on the worker (invalid_input, param "model").
        return await self._transcribe(request, "translate")

    async def _transcribe(self, request: web.Request, task: str) -> web.StreamResponse:
        form = await read_form(request)
        job_input = build_job_input(form, task)
        job = self.endpoint.submit(RunRequest(input=job_input), sync=True)
        try:
            await self._wait(job, request)
            result = job_result(job)
        finally:
            # Nobody else knows this job's id: its input (the whole upload) need not be kept.
            self.endpoint.store.delete(job)
        return transcript_response(result, form.response_format, form.granularities, task)

    async def _wait(self, job: Job, request: web.Request) -> None:
        """Until the job ends; a caller who hangs up cancels it, so no worker transcribes for nobody."""
        while not job.terminal:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(job.done.wait(), DISCONNECT_POLL_S)
            transport = request.transport
            if not job.terminal and (transport is None or transport.is_closing()):
                self.endpoint.cancel(job)
                raise OpenAIError(499, "the client closed the connection", code="cancelled")


def job_result(job: Job) -> ItemResult:
    """The upload's transcript from a finished job, or the OpenAIError its failure maps to."""
    if job.status is JobState.COMPLETED and isinstance(job.output, dict):
        items = JobOutput.model_validate(job.output).items
        if items and items[0].status == "ok":
            return items[0]
        if items and items[0].error is not None:
            error = JobError(code=items[0].error.code, message=items[0].error.message)
            raise job_error_to_openai(error)
    if job.status is JobState.FAILED and job.error:
        raise job_error_to_openai(JobError.from_runpod_error(job.error))
    if job.status is JobState.TIMED_OUT:
        raise OpenAIError(504, "the transcription ran past the server's execution timeout", code="timed_out")
    raise OpenAIError(500, f"the transcription job ended {job.status.value}", code="internal_error")


def build_job_input(form: AudioRequest, task: str) -> dict[str, Any]:
    """The job the upload becomes: its audio inline, its transcript answered inline (no output)."""
    payload = base64.b64encode(form.audio).decode("ascii")
    job_input: dict[str, Any] = {
        "audio": f"data:{form.media_type};base64,{payload}",
        "id": UPLOAD_ITEM_ID,
        "timestamps": "word" if "word" in form.granularities else "segment",
        "formats": ["json"],
    }
    if form.model is not None:
        job_input["model"] = form.model
    if form.language is not None:
        job_input["language"] = form.language
    if form.prompt:
        job_input["prompt"] = form.prompt
    if task != "transcribe":
        job_input["task"] = task
    return job_input


async def read_form(request: web.Request) -> AudioRequest:
    """The multipart form, streamed: refused as soon as the file passes MAX_UPLOAD_BYTES, a field
    MAX_FIELD_BYTES or the whole form MAX_FORM_BYTES, or when a field is given twice."""
    if not request.content_type.startswith("multipart/"):
        raise OpenAIError(
            400,
            f"the request must be multipart/form-data with a 'file' part, not {request.content_type or 'empty'}",
            code="invalid_request",
        )
    form = AudioRequest()
    fields: dict[str, list[str]] = {}
    seen_file = False
    budget = _FormBudget()
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            raise OpenAIError(400, "nested multipart bodies are not accepted", code="invalid_request")
        name = part.name or ""
        if name not in FORM_FIELDS:
            raise OpenAIError(
                400, f"{name}: not a parameter this server takes", param=name, code="unsupported_parameter"
            )
        key = name.removesuffix("[]")
        if (name == "file" and seen_file) or (name != "file" and key not in LIST_FIELDS and key in fields):
            raise OpenAIError(400, f"{name}: given more than once", param=name, code="invalid_request")
        if key in LIST_FIELDS and len(fields.get(key, [])) >= len(GRANULARITIES):
            raise OpenAIError(400, f"{name}: at most {len(GRANULARITIES)} values (word, segment)", param=name)
        if name == "file":
            form.audio = await _read_capped(part, MAX_UPLOAD_BYTES, "file", budget)
            media_type = part.headers.get("Content-Type", "").split(";", 1)[0].strip()
            if _MEDIA_TYPE.match(media_type):
                form.media_type = media_type
            seen_file = True
        else:
            raw = await _read_capped(part, MAX_FIELD_BYTES, name, budget)
            fields.setdefault(key, []).append(raw.decode("utf-8", "replace").strip())
    if not seen_file:
        raise OpenAIError(400, "file: required (the audio, as a multipart file part)", param="file")
    if not form.audio:
        raise OpenAIError(400, "file: the uploaded file is empty", param="file", code="not_audio")
    _apply_fields(form, fields)
    return form


def _apply_fields(form: AudioRequest, fields: dict[str, list[str]]) -> None:
    def one(name: str) -> str | None:
        values = fields.get(name)
        return values[-1] if values else None

    model = one("model")
    form.model = None if not model or model in OPENAI_MODEL_NAMES else model
    language = one("language")
    if language:
        if not is_language_code(language):
            raise OpenAIError(
                400, f"language: {language!r} is not an ISO-639-1 code a model knows", param="language"
            )
        form.language = language.lower()
    form.prompt = one("prompt") or None
    response_format = one("response_format") or "json"
    if response_format not in RESPONSE_FORMATS:
        raise OpenAIError(
            400,
            f"response_format: must be one of {', '.join(RESPONSE_FORMATS)}, got {response_format!r}",
            param="response_format",
        )
    form.response_format = response_format
    form.temperature = _temperature(one("temperature"))
    granularities = [value for value in fields.get("timestamp_granularities", []) if value]
    for value in granularities:
        if value not in GRANULARITIES:
            raise OpenAIError(
                400,
                f"timestamp_granularities[]: must be word or segment, got {value!r}",
                param="timestamp_granularities[]",
            )
    form.granularities = list(dict.fromkeys(granularities))
    if (one("stream") or "false").lower() not in ("false", "0", ""):
        raise OpenAIError(
            400, "stream: streamed transcripts are not available; send stream=false", param="stream"
        )


def _temperature(raw: str | None) -> float:
    """Checked as OpenAI checks it (a number from 0 to 1), then not used: the engines decode
    deterministically (Whisper: beam search at temperature 0 only; Parakeet: no sampling), so a
    transcript depends only on its audio and options."""
    if raw is None or raw == "":
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise OpenAIError(400, f"temperature: must be a number from 0 to 1, got {raw!r}", param="temperature")
    return value


@dataclass
class _FormBudget:
    """What is left of MAX_FORM_BYTES for the parts still to come."""

    left: int = MAX_FORM_BYTES


async def _read_capped(part: BodyPartReader, cap: int, name: str, budget: _FormBudget) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await part.read_chunk(256 * 1024):
        size += len(chunk)
        budget.left -= len(chunk)
        if size > cap:
            what = (
                f"file: larger than this server's {cap:,}-byte upload limit (audio travels to the "
                "workers inside the job, as a data: URI, capped like RunPod's 10 MB /run payload); "
                "for a larger file submit a job with an http(s):// or s3:// URL to /v2/<endpoint>/run"
                if name == "file"
                else f"{name}: longer than {cap:,} bytes"
            )
            raise OpenAIError(413, what, param=name, code="too_large")
        if budget.left < 0:
            raise OpenAIError(
                413,
                f"{name}: the form is larger than this server's {MAX_FORM_BYTES:,}-byte limit (the file's "
                f"{MAX_UPLOAD_BYTES:,} bytes plus {MAX_FIELD_BYTES:,} for all other fields together)",
                param=name,
                code="too_large",
            )
        chunks.append(chunk)
    return b"".join(chunks)
