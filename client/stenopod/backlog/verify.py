"""An item is done only when every asked-for format is in the output store, whatever the job said."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence

from stenopod.backlog.ledger import ItemOutcome
from stenopod.schema import ErrorCode
from stenopod.storage import ObjectStore, StorageError


async def verify_outcomes(
    store: ObjectStore, formats: Sequence[str], outcomes: list[ItemOutcome]
) -> list[ItemOutcome]:
    """Each claimed success checked in the store: with its outputs' URIs, or a storage_failed failure."""
    return [await _verified(store, formats, outcome) if outcome.ok else outcome for outcome in outcomes]


async def _verified(store: ObjectStore, formats: Sequence[str], claim: ItemOutcome) -> ItemOutcome:
    item_id = claim.id
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
