"""following.py: a job's final status (and the worker's record) -> one outcome per item, no I/O."""

from __future__ import annotations

from typing import Any

from stenopod.backlog.following import (
    duplicate_target,
    settle_endless_duplicates,
    settle_final,
    settle_vanished,
)
from stenopod.backlog.states import SubmissionState
from stenopod.endpoint import JobStatus
from stenopod.schema import ErrorCode, JobError
from stenopod.submission_record import SubmissionRecord


def _status(state: str, output: Any = None, error: Any = None) -> JobStatus:
    return JobStatus(id="job-1", status=state, output=output, error=error)


def _ok(item_id: str) -> dict[str, Any]:
    return {"id": item_id, "status": "ok", "model": "tiny.en", "language": "en", "duration_s": 11.0}


def _error(item_id: str, code: str) -> dict[str, Any]:
    return {"id": item_id, "status": "error", "error": {"code": code, "message": f"{item_id} broke"}}


def test_a_completed_job_gives_claims_errors_and_unmentioned_items() -> None:
    output = {"items": [_ok("a"), _error("b", "not_audio"), _error("c", "fetch_failed")]}
    settled = settle_final(_status("COMPLETED", output), ["a", "b", "c", "d"], None)
    assert settled.state is SubmissionState.FINISHED and settled.count_attempt
    a, b, c, d = settled.outcomes
    # A success is a claim until verify.py finds the transcripts: no outputs yet.
    assert (a.ok, a.model, a.language, a.duration_s, a.outputs) == (True, "tiny.en", "en", 11.0, {})
    assert (b.ok, b.error_code, b.error_message, b.retryable) == (False, "not_audio", "b broke", False)
    assert (c.error_code, c.retryable) == ("fetch_failed", True)
    assert (d.ok, d.error_code, d.retryable) == (False, "internal_error", True)
    assert "does not mention" in (d.error_message or "")


def test_an_answer_too_large_to_carry_is_not_retried() -> None:
    output = {"items": [_error("a", "output_too_large"), _error("b", "internal_error")]}
    a, b = settle_final(_status("COMPLETED", output), ["a", "b"], None).outcomes
    assert (a.error_code, a.retryable) == ("output_too_large", False)
    assert (b.error_code, b.retryable) == ("internal_error", True)


def test_the_workers_record_wins_over_the_status_answer() -> None:
    stored = SubmissionRecord(job_id="job-1", state="done", items=[_ok("a")])
    settled = settle_final(_status("COMPLETED", {"items": [_error("a", "internal_error")]}), ["a"], stored)
    assert settled.outcomes[0].ok
    # A timeout or a cancel that landed after the worker recorded its results costs nothing.
    for state in ("TIMED_OUT", "CANCELLED"):
        late = settle_final(_status(state), ["a"], stored)
        assert (late.state, late.outcomes[0].ok) == (SubmissionState.FINISHED, True)
    # A record of a claim only ("started") says nothing about results.
    started = SubmissionRecord(job_id="job-1", state="started")
    assert settle_final(_status("TIMED_OUT"), ["a"], started).state is SubmissionState.ATTEMPT_FAILED


def test_a_failed_job_passes_its_error_to_the_items_it_does_not_itemise() -> None:
    error = JobError(code=ErrorCode.model_unavailable, message="no such model").to_runpod_error()
    settled = settle_final(_status("FAILED", error=error), ["a", "b"], None)
    assert settled.state is SubmissionState.ATTEMPT_FAILED
    assert [(o.error_code, o.error_message, o.retryable) for o in settled.outcomes] == [
        ("model_unavailable", "no such model", False)
    ] * 2


def test_cancelled_uses_no_attempt_and_a_timeout_does() -> None:
    cancelled = settle_final(_status("CANCELLED"), ["a"], None)
    assert (cancelled.state, cancelled.count_attempt) == (SubmissionState.CANCELLED, False)
    assert cancelled.outcomes[0].error_code == "cancelled"
    timed_out = settle_final(_status("TIMED_OUT"), ["a"], None)
    assert (timed_out.state, timed_out.count_attempt) == (SubmissionState.ATTEMPT_FAILED, True)
    assert "TIMED_OUT" in (timed_out.outcomes[0].error_message or "")


def test_a_vanished_job_is_lost_unless_the_store_has_its_results() -> None:
    lost = settle_vanished("job-1", ["a"], None, recovered=False)
    assert (lost.state, lost.count_attempt, lost.outcomes[0].error_code) == (
        SubmissionState.LOST,
        True,
        "internal_error",
    )
    # Lost while this client was away: not the items' fault.
    assert settle_vanished("job-1", ["a"], None, recovered=True).count_attempt is False
    stored = SubmissionRecord(job_id="job-1", state="done", items=[_ok("a")])
    found = settle_vanished("job-1", ["a"], stored, recovered=True)
    assert (found.state, found.outcomes[0].ok) == (SubmissionState.FINISHED, True)


def test_duplicate_of_is_followed_only_from_a_completed_job_naming_another() -> None:
    assert duplicate_target(_status("COMPLETED", {"items": [], "duplicate_of": "job-0"}), "job-1") == "job-0"
    assert duplicate_target(_status("COMPLETED", {"duplicate_of": "job-1"}), "job-1") is None
    assert duplicate_target(_status("FAILED", {"duplicate_of": "job-0"}), "job-1") is None
    assert duplicate_target(_status("COMPLETED", "plain text"), "job-1") is None
    endless = settle_endless_duplicates(["a"])
    assert (endless.state, endless.outcomes[0].error_code) == (
        SubmissionState.ATTEMPT_FAILED,
        "internal_error",
    )


def test_states_keep_the_values_existing_state_files_hold() -> None:
    assert [s.value for s in SubmissionState] == [
        "created",
        "submitted",
        "done",
        "failed",
        "lost",
        "cancelled",
    ]
    assert f"{SubmissionState.RUNNING}" == "submitted"
