"""The outcome of a run over the whole backlog, with the manifest written and the cost estimated."""

from __future__ import annotations

from dataclasses import dataclass

from stenopod.backlog.ledger import ItemRecord, Ledger
from stenopod.backlog.output_manifest import write_manifest
from stenopod.backlog.packing import BYTES_PER_SECOND, UNKNOWN_SECONDS
from stenopod.backlog.progress import ProgressView
from stenopod.backlog.states import ItemState
from stenopod.pricing import job_cost
from stenopod.storage import ObjectStore


@dataclass
class BacklogReport:
    """The outcome of a run over the whole backlog (items of earlier runs included)."""

    total: int
    done: int
    failed: int
    pending: int
    items: list[ItemRecord]
    audio_seconds: float
    wall_seconds: float
    output: str
    manifest: str | None
    state: str
    execution_seconds: float = 0.0
    cost_usd: float | None = None
    gpu: str | None = None

    @property
    def failed_items(self) -> list[ItemRecord]:
        return [item for item in self.items if item.state == ItemState.FAILED]

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.pending == 0


def audio_seconds(ledger: Ledger) -> tuple[float, float]:
    """(audio seconds done, estimated audio seconds left)."""
    return ledger.audio_seconds(BYTES_PER_SECOND, UNKNOWN_SECONDS)


def make_report(
    ledger: Ledger,
    store: ObjectStore,
    *,
    output: str,
    state: str,
    wall_seconds: float,
    price: tuple[str, float] | None,
) -> BacklogReport:
    """The report, after (re)writing <output>/manifest.jsonl for every item of the backlog."""
    items = ledger.items()
    counts = ledger.counts()
    manifest = write_manifest(store, items)
    done_s, _ = audio_seconds(ledger)
    execution_ms = ledger.execution_ms_total()
    cost = gpu = None
    if price is not None:
        gpu, per_s = price
        cost = job_cost(execution_ms, per_s)
    return BacklogReport(
        total=counts.total,
        done=counts.done,
        failed=counts.failed,
        pending=counts.pending + counts.submitted,
        items=items,
        audio_seconds=done_s,
        wall_seconds=wall_seconds,
        output=output,
        manifest=manifest,
        state=state,
        execution_seconds=execution_ms / 1000.0,
        cost_usd=cost,
        gpu=gpu,
    )


def show_progress(
    view: ProgressView, ledger: Ledger, elapsed_s: float, in_flight_audio_s: float = 0.0
) -> None:
    """The progress bar brought up to date with the ledger (a no-op when it is off).

    in_flight_audio_s: audio the workers have transcribed of items not settled yet (in_flight.py),
    counted as done, and taken off what is left."""
    if not view.enabled:
        return
    counts = ledger.counts()
    done_s, remaining_s = audio_seconds(ledger)
    view.update(
        total=counts.total,
        done=counts.done,
        failed=counts.failed,
        audio_done_s=done_s + in_flight_audio_s,
        audio_remaining_s=max(0.0, remaining_s - in_flight_audio_s),
        elapsed_s=elapsed_s,
        in_flight=counts.submitted,  # items sent and not yet settled
    )
