"""Source lists (the CLI's "manifests" of sources): .txt has one URL, s3:// URI or path a line (#
comments); .csv has a header with `url` and optional `id`, `duration_s`, `title`; .jsonl has objects
with the same keys. Relative paths are resolved against the list's folder (or its URL)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

from stenopod.backlog.source_items import (
    FoundEntry,
    SourceError,
    display_source,
    local_entry,
    name_below,
    url_entry,
)
from stenopod.schema import ITEM_ID_RULE, is_valid_item_id
from stenopod.storage import StorageError, parse_s3_uri

LIST_EXTENSIONS = frozenset({"txt", "csv", "jsonl"})


def list_entries(
    text: str, ext: str, origin: str, *, base: Path | None, base_url: str | None
) -> list[FoundEntry]:
    rows = {"txt": _txt_rows, "csv": _csv_rows, "jsonl": _jsonl_rows}[ext](text, origin)
    found: list[FoundEntry] = []
    for line, row in rows:
        where = f"{display_source(origin)} line {line}"
        ref = row.get("url")
        if not isinstance(ref, str) or not ref.strip():
            raise SourceError(f"{where}: missing 'url'")
        explicit_id = _explicit_id(row.get("id"), where)
        entry = _entry(ref.strip(), where, base, base_url)
        entry.explicit_id = explicit_id
        entry.duration_s = _duration_field(row.get("duration_s"), where)
        title = row.get("title")
        entry.title = str(title) if title not in (None, "") else None
        found.append(entry)
    if not found:
        raise SourceError(f"{display_source(origin)}: the manifest lists no entries")
    return found


def _entry(ref: str, where: str, base: Path | None, base_url: str | None) -> FoundEntry:
    lowered = ref.lower()
    if lowered.startswith(("http://", "https://")):
        return url_entry(ref, origin=where)
    if lowered.startswith("s3://"):
        try:
            parse_s3_uri(ref)
        except StorageError as error:
            raise SourceError(f"{where}: {error}") from None
        return FoundEntry(ref, None, None, where, ref, ref, None)
    if "://" in ref:
        raise SourceError(f"{where}: unsupported scheme in {display_source(ref)!r}")
    if base_url is not None:
        return url_entry(urljoin(base_url, ref), origin=where)
    assert base is not None
    path = (base / Path(ref).expanduser()).resolve()
    if not path.is_file():
        raise SourceError(f"{where}: {ref}: no such file")
    # A path below the manifest's folder keeps its folders in the name, as in a folder source.
    return local_entry(path, origin=where, source=ref, name=name_below(path, base.resolve()))


def _explicit_id(value: Any, where: str) -> str | None:
    if value in (None, ""):
        return None
    value = str(value).strip()
    if not is_valid_item_id(value):
        raise SourceError(f"{where}: id {value!r} must be {ITEM_ID_RULE}")
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
            f"{display_source(origin)}: the CSV header must have a 'url' column (optional: id, duration_s)"
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
            raise SourceError(f"{display_source(origin)} line {number}: not valid JSON") from None
        if not isinstance(row, dict):
            raise SourceError(f"{display_source(origin)} line {number}: expected a JSON object with 'url'")
        rows.append((number, row))
    return rows
