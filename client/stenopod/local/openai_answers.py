"""What the OpenAI-compatible routes answer: transcripts in OpenAI's five response formats, and
failures as OpenAI's error object.

A transcript arrives here as the worker's inline answer (schema.ItemResult); srt and vtt are
rendered by the same code that writes the worker's .srt/.vtt files (stenopod.formats), so a
subtitle fetched through this route is byte for byte the file a RunPod job would have written.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiohttp import web

from stenopod.formats import TranscriptDocument, render
from stenopod.schema import ErrorCode, ItemResult, JobError, OutputFormat, Segment

RESPONSE_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
GRANULARITIES = ("word", "segment")

# Where a stenopod error code lands in HTTP: the caller's fault (4xx) or the server's (5xx).
_CLIENT_ERRORS: dict[ErrorCode, tuple[int, str | None]] = {
    ErrorCode.invalid_input: (400, None),
    ErrorCode.url_forbidden: (400, "file"),
    ErrorCode.fetch_failed: (400, "file"),
    ErrorCode.too_large: (413, "file"),
    ErrorCode.too_long: (400, "file"),
    ErrorCode.not_audio: (400, "file"),
    ErrorCode.model_unavailable: (400, "model"),
    ErrorCode.output_too_large: (400, "file"),
}
# Job input fields as the OpenAI form calls them, for the error object's `param`. The task comes
# from the route, not the form: a model that cannot translate is the `model` the caller chose.
_FORM_FIELDS = {
    "input.audio": "file",
    "input.model": "model",
    "input.language": "language",
    "input.prompt": "prompt",
    "input.task": "model",
    "input.timestamps": "timestamp_granularities[]",
}


class OpenAIError(Exception):
    """A request refused with OpenAI's error object: {"error": {message, type, param, code}}."""

    def __init__(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code

    def response(self) -> web.Response:
        kind = "server_error" if self.status >= 500 else "invalid_request_error"
        body = {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}
        return web.json_response(body, status=self.status)


def job_error_to_openai(error: JobError) -> OpenAIError:
    """A job that failed on the worker, as the HTTP error an OpenAI client expects (code kept)."""
    status, param = _CLIENT_ERRORS.get(error.code, (500, None))
    if error.fields:
        param = _FORM_FIELDS.get(error.fields[0], param)
    message = error.message
    if error.items and error.items[0].error is not None:
        message = error.items[0].error.message  # the item's own words, not "item failed; first: ..."
    return OpenAIError(status, message, param=param, code=error.code.value)


def transcript_response(
    result: ItemResult, response_format: str, granularities: Iterable[str], task: str
) -> web.Response:
    """The worker's result for one upload in the response_format the caller asked for."""
    granularities = set(granularities)
    if response_format == "text":
        return web.Response(text=_text(result) + "\n", content_type="text/plain", charset="utf-8")
    if response_format in ("srt", "vtt"):
        document = TranscriptDocument(
            text=_text(result),
            segments=result.segments or [],
            language=result.language,
            duration=result.duration_s or 0.0,
            word_timestamps="word" in granularities,
        )
        body = render(OutputFormat(response_format), document).decode("utf-8")
        content_type = "application/x-subrip" if response_format == "srt" else "text/vtt"
        return web.Response(text=body, content_type=content_type, charset="utf-8")
    usage = {"type": "duration", "seconds": _seconds(result.duration_s or 0.0)}
    if response_format == "json":
        return web.json_response({"text": _text(result), "usage": usage})
    return web.json_response(verbose_json(result, granularities, task) | {"usage": usage})


def verbose_json(result: ItemResult, granularities: set[str], task: str) -> dict[str, Any]:
    """OpenAI's verbose_json: segments unless only words were asked for, words when asked for.

    A segment carries Whisper's avg_logprob, compression_ratio and no_speech_prob where the
    engine gave them; fields no engine produces (tokens, seek, temperature) are left out rather
    than invented, and so is a word's probability, which OpenAI's word object has no place for.
    """
    segments = result.segments or []
    body: dict[str, Any] = {
        "task": task,
        "language": result.language,
        "duration": _seconds(result.duration_s or 0.0),
        "text": _text(result),
    }
    if not granularities or "segment" in granularities:
        body["segments"] = [_segment(segment) for segment in segments]
    if "word" in granularities:
        body["words"] = [
            {"word": word.word, "start": _seconds(word.start), "end": _seconds(word.end)}
            for segment in segments
            for word in segment.words or []
        ]
    return body


def _segment(segment: Segment) -> dict[str, Any]:
    quality = {
        name: value
        for name in ("avg_logprob", "compression_ratio", "no_speech_prob")
        if (value := getattr(segment, name)) is not None
    }
    return {
        "id": segment.id,
        "start": _seconds(segment.start),
        "end": _seconds(segment.end),
        "text": segment.text,
    } | quality


def _text(result: ItemResult) -> str:
    return (result.text or "").strip()


def _seconds(value: float) -> float:
    return round(value, 3)
