"""What a job's end means for its items: RunPod's status answer -> one outcome per item.

Pure functions, no I/O: the run loop polls (polling.py), reads the worker's submission record from
the output store, calls these, then checks each success against the store (verify.py) before the
ledger counts it. An item the answer reports as ok comes back here as ok with its outputs still
empty: that is a claim, not yet a verified transcript.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from stenopod.backlog.ledger import ItemOutcome
from stenopod.backlog.states import SubmissionState
from stenopod.endpoint import JobStatus
from stenopod.schema import ErrorCode, JobError
from stenopod.submission_record import SubmissionRecord

# Errors that another attempt cannot fix: the same bytes will fail the same way.
PERMANENT_CODES = frozenset(
    {
        ErrorCode.invalid_input.value,
        ErrorCode.url_forbidden.value,
        ErrorCode.too_large.value,
        ErrorCode.too_long.value,
        ErrorCode.not_audio.value,
        ErrorCode.model_unavailable.value,
        # The inline answer over RunPod's cap: the same items give the same transcripts, as large;
        # the fix is an "output" bucket (the error says so), not another attempt billed in vain.
        ErrorCode.output_too_large.value,
    }
)
_UNMENTIONED = "the job's answer does not mention this item"


@dataclass
class Settled:
    """How a submission ended: its state, its items' outcomes, and whether the attempt counts."""

    state: SubmissionState
    outcomes: list[ItemOutcome] = field(default_factory=list)
    # False when the items did nothing wrong (a cancel, a job lost while this client was away).
    count_attempt: bool = True


def failed_outcomes(item_ids: Iterable[str], code: str, message: str) -> list[ItemOutcome]:
    """The same failure for every item (a job that failed as a whole, a submission refused)."""
    return [ItemOutcome(id=item_id, ok=False, error_code=code, error_message=message) for item_id in item_ids]


def duplicate_target(status: JobStatus, job_id: str) -> str | None:
    """The job this one handed its submission to (COMPLETED with duplicate_of), else None."""
    if status.status != "COMPLETED":
        return None
    output = status.output if isinstance(status.output, dict) else {}
    target = output.get("duplicate_of")
    return str(target) if target and target != job_id else None


def settle_vanished(
    job_id: str, item_ids: list[str], stored: SubmissionRecord | None, *, recovered: bool
) -> Settled:
    """The endpoint forgot the job: its results may still be in the store (the worker's record)."""
    if stored is not None and stored.done:
        return Settled(SubmissionState.FINISHED, outcomes_from_results(item_ids, stored.items))
    message = f"job {job_id} vanished from the endpoint without a result"
    outcomes = failed_outcomes(item_ids, ErrorCode.internal_error.value, message)
    # A job lost while this client was not running is not the items' fault.
    return Settled(SubmissionState.LOST, outcomes, count_attempt=not recovered)


def settle_endless_duplicates(item_ids: list[str]) -> Settled:
    message = "the endpoint kept answering duplicate_of"
    return Settled(
        SubmissionState.ATTEMPT_FAILED, failed_outcomes(item_ids, ErrorCode.internal_error.value, message)
    )


def settle_final(status: JobStatus, item_ids: list[str], stored: SubmissionRecord | None) -> Settled:
    """A final status (and the worker's record of the submission, if any) -> the items' outcomes."""
    recorded = stored.items if stored is not None and stored.done else None
    if status.status == "COMPLETED":
        output = status.output if isinstance(status.output, dict) else {}
        results = recorded if recorded is not None else output.get("items") or []
        return Settled(SubmissionState.FINISHED, outcomes_from_results(item_ids, results))
    if status.status == "FAILED":
        error = JobError.from_runpod_error(status.error)
        if recorded is not None:
            results = recorded
        else:
            results = [item.model_dump(mode="json") for item in error.items or []]
        outcomes = outcomes_from_results(
            item_ids, results, default_code=error.code.value, default_message=error.message
        )
        return Settled(SubmissionState.ATTEMPT_FAILED, outcomes)
    if recorded is not None:
        # The worker finished and recorded it before the timeout or the cancel landed: the
        # transcripts are in the store (each is checked there), not worth doing again.
        return Settled(SubmissionState.FINISHED, outcomes_from_results(item_ids, recorded))
    if status.status == "CANCELLED":
        # Someone stopped the job (stenopod cancel): the items did nothing wrong.
        outcomes = failed_outcomes(item_ids, ErrorCode.cancelled.value, f"job {status.id} was cancelled")
        return Settled(SubmissionState.CANCELLED, outcomes, count_attempt=False)
    message = f"job {status.id} ended {status.status} (past the endpoint's execution timeout?)"
    return Settled(
        SubmissionState.ATTEMPT_FAILED, failed_outcomes(item_ids, ErrorCode.internal_error.value, message)
    )


def outcomes_from_results(
    item_ids: list[str],
    results: list[Any],
    *,
    default_code: str = ErrorCode.internal_error.value,
    default_message: str = _UNMENTIONED,
) -> list[ItemOutcome]:
    """One outcome per item id from the job's item results (dicts as the worker answered them)."""
    by_id = {result.get("id"): result for result in results if isinstance(result, dict)}
    outcomes = []
    for item_id in item_ids:
        result = by_id.get(item_id)
        if result is None:
            code, message = default_code, default_message
        elif result.get("status") == "ok":
            outcomes.append(
                ItemOutcome(
                    id=item_id,
                    ok=True,
                    model=result.get("model"),
                    language=result.get("language"),
                    duration_s=result.get("duration_s"),
                    result=result,
                )
            )
            continue
        else:
            error = result.get("error") or {}
            code = str(error.get("code") or default_code)
            message = str(error.get("message") or default_message)
        outcomes.append(
            ItemOutcome(
                id=item_id,
                ok=False,
                error_code=code,
                error_message=message,
                retryable=code not in PERMANENT_CODES,
            )
        )
    return outcomes
