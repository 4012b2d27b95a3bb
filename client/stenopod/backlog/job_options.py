"""The transcription options a backlog sends with every job: task, prompt, hotwords, subtitles.

Checked against the job schema when the run starts, so a bad value is a usage error naming its
flag at once, not a backlog of jobs the worker refuses one by one.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from stenopod.schema import JobInput

# The job input field each option travels in -> the flag that sets it.
FLAGS = {
    "task": "--task",
    "prompt": "--prompt",
    "hotwords": "--hotwords",
    "subtitles": "--subtitles",
}


def job_fields(
    task: str, prompt: str | None, hotwords: tuple[str, ...] | list[str], subtitles: dict[str, Any] | None
) -> dict[str, Any]:
    """The job input fields for these options; defaults are left out (older workers accept the job)."""
    fields: dict[str, Any] = {}
    if task != "transcribe":
        fields["task"] = task
    if prompt:
        fields["prompt"] = prompt
    if hotwords:
        fields["hotwords"] = list(hotwords)
    if subtitles is not None:
        fields["subtitles"] = dict(subtitles)
    return fields


def options_problem(fields: dict[str, Any]) -> str | None:
    """Why the schema refuses these fields, naming the flag; None when it accepts them."""
    try:
        JobInput.model_validate({"audio": "https://example.com/a.mp3", **fields})
    except ValidationError as error:
        messages = []
        for detail in error.errors(include_url=False, include_input=False):
            loc = [str(part) for part in detail["loc"]]
            flag = FLAGS.get(loc[0], loc[0]) if loc else "options"
            where = f"{flag} {'.'.join(loc[1:])}".strip()
            messages.append(f"{where}: {detail['msg']}")
        return "; ".join(messages)
    return None
