"""Readable item ids: the file's own name, in ASCII, with the folders it was found in.

`Épisode 2 – Café.mp3` in the named folder's `2024/` becomes the id `2024/Episode-2-Cafe`, so its
transcripts are <output>/2024/Episode-2-Cafe.<format>. A name two sources would share (compared
without case: macOS and Windows folders ignore it) gets a short hash of the source as a suffix on
all but one of them: the one whose identity sorts first, so the names depend only on the set of
sources, never on the order they were listed in. Ids already in a state file are never renamed
(id_book.py): a resumed backlog keeps every name it had.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Sequence

from anyascii import anyascii

from stenopod.schema import MAX_ITEM_ID_CHARS, is_valid_item_id

# Room for a collision suffix ("-" and up to 16 hex digits) within the id's limit.
MAX_NAME_CHARS = MAX_ITEM_ID_CHARS - 17
_SUFFIX_CHARS = (6, 10, 16)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_TRANSCRIPT_NAME = re.compile(r"\.(json|txt|srt|vtt)$", re.IGNORECASE)


def _segment(text: str) -> str:
    # Emoji and other symbols become separators: anyascii would spell them as ":microphone2:".
    text = "".join(" " if unicodedata.category(char) == "So" else char for char in text)
    slug = _UNSAFE.sub("-", anyascii(unicodedata.normalize("NFC", text)))
    slug = re.sub(r"\.{2,}", ".", slug)
    return re.sub(r"-{2,}", "-", slug).strip("-._")


def readable_name(name: str) -> str:
    """name ("a/b/Épisode 2 – Café", no extension) as a key-safe id; "" when nothing readable is left.

    '/' separates folders; a name too long loses its leading folders first, then the end of its stem.
    """
    segments = [slug for slug in map(_segment, name.replace("\\", "/").split("/")) if slug]
    # A folder named like a transcript ("ep.json/") becomes "ep-json": its place is another's file.
    segments = [*(_TRANSCRIPT_NAME.sub(r"-\1", folder) for folder in segments[:-1]), *segments[-1:]]
    while len(segments) > 1 and len("/".join(segments)) > MAX_NAME_CHARS:
        segments.pop(0)
    slug = "/".join(segments)
    if len(slug) > MAX_NAME_CHARS:
        slug = slug[:MAX_NAME_CHARS].rstrip("-._")
    return slug if slug and is_valid_item_id(slug) else ""


def _suffixed(name: str, identity: str, chars: int) -> str:
    return f"{name}-{hashlib.sha256(identity.encode('utf-8', 'surrogatepass')).hexdigest()[:chars]}"


def readable_ids(entries: Sequence[tuple[str, str]], taken: Iterable[str] = ()) -> list[str]:
    """Unique ids for (identity, name) pairs of distinct identities, none of them in taken.

    The plain name goes to the identity that sorts first among those sharing it (unless taken
    already holds it); the others get "-" and a hash of their identity, lengthened until unique.
    """
    used = {item_id.lower() for item_id in taken}
    plain = [readable_name(name) or "item" for _, name in entries]
    groups: dict[str, list[int]] = defaultdict(list)
    for index, name in enumerate(plain):
        groups[name.lower()].append(index)
    ids = list(plain)
    crowded: list[int] = []
    for key, indexes in groups.items():
        indexes.sort(key=lambda index: entries[index][0])
        if key in used:
            crowded.extend(indexes)
        else:
            used.add(key)
            crowded.extend(indexes[1:])
    # Sorted by identity so that which suffix length each gets never depends on the listing order.
    for index in sorted(crowded, key=lambda index: entries[index][0]):
        identity = entries[index][0]
        for chars in _SUFFIX_CHARS:
            candidate = _suffixed(plain[index], identity, chars)
            if candidate.lower() not in used:
                break
        else:  # 64 bits of hash colliding: only a deliberately built backlog gets here
            raise ValueError(f"no unique id for {identity!r}")
        used.add(candidate.lower())
        ids[index] = candidate
    return ids
