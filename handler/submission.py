"""The worker's half of crash-safe resubmission: one submission token, one transcription.

The client records a token in its ledger before it POSTs /run. If it dies before it learns the job
id, it submits again with the same token; both jobs may then reach workers. The first to claim the
token under <output>_stenopod/submissions/<token>.json transcribes; the other answers duplicate_of
without doing the work. When the job ends, the same object holds the item results, so the client
reads them from the store (RunPod forgets /run results after 30 minutes).

Wiring in job.py (with `store` the job's output ObjectStore and `job_id` RunPod's job["id"]):

    other = claim_submission(store, token, job_id)
    if other is not None:
        return JobOutput(items=[], duplicate_of=other).model_dump(mode="json")
    ...transcribe...
    record_submission_result(store, token, job_id, answer)
"""

from __future__ import annotations

import json
import time
from typing import Any

from stenopod.storage import ObjectStore, read_submission, submission_key

__all__ = ["claim_submission", "read_submission", "record_submission_result"]

# The fields of an item result that the client needs to fill its ledger and manifest; text and
# segments stay in the transcript files (they can be megabytes).
_RESULT_FIELDS = ("id", "status", "model", "language", "duration_s", "outputs", "rtfx", "error", "timings")


def _encode(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":"), sort_keys=True).encode()


def claim_submission(store: ObjectStore, token: str, job_id: str) -> str | None:
    """Claim token for job_id. None: go ahead and transcribe. A job id: that job holds it; answer duplicate_of.

    The same job claiming again (RunPod retried it, or a worker died and it was requeued) goes ahead.
    """
    record = {"job_id": job_id, "state": "started", "started_at": time.time()}
    if store.put_bytes_if_absent(submission_key(token), _encode(record), "application/json"):
        return None
    existing = read_submission(store, token)
    if existing is None or existing["job_id"] == job_id:
        return None
    return str(existing["job_id"])


def record_submission_result(store: ObjectStore, token: str, job_id: str, output: dict[str, Any]) -> None:
    """Mark the submission done with the item results (without text and segments)."""
    items = [
        {name: item.get(name) for name in _RESULT_FIELDS if name in item}
        for item in output.get("items") or []
        if isinstance(item, dict)
    ]
    record = {
        "job_id": job_id,
        "state": "done",
        "finished_at": time.time(),
        "model": output.get("model"),
        "items": items,
    }
    store.put_bytes(submission_key(token), _encode(record), "application/json")
