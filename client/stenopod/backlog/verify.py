"""An item is done only when every asked-for format is in the output store, whatever the job said."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from stenopod.backlog.inline_results import write_inline_result
from stenopod.backlog.ledger import ItemOutcome, Ledger
from stenopod.backlog.states import ItemState
from stenopod.schema import ErrorCode
from stenopod.storage import ObjectStore, StorageError

log = logging.getLogger(__name__)


def reopen_for_new_formats(ledger: Ledger, formats: Sequence[str]) -> None:
    """Done items lacking a format this run asks for are transcribed again, for all of them."""
    wanted = set(formats)
    lacking = [item.id for item in ledger.items(ItemState.DONE) if not wanted <= set(item.outputs)]
    if lacking:
        log.warning("%d done item(s) lack some of %s: transcribing them again", len(lacking), sorted(wanted))
        ledger.reset_failed(done_ids=lacking)


@dataclass(frozen=True)
class InlineRendering:
    """How an inline run renders the files from an answer (the run's options)."""

    timestamps: str
    subtitles: dict[str, Any] | None
    task: str


async def verify_outcomes(
    store: ObjectStore,
    formats: Sequence[str],
    outcomes: list[ItemOutcome],
    *,
    inline: InlineRendering | None = None,
) -> list[ItemOutcome]:
    """Each claimed success checked in the store: with its outputs' URIs, or a storage_failed failure.

    inline: an inline run's rendering (the answer carries the transcripts): each is written to the
    store first (inline_results.py), then checked like any other."""
    return [
        await _verified(store, formats, outcome, inline) if outcome.ok else outcome for outcome in outcomes
    ]


async def _verified(
    store: ObjectStore, formats: Sequence[str], claim: ItemOutcome, inline: InlineRendering | None
) -> ItemOutcome:
    item_id = claim.id
    if inline is not None:
        result, wanted = claim.result or {}, tuple(formats)
        try:
            await asyncio.to_thread(
                write_inline_result,
                store,
                item_id,
                result,
                wanted,
                inline.timestamps,
                inline.subtitles,
                inline.task,
            )
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
