"""The worker's half of crash-safe resubmission: one submission token, one transcription.

The client records a token in its ledger before it POSTs /run. If it dies before it learns the job
id, it submits again with the same token; both jobs may then reach workers. The first to claim the
token under <output>_stenopod/submissions/<token>.json transcribes; the other answers duplicate_of
without doing the work. When the job ends, the same object holds the item results, so the client
reads them from the store (RunPod forgets /run results after 30 minutes). The record's shape is
stenopod.submission_record.SubmissionRecord, which both sides import.

Wiring in job.py (with `store` the job's output ObjectStore and `job_id` RunPod's job["id"]):

    other = claim_submission(store, token, job_id)
    if other is not None:
        return JobOutput(items=[], duplicate_of=other).model_dump(mode="json")
    ...transcribe...
    record_submission_result(store, token, job_id, answer)
"""

from __future__ import annotations

from typing import Any

from stenopod.storage import ObjectStore
from stenopod.submission_record import SubmissionRecord, read_submission, submission_key

__all__ = ["claim_submission", "read_submission", "record_submission_result"]


def claim_submission(store: ObjectStore, token: str, job_id: str) -> str | None:
    """Claim token for job_id. None: go ahead and transcribe. A job id: that job holds it; answer duplicate_of.

    The same job claiming again (RunPod retried it, or a worker died and it was requeued) goes ahead.
    """
    record = SubmissionRecord.started(job_id)
    if store.put_bytes_if_absent(submission_key(token), record.encode(), "application/json"):
        return None
    existing = read_submission(store, token)
    if existing is None or existing.job_id == job_id:
        return None
    return existing.job_id


def record_submission_result(store: ObjectStore, token: str, job_id: str, output: dict[str, Any]) -> None:
    """Mark the submission done with the item results (without text and segments)."""
    record = SubmissionRecord.finished(job_id, output)
    store.put_bytes(submission_key(token), record.encode(), "application/json")
