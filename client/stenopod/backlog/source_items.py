"""What a source expands to: SourceItem (an item with its id) and FoundEntry (before ids are
assigned), SourceError, and the small helpers every kind of source shares."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse, urlunparse

AUDIO_EXTENSIONS = frozenset(
    {"mp3", "m4a", "wav", "flac", "ogg", "opus", "aac", "webm", "mp4", "mkv", "mov", "wma", "amr", "aiff"}
)
MAX_DOCUMENT_BYTES = 64 * 1024 * 1024  # source lists and feeds are text; anything bigger is a mistake


class SourceError(ValueError):
    """A source that cannot be read or is not supported; the message names it."""


@dataclass
class SourceItem:
    id: str
    source: str  # what names this item: the path or URL given, or found in a folder, manifest or feed
    audio: str | None  # the URL/URI the worker fetches; None for local files until uploaded or served
    local_path: Path | None
    size_bytes: int | None
    duration_s: float | None
    title: str | None = None


@dataclass
class FoundEntry:
    """An item before ids are assigned: identity is what the id hashes and what duplicates share."""

    identity: str
    hint: str | None
    explicit_id: str | None
    origin: str  # for error messages: where this entry came from
    source: str
    audio: str | None
    local_path: Path | None
    size_bytes: int | None = None
    duration_s: float | None = None
    title: str | None = None


def display_source(source: str) -> str:
    """A source as shown in messages: URLs lose credentials and query strings (presigned tokens)."""
    if "://" not in source:
        return source
    parsed = urlparse(source)
    netloc = parsed.hostname or ""
    if parsed.port:
        netloc += f":{parsed.port}"
    shown = urlunparse((parsed.scheme, netloc, parsed.path, "", "", ""))
    return shown + ("?…" if parsed.query else "")


def extension(name: str) -> str:
    path = urlparse(name).path if "://" in name else name
    base = path.rstrip("/").rsplit("/", 1)[-1]
    return base.rsplit(".", 1)[-1].lower() if "." in base else ""


def is_audio_name(name: str) -> bool:
    return extension(name) in AUDIO_EXTENSIONS


def local_entry(path: Path, *, origin: str, source: str | None = None) -> FoundEntry:
    resolved = path.resolve()
    try:
        size = resolved.stat().st_size
    except OSError as error:
        raise SourceError(f"{origin}: {path}: {error.strerror or error}") from None
    return FoundEntry(
        identity=str(resolved),
        hint=None,
        explicit_id=None,
        origin=origin,
        source=source or str(path),
        audio=None,
        local_path=resolved,
        size_bytes=size,
    )


def url_entry(url: str, *, origin: str) -> FoundEntry:
    return FoundEntry(url, None, None, origin, url, url, None)


def decode_text(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SourceError(f"{display_source(source)}: not UTF-8 text") from None
