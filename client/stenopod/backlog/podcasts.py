"""Podcast feeds: an RSS 2.0 or Atom document (URL or file, recognised by its content) becomes one
entry per item with an audio enclosure. The entry's guid (else link, else enclosure URL) is the id
hint, itunes:duration and the enclosure length its duration and size. Ids hash the feed's own
identity (its link or title) and the guid, whatever URL the feed came from."""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
from urllib.parse import urljoin

from stenopod.backlog.source_items import FoundEntry, SourceError, display_source, is_audio_name

log = logging.getLogger("stenopod.backlog.sources")

FEED_EXTENSIONS = frozenset({"xml", "rss", "atom"})
SNIFF_BYTES = 4096
_ITUNES_NS = "http://www.itunes.com/dtds/podcast-1.0.dtd"
_ATOM_NS = "http://www.w3.org/2005/Atom"


def looks_like_feed(text: str) -> bool:
    head = text[:SNIFF_BYTES].lstrip("\ufeff \t\r\n").lower()
    return head.startswith("<") and ("<rss" in head or "<feed" in head)


def parse_feed(text: str, origin: str, *, identity_base: str, base_url: str | None) -> list[FoundEntry]:
    shown = display_source(origin)
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
    found: list[FoundEntry] = []
    for number, entry in enumerate(entries, start=1):
        if entry is None:
            continue  # an entry without an audio enclosure (a text post)
        url, guid, title, length, duration = entry
        if base_url is not None:
            url = urljoin(base_url, url)
        if not url.lower().startswith(("http://", "https://")):
            raise SourceError(
                f"{shown} entry {number}: enclosure {display_source(url)!r} is not an http(s) URL"
            )
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
            FoundEntry(
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
                # Named by its title (a '/' in it is no folder), else by its enclosure's file name.
                name=title.replace("/", "-").replace("\\", "-") if title else None,
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
    return is_audio_name(url)


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
