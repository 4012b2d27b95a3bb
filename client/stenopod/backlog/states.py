"""The two state machines the ledger records: one item's, and one submission's (a job attempt).

They are separate enums because they are separate things: an item is pending, submitted, done or
failed for good; a submission is created, running, then finished, failed, lost or cancelled. The
values are what the state file stores (a submission "running" is stored as "submitted" and one
that finished as "done", as state files written before these enums existed have them), so any
state file resumes.
"""

from __future__ import annotations

from enum import Enum


class _StoredValue(str, Enum):
    """An enum whose members are the strings the ledger stores, and print as them."""

    def __str__(self) -> str:
        return str(self.value)


class ItemState(_StoredValue):
    PENDING = "pending"  # waiting for a submission (again, after a failed attempt with attempts left)
    SUBMITTED = "submitted"  # claimed by an open submission
    DONE = "done"  # transcripts verified in the output store
    FAILED = "failed"  # out of attempts, or a permanent error


class SubmissionState(_StoredValue):
    CREATED = "created"  # token recorded, /run maybe sent, no job id known yet
    RUNNING = "submitted"  # the job id is known
    FINISHED = "done"  # the job ended and its items were settled from its results
    ATTEMPT_FAILED = "failed"  # the job (or its submission) failed; items may get another attempt
    LOST = "lost"  # the endpoint forgot the job without a result
    CANCELLED = "cancelled"  # someone cancelled the job: no attempt used up
