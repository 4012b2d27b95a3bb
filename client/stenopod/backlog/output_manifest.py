"""<output>/manifest.jsonl: one line per item, the backlog's table of contents.

Written in one piece at the end of a run (a rename for a folder, one PUT for S3), so a reader never
sees half a manifest, and rewritten by every later run so it always describes the whole backlog.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from stenopod.backlog.ledger import ItemRecord
from stenopod.backlog.states import ItemState
from stenopod.storage import ObjectStore

MANIFEST_KEY = "manifest.jsonl"


def manifest_line(item: ItemRecord) -> dict[str, Any]:
    """The manifest's view of one item. status: ok, error, or pending (the run stopped before it)."""
    status = {ItemState.DONE: "ok", ItemState.FAILED: "error"}.get(item.state, "pending")
    error = None
    if item.state == ItemState.FAILED:
        error = {"code": item.error_code or "internal_error", "message": item.error_message or ""}
    return {
        "id": item.id,
        "source": item.source,
        "title": item.title,  # a feed episode's title, or a manifest's title column; else null
        "status": status,
        "model": item.model,
        "language": item.language,
        "duration_s": item.result_duration_s,
        "outputs": item.outputs if item.state == ItemState.DONE else {},
        "error": error,
    }


def render_manifest(items: Iterable[ItemRecord]) -> bytes:
    lines = [json.dumps(manifest_line(item), ensure_ascii=False, separators=(",", ":")) for item in items]
    return ("\n".join(lines) + "\n").encode() if lines else b""


def write_manifest(store: ObjectStore, items: Iterable[ItemRecord]) -> str:
    """Write the manifest atomically and return its URI."""
    return store.put_bytes(MANIFEST_KEY, render_manifest(items), "application/x-ndjson")
