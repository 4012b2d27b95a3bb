"""Stable, key-safe item ids: a readable slug plus a short hash of the full source.

The id becomes the transcript's object key stem (<output>/<id>.json), so it must satisfy
schema.is_valid_item_id, be the same every time the same backlog is run (the ledger and the output
store recognise finished items by it), and differ for two "ep1.mp3" in different folders.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Sequence
from urllib.parse import unquote, urlparse

from stenopod.schema import is_valid_item_id

DEFAULT_HASH_CHARS = 10  # 40 bits: collisions of equal slugs stay unlikely up to millions of items
LONG_HASH_CHARS = 24  # used only when two sources collide at the default length
MAX_SLUG_CHARS = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _slug(text: str) -> str:
    slug = _UNSAFE.sub("-", text)
    slug = re.sub(r"\.{2,}", ".", slug)
    slug = re.sub(r"-{2,}", "-", slug).strip("-._")
    if len(slug) > MAX_SLUG_CHARS:
        # Keep the end: for URLs and guids the distinguishing part (episode-42) comes last.
        slug = slug[-MAX_SLUG_CHARS:].lstrip("-._")
    return slug


def _stem(source: str) -> str:
    """The file name without extension, for a path or a URL."""
    if "://" in source:
        source = unquote(urlparse(source).path)
    name = source.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name


def _hint_text(hint: str) -> str:
    if "://" in hint:
        parsed = urlparse(hint)
        # A URL-shaped guid: the host and path read better than the scheme and a query.
        return f"{parsed.netloc}{parsed.path}" + (f"-{parsed.query}" if parsed.query else "")
    return hint


def item_id_for(source: str, hint: str | None = None, *, hash_chars: int = DEFAULT_HASH_CHARS) -> str:
    """A stable id such as "ep1-3f9a2c1b07" for source (a path, URL or any identity string).

    hint, when given, supplies the readable part instead of the source's file stem.
    """
    slug = _slug(_hint_text(hint)) if hint else ""
    if not slug:
        slug = _slug(_stem(source))
    digest = hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()[:hash_chars]
    item_id = f"{slug}-{digest}" if slug else f"item-{digest}"
    if not is_valid_item_id(item_id):  # cannot happen with the slug rules above; fail loudly if it does
        raise ValueError(f"derived item id {item_id!r} is not key-safe")
    return item_id


def dedupe_ids(
    sources: Sequence[tuple[str, str | None]], *, hash_chars: int = DEFAULT_HASH_CHARS
) -> list[str]:
    """Ids for distinct (source, hint) pairs, guaranteed unique.

    Two different sources whose short ids collide (same slug and same short hash) both get the
    long hash instead; the result depends only on the set of sources, so re-runs agree.
    """
    ids = [item_id_for(source, hint, hash_chars=hash_chars) for source, hint in sources]
    by_id: dict[str, list[int]] = defaultdict(list)
    for index, item_id in enumerate(ids):
        by_id[item_id].append(index)
    for indexes in by_id.values():
        if len({sources[index][0] for index in indexes}) > 1:
            for index in indexes:
                source, hint = sources[index]
                ids[index] = item_id_for(source, hint, hash_chars=LONG_HASH_CHARS)
    return ids
