"""An item is done only when every asked-for format is in the output store, whatever the job said."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence

from stenopod.backlog.inline_results import write_inline_result
from stenopod.backlog.ledger import ItemOutcome
from stenopod.schema import ErrorCode
from stenopod.storage import ObjectStore, StorageError


async def verify_outcomes(
    store: ObjectStore,
    formats: Sequence[str],
    outcomes: list[ItemOutcome],
    *,
    inline_timestamps: str | None = None,
) -> list[ItemOutcome]:
    """Each claimed success checked in the store: with its outputs' URIs, or a storage_failed failure.

    inline_timestamps: an inline run's (the answer carries the transcripts): each is written to
    the store first (inline_results.py), then checked like any other."""
    return [
        await _verified(store, formats, outcome, inline_timestamps) if outcome.ok else outcome
        for outcome in outcomes
    ]


async def _verified(
    store: ObjectStore, formats: Sequence[str], claim: ItemOutcome, inline_timestamps: str | None
) -> ItemOutcome:
    item_id = claim.id
    if inline_timestamps is not None:
        result, wanted = claim.result or {}, tuple(formats)
        try:
            await asyncio.to_thread(write_inline_result, store, item_id, result, wanted, inline_timestamps)
        except (StorageError, ValueError) as error:
            return ItemOutcome(
                id=item_id, ok=False, error_code=ErrorCode.storage_failed.value, error_message=str(error)
            )
    try:
        keys = set(await asyncio.to_thread(lambda: list(store.list_keys(f"{item_id}."))))
    except StorageError as error:
        return ItemOutcome(
            id=item_id, ok=False, error_code=ErrorCode.storage_failed.value, error_message=str(error)
        )
    missing = [fmt for fmt in formats if f"{item_id}.{fmt}" not in keys]
    if missing:
        return ItemOutcome(
            id=item_id,
            ok=False,
            error_code=ErrorCode.storage_failed.value,
            error_message=f"the job reported success but {', '.join(missing)} is missing from the output",
        )
    outputs = {fmt: store.uri(f"{item_id}.{fmt}") for fmt in formats}
    return dataclasses.replace(claim, outputs=outputs)
