"""Turn what the user names (files, folders, globs, URLs, manifests, s3:// prefixes, podcast feeds)
into a flat list of items with stable, unique ids.

What each kind of source becomes:
- a local audio/video file: one item (audio=None until the runner uploads or serves it);
- a folder: every audio/video file under it, recursively (hidden files skipped); a glob likewise;
- an http(s) URL of an audio file: one item; of a manifest (.txt/.csv/.jsonl) or a feed: its entries;
  a URL with no telling extension is fetched and sniffed (feed, or audio by Content-Type);
- a manifest (a source list: .txt, .csv, .jsonl): its entries (source_lists.py);
- s3://bucket/prefix: the audio objects under it, or the one object it names (s3_sources.py);
- an RSS 2.0 or Atom podcast feed (URL or file, recognised by its content): one item per entry
  with an audio enclosure (podcasts.py).

An item has an identity (resolved path, URL, s3 URI, or the feed's own link or title + the guid,
whatever URL the feed came from): the same identity named twice becomes one item, and a state file
keeps the id it gave it. Ids are readable names (names.py, id_book.py): the file's stem in ASCII,
with the folders below the folder named, a suffix only where two sources would share one.
"""

from __future__ import annotations

import glob
import itertools
import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx

from stenopod.backlog.id_book import IdBook, assign_ids, id_book_at
from stenopod.backlog.podcasts import (
    FEED_EXTENSIONS,
    SNIFF_BYTES,
    looks_like_feed,
    parse_feed,
    parse_itunes_duration,
)
from stenopod.backlog.s3_sources import s3_entries
from stenopod.backlog.source_items import (
    AUDIO_EXTENSIONS,
    MAX_DOCUMENT_BYTES,
    FoundEntry,
    SourceError,
    SourceItem,
    decode_text,
    display_source,
    extension,
    is_audio_name,
    local_entry,
    name_below,
    url_entry,
)
from stenopod.backlog.source_lists import LIST_EXTENSIONS, list_entries
from stenopod.storage import S3Credentials

__all__ = ["SourceError", "SourceItem", "expand_sources", "parse_itunes_duration"]

_GLOB_CHARS = re.compile(r"[*?\[]")


def expand_sources(
    sources: list[str],
    *,
    s3_credentials: S3Credentials | None = None,
    http_timeout_s: float = 30.0,
    state: Path | None = None,
) -> list[SourceItem]:
    """Every item the sources name, in the order given, with stable ids unique across the backlog.

    state: a state file (it need not exist) whose ids are kept, and which says how new ones are
    named (id_book.py); without it, readable names as for a new backlog.
    """
    expander = _Expander(s3_credentials, http_timeout_s)
    try:
        found: list[FoundEntry] = []
        for source in sources:
            found.extend(expander.expand(source))
    finally:
        expander.close()
    return assign_ids(found, id_book_at(state) if state is not None else IdBook())


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

    def expand(self, source: str) -> list[FoundEntry]:
        source = source.strip()
        if not source:
            raise SourceError("empty source")
        lowered = source.lower()
        if lowered.startswith("s3://"):
            return s3_entries(source, self._s3_credentials)
        if lowered.startswith(("http://", "https://")):
            return self._url(source)
        if "://" in source:
            raise SourceError(
                f"{display_source(source)}: unsupported scheme (use a path, http(s):// or s3://)"
            )
        return self._local(source)

    # --- local files, folders, globs ------------------------------------------------------------

    def _local(self, source: str) -> list[FoundEntry]:
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
            # The folders below the one named are kept: <output>/2024/ep1.<format>.
            return [local_entry(file, origin=source, name=name_below(file, path)) for file in files]
        if not path.exists():
            raise SourceError(f"{source}: no such file or folder")
        if not path.is_file():
            raise SourceError(f"{source}: not a regular file")
        ext = extension(path.name)
        if ext in AUDIO_EXTENSIONS:
            return [local_entry(path, origin=source)]
        text = _read_local(path, source)
        if ext in LIST_EXTENSIONS:
            return list_entries(text, ext, source, base=path.resolve().parent, base_url=None)
        if ext in FEED_EXTENSIONS or looks_like_feed(text):
            return parse_feed(text, source, identity_base=str(path.resolve()), base_url=None)
        raise SourceError(
            f"{source}: unsupported file type; give audio/video ({', '.join(sorted(AUDIO_EXTENSIONS))}), "
            "a manifest (.txt, .csv, .jsonl) or an RSS/Atom feed"
        )

    def _glob(self, pattern: str) -> list[FoundEntry]:
        matches = sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
        files: list[Path] = []
        for match in matches:
            path = Path(match)
            if path.is_dir():
                files.extend(_walk_audio(path))
            elif path.is_file() and is_audio_name(path.name) and not path.name.startswith("."):
                files.append(path)
        if not files:
            raise SourceError(f"{pattern}: the pattern matches no audio or video files")
        base = _glob_base(os.path.expanduser(pattern))
        return [local_entry(file, origin=pattern, name=name_below(file, base)) for file in files]

    # --- URLs -----------------------------------------------------------------------------------

    def _url(self, url: str) -> list[FoundEntry]:
        ext = extension(url)
        if ext in AUDIO_EXTENSIONS:
            return [url_entry(url, origin=url)]  # not fetched: the worker does that
        if ext in LIST_EXTENSIONS:
            text, _, _ = self._fetch(url, whole=True)
            return list_entries(text, ext, url, base=None, base_url=url)
        # No telling extension (feeds often have none): look at the content.
        text, content_type, final_url = self._fetch(url, whole=ext in FEED_EXTENSIONS)
        if ext in FEED_EXTENSIONS or looks_like_feed(text):
            return parse_feed(text, url, identity_base=url, base_url=final_url)
        if content_type.startswith(("audio/", "video/")):
            return [url_entry(url, origin=url)]
        raise SourceError(
            f"{display_source(url)}: neither audio (Content-Type {content_type or 'missing'}) nor an RSS/Atom "
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
                    raise SourceError(f"{display_source(url)}: HTTP {response.status_code}")
                content_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
                data = bytearray()
                for chunk in response.iter_bytes():
                    data += chunk
                    if len(data) > MAX_DOCUMENT_BYTES:
                        raise SourceError(f"{display_source(url)}: larger than {MAX_DOCUMENT_BYTES} bytes")
                    if not whole and len(data) >= SNIFF_BYTES:
                        head = bytes(data[:SNIFF_BYTES]).decode("utf-8", "replace")
                        if not looks_like_feed(head):
                            return head, content_type, str(response.url)
                        whole = True
                final_url = str(response.url)
        except httpx.HTTPError as error:
            raise SourceError(f"{display_source(url)}: cannot fetch ({type(error).__name__})") from None
        # A short body read only to sniff may be binary audio: decode leniently then.
        text = decode_text(bytes(data), url) if whole else bytes(data).decode("utf-8", "replace")
        return text, content_type, final_url


# --- helpers ------------------------------------------------------------------------------------


def _walk_audio(folder: Path) -> Iterator[Path]:
    for root, dirs, files in os.walk(folder):
        # Hidden folders and files (.git, macOS "._ep1.mp3" forks) are never recordings.
        dirs[:] = sorted(name for name in dirs if not name.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and is_audio_name(name):
                yield Path(root) / name


def _glob_base(pattern: str) -> Path:
    """The folder a glob starts from ("rec" for "rec/**/*.mp3"): names keep the folders below it."""
    parts = Path(pattern).parts
    fixed = [part for part in itertools.takewhile(lambda part: not _GLOB_CHARS.search(part), parts)]
    return Path(*fixed) if fixed else Path()


def _read_local(path: Path, source: str) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_DOCUMENT_BYTES:
            raise SourceError(f"{source}: larger than {MAX_DOCUMENT_BYTES} bytes")
        data = path.read_bytes()
    except OSError as error:
        raise SourceError(f"{source}: cannot read: {error.strerror or error}") from None
    return decode_text(data, source)
