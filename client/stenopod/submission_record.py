"""The worker's record of a submission token, kept in the output store beside the transcripts.

The worker writes it (handler/submission.py): when a job claims the token (state "started") and
when the job ends (state "done", with the item results minus text and segments). The client reads
it to learn a job id it never received, or the results of a job the endpoint has forgotten.
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stenopod.storage import SUBMISSIONS_PREFIX, ObjectStore, StorageError

# The fields of an item result that the client needs to fill its ledger and manifest; text and
# segments stay in the transcript files (they can be megabytes).
RESULT_FIELDS = ("id", "status", "model", "language", "duration_s", "outputs", "rtfx", "error", "timings")


def submission_key(token: str) -> str:
    """Where the worker records which job holds a client's submission token."""
    return f"{SUBMISSIONS_PREFIX}{token}.json"


class SubmissionRecord(BaseModel):
    """<output>/_stenopod/submissions/<token>.json. Unknown fields are ignored (newer workers)."""

    model_config = ConfigDict(extra="ignore")

    job_id: str = Field(min_length=1)
    state: Literal["started", "done"]
    started_at: float | None = None
    finished_at: float | None = None
    model: str | None = None
    # Item results, each with RESULT_FIELDS only, as the job's answer had them.
    items: list[dict[str, Any]] = Field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.state == "done"

    @classmethod
    def started(cls, job_id: str) -> SubmissionRecord:
        return cls(job_id=job_id, state="started", started_at=time.time())

    @classmethod
    def finished(cls, job_id: str, output: dict[str, Any]) -> SubmissionRecord:
        """The record of a job that ended with `output` (its answer as a dict)."""
        items = [
            {name: item.get(name) for name in RESULT_FIELDS if name in item}
            for item in output.get("items") or []
            if isinstance(item, dict)
        ]
        return cls(
            job_id=job_id, state="done", finished_at=time.time(), model=output.get("model"), items=items
        )

    def encode(self) -> bytes:
        data = self.model_dump(exclude_none=True)
        if self.state == "done":
            data.setdefault("model", None)  # the record has always said which model, if none
        return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()


def read_submission(store: ObjectStore, token: str) -> SubmissionRecord | None:
    """The worker's record of a submission token, or None when there is none (or it is unreadable)."""
    key = submission_key(token)
    try:
        if not store.exists(key):
            return None
        return SubmissionRecord.model_validate_json(store.get_bytes(key))
    except (StorageError, ValidationError, ValueError):
        return None
