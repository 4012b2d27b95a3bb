"""RunPod without a bucket, the way in: local files travel inside the /run body as data: URIs.

RunPod refuses a /run body over 10 MB, and base64 makes a file 4/3 its size, so a file of more
than about 7.4 MB cannot go this way at all (refused before anything is submitted, naming the
file and the two ways out), and packing (packing.pack_items) keeps each job's data: URIs within
one body.
"""

from __future__ import annotations

import base64
import mimetypes
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from stenopod.storage import StorageError

RUN_PAYLOAD_BYTES = 10 * 1000**2  # RunPod's limit on a /run request body
# What else the body holds (formats, timestamps, model, language, token, webhook URL, JSON
# punctuation): a few hundred bytes in practice, reserved generously.
ENVELOPE_BYTES = 16 * 1024
ITEM_OVERHEAD_BYTES = 64  # {"id": "...", "audio": "..."}, around the id and the audio
JOB_PAYLOAD_BYTES = RUN_PAYLOAD_BYTES - ENVELOPE_BYTES
# The largest file that fits a job body once base64-encoded (beside a short id and media type).
INLINE_FILE_BYTES = (JOB_PAYLOAD_BYTES - 100) * 3 // 4
DEFAULT_MEDIA_TYPE = "application/octet-stream"


class Payloaded(Protocol):
    id: str
    source: str
    audio: str | None
    local_path: Path | str | None
    size_bytes: int | None


class TooLargeForInline(Exception):
    """A local file that cannot travel in a /run body; the message names it and the ways out."""


def media_type(path: Path) -> str:
    guessed, _ = mimetypes.guess_type(path.name)
    return guessed or DEFAULT_MEDIA_TYPE


def data_uri_length(path: Path, size_bytes: int) -> int:
    """The length of data_uri(path) for a file of size_bytes, without reading it."""
    return len(f"data:{media_type(path)};base64,") + 4 * ((size_bytes + 2) // 3)


def item_payload_bytes(item: Payloaded) -> int:
    """What the item adds to a /run body: its audio reference (a data: URI for a local file) and id."""
    if item.local_path:
        path = Path(item.local_path)
        size = item.size_bytes if item.size_bytes is not None else path.stat().st_size
        audio_length = data_uri_length(path, size)
    else:
        audio_length = len(item.audio or item.source)
    return audio_length + len(item.id) + ITEM_OVERHEAD_BYTES


def check_inline_sizes(items: Iterable[Payloaded]) -> None:
    """TooLargeForInline for the first local file too large to travel in a /run body."""
    for item in items:
        if item.local_path and item_payload_bytes(item) > JOB_PAYLOAD_BYTES:
            raise TooLargeForInline(_too_large(Path(item.local_path), item.size_bytes))


def data_uri(path: Path) -> str:
    """The file as a data: URI, refused (StorageError) if it has grown past what a /run body holds."""
    data = path.read_bytes()
    if data_uri_length(path, len(data)) + ITEM_OVERHEAD_BYTES > JOB_PAYLOAD_BYTES:
        raise StorageError(_too_large(path, len(data)))
    return f"data:{media_type(path)};base64,{base64.b64encode(data).decode('ascii')}"


def inline_file_mb() -> str:
    """INLINE_FILE_BYTES in MB rounded down (7.4), as the messages and the README give it: a file
    of the size a message names always fits."""
    return f"{INLINE_FILE_BYTES // 100_000 / 10:.1f}"


def _too_large(path: Path, size_bytes: int | None) -> str:
    size = f"{size_bytes / 1e6:.1f} MB" if size_bytes is not None else "too large"
    return (
        f"{path} ({size}) is too large to send to a RunPod endpoint without a bucket: local files "
        f"travel inside the job request as base64, and RunPod accepts at most "
        f"{RUN_PAYLOAD_BYTES // 1000**2} MB per request (files up to about "
        f"{inline_file_mb()} MB). Either give --output "
        "s3://bucket/prefix/ (the file is uploaded there and the worker fetches it), or give the "
        "file as an http(s):// URL the worker can fetch"
    )
