"""Checks made before a run touches its state file (is the output usable, does the endpoint
answer), and the state file's own rules: where it lives by default, one run at a time.

Both fail as usage errors (exit 2) naming the option at fault. Without them, a file given as
--output was reported as an unopenable state file inside it, and a wrong --endpoint was retried
for many minutes as if it were a real endpoint having a bad moment.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stenopod.backlog.errors import UsageError
from stenopod.endpoint import EndpointAuthError, EndpointClient, EndpointError, EndpointNotFound
from stenopod.output_location import OutputLocation
from stenopod.storage import StorageError

# The first contact gets a couple of quick retries (a 429 or a blip), not the minutes of backoff
# that an endpoint which has answered before deserves.
_CONTACT_RETRIES = 2
_CONTACT_TIMEOUT_S = 15.0


class PreflightError(Exception):
    """The run cannot start as asked; the message names the option (--output, --endpoint)."""


def check_settings(language: str | None, webhook_listen: str | None) -> None:
    """Options that can be judged before anything runs (a typo here would cost the whole backlog)."""
    from stenopod.languages import is_language_code

    if language is not None and not is_language_code(language):
        raise PreflightError(
            f"--language: {language!r} is not a language code the models know (such as en, de, fr, es, "
            "ja, zh); leave it out to have the language detected"
        )
    if webhook_listen is not None:
        from stenopod.backlog.webhook_listener import parse_listen

        try:
            parse_listen(webhook_listen)
        except ValueError as error:
            raise PreflightError(str(error)) from None  # the message names --webhook-listen


def check_output(location: OutputLocation) -> None:
    """A local output must be a folder we can write to, or creatable in one; nothing is created here."""
    folder, output = location.folder, location.text
    if folder is None:
        return
    if folder.exists():
        if not folder.is_dir():
            raise PreflightError(
                f"--output: {output} is a file, not a folder; give a folder for the transcripts"
            )
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PreflightError(f"--output: the folder {output} is not writable")
        return
    # It will be created: the nearest folder that exists must allow that.
    parent = folder.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise PreflightError(f"--output: cannot create {output}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PreflightError(f"--output: cannot create {output}: the folder {parent} is not writable")


async def check_contact(endpoint: str, api_key: str | None) -> None:
    """One health request: the endpoint exists, speaks the RunPod API and takes the key."""
    try:
        client = EndpointClient(
            endpoint,
            api_key,
            max_in_flight=1,
            max_retries=_CONTACT_RETRIES,
            backoff_max_s=2.0,
            timeout_s=_CONTACT_TIMEOUT_S,
        )
    except ValueError as error:
        raise PreflightError(f"--endpoint: {error}") from None
    try:
        async with client:
            await client.health()
    except EndpointAuthError as error:
        raise PreflightError(f"--api-key: {error.message}") from None
    except EndpointNotFound as error:
        raise PreflightError(
            f"cannot reach the endpoint at {endpoint}: {error.message} "
            "(no RunPod endpoint with this id, or not a `stenopod serve` URL)"
        ) from None
    except EndpointError as error:
        raise PreflightError(
            f"cannot reach the endpoint at {endpoint}: {error.message} "
            "(check --endpoint: a RunPod endpoint id or a `stenopod serve` URL)"
        ) from None


def discard_state(state: Path) -> None:
    """Remove a state file this run created before failing to start (and its WAL, shm and lock)."""
    for path in (state, *(Path(f"{state}{suffix}") for suffix in ("-wal", "-shm", ".lock"))):
        path.unlink(missing_ok=True)


def stored_options(options: dict[str, Any]) -> dict[str, Any]:
    """Options as `retry` should replay them from any folder: local sources and output absolute."""
    stored = dict(options)
    stored["sources"] = [_absolute(source) for source in options.get("sources") or []]
    if isinstance(options.get("output"), str):
        stored["output"] = _absolute(options["output"])
    return stored


def _absolute(location: str) -> str:
    if "://" in location or not location.strip():
        return location  # URLs, s3:// and file:// URIs do not depend on the working folder
    return os.path.abspath(os.path.expanduser(location))


@contextmanager
def hold_lock(state: Path) -> Iterator[None]:
    """One run per state file: two would submit the same items. The OS drops the lock if we die."""
    import fcntl

    with open(f"{state}.lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"another stenopod run is using the state file {state}") from None
        yield


def default_state_path(output: str) -> Path:
    """Beside a local output (so the backlog and its memory travel together), else the working dir."""
    try:
        return OutputLocation.parse(output).default_state_path()
    except StorageError as error:
        raise UsageError(f"--output: {error}") from None
