"""Turn what the user names (files, folders, globs, URLs, manifests, s3:// prefixes, podcast feeds)
into a flat list of items with stable, unique ids.

What each kind of source becomes:
- a local audio/video file: one item (audio=None until the runner uploads or serves it);
- a folder: every audio/video file under it, recursively (hidden files skipped); a glob likewise;
- an http(s) URL of an audio file: one item; of a manifest (.txt/.csv/.jsonl) or a feed: its entries;
  a URL with no telling extension is fetched and sniffed (feed, or audio by Content-Type);
- a manifest: .txt has one URL, s3:// URI or path a line (# comments); .csv has a header with
  `url` and optional `id`, `duration_s`, `title`; .jsonl has objects with the same keys. Relative
  paths are resolved against the manifest's folder (or its URL);
- s3://bucket/prefix: the audio objects under it (or the one object it names);
- an RSS 2.0 or Atom feed (URL or file, recognised by its content): one item per entry with an
  audio enclosure, the entry's guid (else link, else enclosure URL) as the id hint, itunes:duration
  and the enclosure length as duration and size.

An item's id hashes its identity (resolved path, URL, s3 URI, or the feed's own link or title +
the guid, whatever URL the feed came from), so re-running the same backlog gives the same ids; the
same identity named twice becomes one item.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import logging
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlparse, urlunparse

import httpx

from stenopod.backlog.ids import dedupe_ids
from stenopod.schema import is_valid_item_id
from stenopod.storage import S3Credentials, StorageError, parse_s3_uri

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = frozenset(
    {"mp3", "m4a", "wav", "flac", "ogg", "opus", "aac", "webm", "mp4", "mkv", "mov", "wma", "amr", "aiff"}
)
MANIFEST_EXTENSIONS = frozenset({"txt", "csv", "jsonl"})
FEED_EXTENSIONS = frozenset({"xml", "rss", "atom"})
MAX_DOCUMENT_BYTES = 64 * 1024 * 1024  # manifests and feeds are text; anything bigger is a mistake
_SNIFF_BYTES = 4096
_GLOB_CHARS = re.compile(r"[*?\[]")
_ITUNES_NS = "http://www.itunes.com/dtds/podcast-1.0.dtd"
_ATOM_NS = "http://www.w3.org/2005/Atom"


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
class _Found:
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


def expand_sources(
    sources: list[str],
    *,
    s3_credentials: S3Credentials | None = None,
    http_timeout_s: float = 30.0,
) -> list[SourceItem]:
    """Every item the sources name, in the order given, with stable ids unique across the backlog."""
    expander = _Expander(s3_credentials, http_timeout_s)
    try:
        found: list[_Found] = []
        for source in sources:
            found.extend(expander.expand(source))
    finally:
        expander.close()
    return _assign_ids(found)


def _assign_ids(found: list[_Found]) -> list[SourceItem]:
    unique: dict[str, _Found] = {}
    for entry in found:
        unique.setdefault(entry.identity, entry)  # the first mention wins
    entries = list(unique.values())
    derived = dedupe_ids([(entry.identity, entry.hint) for entry in entries])
    owners: dict[str, _Found] = {}
    items: list[SourceItem] = []
    for entry, derived_id in zip(entries, derived, strict=True):
        item_id = entry.explicit_id or derived_id
        other = owners.get(item_id)
        if other is not None:
            raise SourceError(
                f"{entry.origin}: id {item_id!r} is also used by {other.origin} ({_display(other.source)})"
            )
        owners[item_id] = entry
        items.append(
            SourceItem(
                id=item_id,
                source=entry.source,
                audio=entry.audio,
                local_path=entry.local_path,
                size_bytes=entry.size_bytes,
                duration_s=entry.duration_s,
                title=entry.title,
            )
        )
    return items


def _display(source: str) -> str:
    """A source as shown in messages: URLs lose credentials and query strings (presigned tokens)."""
    if "://" not in source:
        return source
    parsed = urlparse(source)
    netloc = parsed.hostname or ""
    if parsed.port:
        netloc += f":{parsed.port}"
    shown = urlunparse((parsed.scheme, netloc, parsed.path, "", "", ""))
    return shown + ("?…" if parsed.query else "")


def _extension(name: str) -> str:
    path = urlparse(name).path if "://" in name else name
    base = path.rstrip("/").rsplit("/", 1)[-1]
    return base.rsplit(".", 1)[-1].lower() if "." in base else ""


def _is_audio_name(name: str) -> bool:
    return _extension(name) in AUDIO_EXTENSIONS


class _Expander:
    def __init__(self, s3_credentials: S3Credentials | None, http_timeout_s: float) -> None:
        self._s3_credentials = s3_credentials
        self._http_timeout_s = http_timeout_s
        self._http: httpx.Client | None = None

    def close(self) -> None:
        if self._http is not None:
            self._http.close()

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            self._http = httpx.Client(timeout=self._http_timeout_s, follow_redirects=True)
        return self._http

    def expand(self, source: str) -> list[_Found]:
        source = source.strip()
        if not source:
            raise SourceError("empty source")
        lowered = source.lower()
        if lowered.startswith("s3://"):
            return self._s3(source)
        if lowered.startswith(("http://", "https://")):
            return self._url(source)
        if "://" in source:
            raise SourceError(f"{_display(source)}: unsupported scheme (use a path, http(s):// or s3://)")
        return self._local(source)

    # --- local files, folders, globs ------------------------------------------------------------

    def _local(self, source: str) -> list[_Found]:
        path = Path(source).expanduser()
        if not path.exists() and _GLOB_CHARS.search(source):
            return self._glob(source)
        if path.is_dir():
            files = [file for file in _walk_audio(path)]
            if not files:
                raise SourceError(
                    f"{source}: no audio or video files in this folder "
                    f"(looked for {', '.join(sorted(AUDIO_EXTENSIONS))})"
                )
            return [_local_item(file, origin=source) for file in files]
        if not path.exists():
            raise SourceError(f"{source}: no such file or folder")
        if not path.is_file():
            raise SourceError(f"{source}: not a regular file")
        ext = _extension(path.name)
        if ext in AUDIO_EXTENSIONS:
            return [_local_item(path, origin=source)]
        text = _read_local(path, source)
        if ext in MANIFEST_EXTENSIONS:
            return self._manifest(text, ext, source, base=path.resolve().parent, base_url=None)
        if ext in FEED_EXTENSIONS or _looks_like_feed(text):
            return _parse_feed(text, source, identity_base=str(path.resolve()), base_url=None)
        raise SourceError(
            f"{source}: unsupported file type; give audio/video ({', '.join(sorted(AUDIO_EXTENSIONS))}), "
            "a manifest (.txt, .csv, .jsonl) or an RSS/Atom feed"
        )

    def _glob(self, pattern: str) -> list[_Found]:
        matches = sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
        files: list[Path] = []
        for match in matches:
            path = Path(match)
            if path.is_dir():
                files.extend(_walk_audio(path))
            elif path.is_file() and _is_audio_name(path.name) and not path.name.startswith("."):
                files.append(path)
        if not files:
            raise SourceError(f"{pattern}: the pattern matches no audio or video files")
        return [_local_item(file, origin=pattern) for file in files]

    # --- URLs -----------------------------------------------------------------------------------

    def _url(self, url: str) -> list[_Found]:
        ext = _extension(url)
        if ext in AUDIO_EXTENSIONS:
            return [_url_item(url, origin=url)]  # not fetched: the worker does that
        if ext in MANIFEST_EXTENSIONS:
            text, _, _ = self._fetch(url, whole=True)
            return self._manifest(text, ext, url, base=None, base_url=url)
        # No telling extension (feeds often have none): look at the content.
        text, content_type, final_url = self._fetch(url, whole=ext in FEED_EXTENSIONS)
        if ext in FEED_EXTENSIONS or _looks_like_feed(text):
            return _parse_feed(text, url, identity_base=url, base_url=final_url)
        if content_type.startswith(("audio/", "video/")):
            return [_url_item(url, origin=url)]
        raise SourceError(
            f"{_display(url)}: neither audio (Content-Type {content_type or 'missing'}) nor an RSS/Atom "
            "feed; name manifests with a .txt, .csv or .jsonl extension"
        )

    def _fetch(self, url: str, *, whole: bool) -> tuple[str, str, str]:
        """The body as text, its Content-Type and the final URL after redirects.

        Unless whole, reading stops after the first few KB when they do not start a feed, so
        sniffing an audio URL does not download the recording.
        """
        try:
            with self.http.stream("GET", url) as response:
                if response.status_code >= 400:
                    raise SourceError(f"{_display(url)}: HTTP {response.status_code}")
                content_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
                data = bytearray()
                for chunk in response.iter_bytes():
                    data += chunk
                    if len(data) > MAX_DOCUMENT_BYTES:
                        raise SourceError(f"{_display(url)}: larger than {MAX_DOCUMENT_BYTES} bytes")
                    if not whole and len(data) >= _SNIFF_BYTES:
                        head = bytes(data[:_SNIFF_BYTES]).decode("utf-8", "replace")
                        if not _looks_like_feed(head):
                            return head, content_type, str(response.url)
                        whole = True
                final_url = str(response.url)
        except httpx.HTTPError as error:
            raise SourceError(f"{_display(url)}: cannot fetch ({type(error).__name__})") from None
        # A short body read only to sniff may be binary audio: decode leniently then.
        text = _decode(bytes(data), url) if whole else bytes(data).decode("utf-8", "replace")
        return text, content_type, final_url

    # --- manifests ------------------------------------------------------------------------------

    def _manifest(
        self, text: str, ext: str, origin: str, *, base: Path | None, base_url: str | None
    ) -> list[_Found]:
        rows = {"txt": _txt_rows, "csv": _csv_rows, "jsonl": _jsonl_rows}[ext](text, origin)
        found: list[_Found] = []
        for line, row in rows:
            where = f"{_display(origin)} line {line}"
            ref = row.get("url")
            if not isinstance(ref, str) or not ref.strip():
                raise SourceError(f"{where}: missing 'url'")
            explicit_id = _explicit_id(row.get("id"), where)
            entry = self._manifest_entry(ref.strip(), where, base, base_url)
            entry.explicit_id = explicit_id
            entry.duration_s = _duration_field(row.get("duration_s"), where)
            title = row.get("title")
            entry.title = str(title) if title not in (None, "") else None
            found.append(entry)
        if not found:
            raise SourceError(f"{_display(origin)}: the manifest lists no entries")
        return found

    def _manifest_entry(self, ref: str, where: str, base: Path | None, base_url: str | None) -> _Found:
        lowered = ref.lower()
        if lowered.startswith(("http://", "https://")):
            return _url_item(ref, origin=where)
        if lowered.startswith("s3://"):
            try:
                parse_s3_uri(ref)
            except StorageError as error:
                raise SourceError(f"{where}: {error}") from None
            return _Found(ref, None, None, where, ref, ref, None)
        if "://" in ref:
            raise SourceError(f"{where}: unsupported scheme in {_display(ref)!r}")
        if base_url is not None:
            return _url_item(urljoin(base_url, ref), origin=where)
        assert base is not None
        path = (base / Path(ref).expanduser()).resolve()
        if not path.is_file():
            raise SourceError(f"{where}: {ref}: no such file")
        return _local_item(path, origin=where, source=ref)

    # --- s3 -------------------------------------------------------------------------------------

    def _s3(self, uri: str) -> list[_Found]:
        from stenopod.storage import S3Store  # boto3 loads only for s3 sources

        try:
            bucket, prefix = parse_s3_uri(uri)
            store = S3Store(bucket, "", self._s3_credentials)
            listing = list(store.list_sizes(prefix))
        except StorageError as error:
            raise SourceError(f"{uri}: {error}") from None
        exact = [(key, size) for key, size in listing if key == prefix and prefix]
        if exact:
            objects = exact  # the URI names one object: take it whatever its extension
        else:
            folder = prefix if not prefix or prefix.endswith("/") else prefix + "/"
            objects = [
                (key, size)
                for key, size in listing
                if key.startswith(folder) and _is_audio_name(key) and not _hidden_key(key[len(folder) :])
            ]
        if not objects:
            raise SourceError(f"{uri}: no audio or video objects under this prefix")
        found = []
        for key, size in objects:
            object_uri = f"s3://{bucket}/{key}"
            found.append(_Found(object_uri, None, None, uri, object_uri, object_uri, None, size_bytes=size))
        return found


# --- helpers ------------------------------------------------------------------------------------


def _walk_audio(folder: Path) -> Iterator[Path]:
    for root, dirs, files in os.walk(folder):
        # Hidden folders and files (.git, macOS "._ep1.mp3" forks) are never recordings.
        dirs[:] = sorted(name for name in dirs if not name.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and _is_audio_name(name):
                yield Path(root) / name


def _hidden_key(relative_key: str) -> bool:
    # _stenopod/ holds our own bookkeeping (and uploaded inputs) when the source is also the output.
    return any(part.startswith((".", "_stenopod")) for part in relative_key.split("/"))


def _local_item(path: Path, *, origin: str, source: str | None = None) -> _Found:
    resolved = path.resolve()
    try:
        size = resolved.stat().st_size
    except OSError as error:
        raise SourceError(f"{origin}: {path}: {error.strerror or error}") from None
    return _Found(
        identity=str(resolved),
        hint=None,
        explicit_id=None,
        origin=origin,
        source=source or str(path),
        audio=None,
        local_path=resolved,
        size_bytes=size,
    )


def _url_item(url: str, *, origin: str) -> _Found:
    return _Found(url, None, None, origin, url, url, None)


def _read_local(path: Path, source: str) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_DOCUMENT_BYTES:
            raise SourceError(f"{source}: larger than {MAX_DOCUMENT_BYTES} bytes")
        data = path.read_bytes()
    except OSError as error:
        raise SourceError(f"{source}: cannot read: {error.strerror or error}") from None
    return _decode(data, source)


def _decode(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SourceError(f"{_display(source)}: not UTF-8 text") from None


def _explicit_id(value: Any, where: str) -> str | None:
    if value in (None, ""):
        return None
    value = str(value).strip()
    if not is_valid_item_id(value):
        raise SourceError(
            f"{where}: id {value!r} must be 1-128 letters, digits, '.', '_' or '-', start with a letter "
            "or digit and contain no '..'"
        )
    return value


def _duration_field(value: Any, where: str) -> float | None:
    if value in (None, ""):
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise SourceError(f"{where}: duration_s {value!r} is not a number") from None
    if not seconds >= 0 or seconds == float("inf"):
        raise SourceError(f"{where}: duration_s must be a non-negative number of seconds")
    return seconds


def _txt_rows(text: str, origin: str) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if line and not line.startswith("#"):
            rows.append((number, {"url": line}))
    return rows


def _csv_rows(text: str, origin: str) -> list[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(io.StringIO(text))
    fields = [name.strip().lower() for name in (reader.fieldnames or [])]
    if "url" not in fields:
        raise SourceError(
            f"{_display(origin)}: the CSV header must have a 'url' column (optional: id, duration_s)"
        )
    reader.fieldnames = fields
    rows = []
    for row in reader:
        if not any((value or "").strip() for key, value in row.items() if key is not None):
            continue  # blank line
        rows.append((reader.line_num, {key: (value or "").strip() for key, value in row.items() if key}))
    return rows


def _jsonl_rows(text: str, origin: str) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise SourceError(f"{_display(origin)} line {number}: not valid JSON") from None
        if not isinstance(row, dict):
            raise SourceError(f"{_display(origin)} line {number}: expected a JSON object with 'url'")
        rows.append((number, row))
    return rows


# --- feeds --------------------------------------------------------------------------------------


def _looks_like_feed(text: str) -> bool:
    head = text[:_SNIFF_BYTES].lstrip("\ufeff \t\r\n").lower()
    return head.startswith("<") and ("<rss" in head or "<feed" in head)


def _parse_feed(text: str, origin: str, *, identity_base: str, base_url: str | None) -> list[_Found]:
    shown = _display(origin)
    # ElementTree expands internal entities; a DOCTYPE is never needed in a feed, so refuse it
    # rather than risk an entity-expansion bomb (defusedxml is not available).
    if re.search(r"<!(DOCTYPE|ENTITY)", text, re.IGNORECASE):
        raise SourceError(f"{shown}: feeds with a DOCTYPE or ENTITY declaration are refused")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as error:
        raise SourceError(f"{shown}: not well-formed XML ({error})") from None
    if root.tag == "rss":
        entries = [_rss_entry(item) for item in root.iter("item")]
        channel = root.find("channel")
        own = [channel.find("link"), channel.find("title")] if channel is not None else []
    elif root.tag in (f"{{{_ATOM_NS}}}feed", "feed"):
        entries = [_atom_entry(entry, root.tag) for entry in root.iter(_same_ns(root.tag, "entry"))]
        own = [root.find(_same_ns(root.tag, "id")), root.find(_same_ns(root.tag, "title"))]
    else:
        raise SourceError(f"{shown}: not an RSS 2.0 or Atom feed (root element {root.tag!r})")
    # Ids hash the feed's own identity (its site link, else its title) and the guid, not the URL
    # the feed was fetched from: the same feed by another host name or scheme, or as a saved file,
    # is the same backlog, and must not pay for every episode again.
    feed_identity = next((text for text in map(_text, own) if text), None) or identity_base
    enclosures: dict[str, tuple[int, str]] = {}
    found: list[_Found] = []
    for number, entry in enumerate(entries, start=1):
        if entry is None:
            continue  # an entry without an audio enclosure (a text post)
        url, guid, title, length, duration = entry
        if base_url is not None:
            url = urljoin(base_url, url)
        if not url.lower().startswith(("http://", "https://")):
            raise SourceError(f"{shown} entry {number}: enclosure {_display(url)!r} is not an http(s) URL")
        key = guid or url
        identity = f"feed:{feed_identity}#{key}"
        first, first_url = enclosures.setdefault(key, (number, url))
        if first_url != url:
            # Two episodes under one guid (a feed's copy-paste slip): both are kept, the later one
            # under an id that also hashes its enclosure.
            log.warning(
                "%s entry %d: guid %r is also entry %d's, with another enclosure; transcribing both",
                shown,
                number,
                key,
                first,
            )
            identity = f"{identity}#{url}"
        found.append(
            _Found(
                identity=identity,
                hint=key,
                explicit_id=None,
                origin=f"{shown} entry {number}",
                source=url,
                audio=url,
                local_path=None,
                size_bytes=length,
                duration_s=duration,
                title=title,
            )
        )
    if not found:
        raise SourceError(f"{shown}: the feed has no entries with an audio enclosure")
    return found


_FeedEntry = tuple[str, str | None, str | None, int | None, float | None] | None


def _same_ns(tag: str, name: str) -> str:
    return f"{tag[: tag.index('}') + 1]}{name}" if tag.startswith("{") else name


def _text(element: ET.Element | None) -> str | None:
    if element is None or element.text is None:
        return None
    return element.text.strip() or None


def _is_audio_enclosure(url: str | None, mime: str | None) -> bool:
    if not url:
        return False
    if mime:
        return mime.lower().startswith(("audio/", "video/"))
    return _is_audio_name(url)


def _rss_entry(item: ET.Element) -> _FeedEntry:
    for enclosure in item.findall("enclosure"):
        url = (enclosure.get("url") or "").strip()
        if _is_audio_enclosure(url, enclosure.get("type")):
            guid = _text(item.find("guid")) or _text(item.find("link"))
            duration = parse_itunes_duration(_text(item.find(f"{{{_ITUNES_NS}}}duration")))
            return url, guid, _text(item.find("title")), _int_or_none(enclosure.get("length")), duration
    return None


def _atom_entry(entry: ET.Element, root_tag: str) -> _FeedEntry:
    link_tag = _same_ns(root_tag, "link")
    for link in entry.findall(link_tag):
        if link.get("rel") != "enclosure":
            continue
        url = (link.get("href") or "").strip()
        if _is_audio_enclosure(url, link.get("type")):
            guid = _text(entry.find(_same_ns(root_tag, "id")))
            if guid is None:
                alternate = [el for el in entry.findall(link_tag) if el.get("rel") in (None, "alternate")]
                guid = alternate[0].get("href") if alternate else None
            duration = parse_itunes_duration(_text(entry.find(f"{{{_ITUNES_NS}}}duration")))
            title = _text(entry.find(_same_ns(root_tag, "title")))
            return url, guid, title, _int_or_none(link.get("length")), duration
    return None


def _int_or_none(value: str | None) -> int | None:
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None  # feeds often say length="0" for "unknown"


def parse_itunes_duration(value: str | None) -> float | None:
    """itunes:duration as seconds: "HH:MM:SS", "MM:SS" or plain seconds; None when unreadable."""
    if not value:
        return None
    parts = value.strip().split(":")
    if len(parts) > 3:
        return None
    try:
        numbers = [float(part) for part in parts]
    except ValueError:
        return None
    if any(number < 0 or number != number for number in numbers):
        return None
    seconds = 0.0
    for number in numbers:
        seconds = seconds * 60 + number
    return seconds
