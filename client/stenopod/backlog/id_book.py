"""Which id each found item gets: the one its state file gave it, else a new one.

A backlog's ids are fixed the first time its items are stored: a resumed run must find its done
items under the same ids, or it would transcribe them again. A state file written before ids were
readable names (it has items, none with an identity) keeps hashed ids (ids.py) for all of its items,
old and new; a new state file gets readable names (names.py), and an item it already holds keeps
the name it was given, whatever was added to the backlog since.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from stenopod.backlog.ids import dedupe_ids
from stenopod.backlog.ledger import ItemRecord, Ledger
from stenopod.backlog.names import readable_ids
from stenopod.backlog.source_items import FoundEntry, SourceError, SourceItem, display_source, stem

ID_SCHEME_KEY = "id_scheme"
NAMES = "names"  # readable names: the file's stem, its folders, a suffix on a collision
HASHED = "hashed"  # a slug and a hash of the source ("jfk-c8d21ce57e"): state files of earlier versions


@dataclass(frozen=True)
class IdBook:
    scheme: str = NAMES
    known: dict[str, str] = field(default_factory=dict)  # identity -> the id the state file gave it
    taken: frozenset[str] = frozenset()  # every id in the state file


def _scheme(ledger: Ledger, items: list[ItemRecord]) -> str:
    """The scheme written down, else: an earlier version's file is one with items none of which
    has an identity (it had no such column); any other file names its items readably."""
    stored = ledger.get_meta(ID_SCHEME_KEY)
    if stored:
        return str(stored)
    return HASHED if items and not any(item.identity for item in items) else NAMES


def keep_id_scheme(ledger: Ledger) -> None:
    """Write the state file's scheme down before items are added to it (under its lock): once an
    old file holds new items too, they alone could not tell."""
    if ledger.get_meta(ID_SCHEME_KEY) is None:
        ledger.set_meta(ID_SCHEME_KEY, _scheme(ledger, ledger.items()))


def read_id_book(ledger: Ledger) -> IdBook:
    items = ledger.items()
    known = {item.identity: item.id for item in items if item.identity}
    return IdBook(_scheme(ledger, items), known, frozenset(item.id for item in items))


def id_book_at(state_path: Path) -> IdBook:
    """The book of the state file at state_path; a fresh one when there is none yet (none is made)."""
    if not state_path.exists():
        return IdBook()
    with Ledger(state_path) as ledger:
        return read_id_book(ledger)


def _merge(found: Sequence[FoundEntry]) -> list[FoundEntry]:
    """One entry per identity. The first mention supplies the item; its name is the most specific
    one any mention gives (most folders, then the smallest), so the order of sources never matters."""
    merged: dict[str, FoundEntry] = {}
    names: dict[str, set[str]] = {}
    for entry in found:
        first = merged.setdefault(entry.identity, entry)
        first.explicit_id = first.explicit_id or entry.explicit_id
        first.title = first.title or entry.title
        names.setdefault(entry.identity, set()).add(entry.name or stem(entry.source))
    for identity, entry in merged.items():
        entry.name = min(names[identity], key=lambda name: (-name.count("/"), name))
    return list(merged.values())


def assign_ids(found: Sequence[FoundEntry], book: IdBook) -> list[SourceItem]:
    entries = _merge(found)
    if book.scheme == HASHED:
        derived = dedupe_ids([(entry.identity, entry.hint) for entry in entries])
    else:
        fresh = [e for e in entries if not e.explicit_id and e.identity not in book.known]
        # New names avoid every id the state file holds and every explicit id of this backlog.
        reserved = book.taken | {entry.explicit_id for entry in entries if entry.explicit_id}
        new = dict(
            zip(
                (entry.identity for entry in fresh),
                readable_ids([(entry.identity, entry.name or "") for entry in fresh], reserved),
                strict=True,
            )
        )
        derived = [book.known.get(entry.identity) or new.get(entry.identity, "") for entry in entries]
    owners: dict[str, FoundEntry] = {}
    items: list[SourceItem] = []
    for entry, derived_id in zip(entries, derived, strict=True):
        item_id = entry.explicit_id or derived_id
        other = owners.get(item_id)
        if other is not None:
            raise SourceError(
                f"{entry.origin}: id {item_id!r} is also used by {other.origin} ({display_source(other.source)})"
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
                identity=entry.identity,
            )
        )
    return items
