"""One POST /run: the job input a pack of staged items becomes, and what a refusal means."""

from __future__ import annotations

from typing import Any

from stenopod.backlog.errors import BacklogError, EndpointRefused
from stenopod.backlog.inline_results import worker_timestamps
from stenopod.backlog.options import BacklogOptions
from stenopod.endpoint import EndpointAuthError, EndpointClient, EndpointError, EndpointNotFound
from stenopod.schema import ErrorCode


class SubmitFailed(Exception):
    """/run did not give a job id; code and message go to the items, ambiguous: the job may exist."""

    def __init__(self, code: str, message: str, *, ambiguous: bool = False) -> None:
        super().__init__(message)
        self.ambiguous = ambiguous  # the endpoint may have created the job anyway
        self.code = code
        self.message = message


def job_input(
    options: BacklogOptions, output: str | None, token: str, items: list[dict[str, str]]
) -> dict[str, Any]:
    """The job input (stenopod.schema.JobInput) for one pack; output is OutputLocation.job_output(),
    or None for an inline run (a RunPod endpoint and a folder: the answer carries the transcripts)."""
    data: dict[str, Any] = {
        "items": items,
        "formats": list(options.formats),
        # Inline, the files are rendered here from the answer's segments: at least those are asked for.
        "timestamps": options.timestamps
        if output is not None
        else worker_timestamps(options.timestamps, options.subtitles is not None),
        "submission": token,
    }
    if output is not None:
        data["output"] = output
    if options.model:
        data["model"] = options.model
    if options.language:
        data["language"] = options.language
    data.update(options.job_fields())
    if options.diarize:
        data["diarize"] = True
        if options.max_speakers is not None:
            data["max_speakers"] = options.max_speakers
    return data


async def submit(client: EndpointClient, data: dict[str, Any], webhook: str | None) -> str:
    """The new job's id. EndpointRefused/BacklogError end the run; SubmitFailed fails the pack."""
    try:
        return await client.run(data, webhook=webhook)
    except EndpointAuthError as error:
        raise EndpointRefused(f"endpoint: {error.message}") from None
    except EndpointNotFound as error:
        raise BacklogError(f"endpoint not found: {error.message}") from None
    except EndpointError as error:
        if error.status_code is not None and 400 <= error.status_code < 500:
            # The endpoint refused this input: retrying it unchanged will not help.
            raise SubmitFailed(ErrorCode.invalid_input.value, error.message) from None
        # No answer we can trust: the job may exist all the same.
        raise SubmitFailed(
            ErrorCode.internal_error.value, f"submitting failed: {error.message}", ambiguous=True
        ) from None
