"""What a source expands to: SourceItem (an item with its id) and FoundEntry (before ids are
assigned), SourceError, and the small helpers every kind of source shares."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse, urlunparse

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
    identity: str | None = None  # what the ledger knows the item by, whatever its id


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
    # The readable id before it is made key-safe: the file's stem, after the folders it was found
    # in below the folder, glob or manifest named ("2024/Épisode 2"); None: the source's own stem.
    name: str | None = None


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


def stem(source: str) -> str:
    """The file name without its extension, for a path or a URL."""
    if "://" in source:
        source = unquote(urlparse(source).path)
    name = source.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name


def name_below(path: Path, base: Path) -> str:
    """path's name with the folders between base and it ("2024/ep1"), or its stem when outside base."""
    try:
        relative = path.relative_to(base)
    except ValueError:
        return stem(path.name)
    return "/".join([*relative.parent.parts, stem(relative.name)])


def local_entry(path: Path, *, origin: str, source: str | None = None, name: str | None = None) -> FoundEntry:
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
        name=name,
    )


def url_entry(url: str, *, origin: str) -> FoundEntry:
    return FoundEntry(url, None, None, origin, url, url, None)


def decode_text(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SourceError(f"{display_source(source)}: not UTF-8 text") from None
