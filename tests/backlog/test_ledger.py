from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest
from stenopod.backlog.errors import UsageError
from stenopod.backlog.ledger import (
    ItemOutcome,
    Ledger,
    LedgerError,
)
from stenopod.backlog.preflight import hold_lock
from stenopod.backlog.states import ItemState, SubmissionState


@dataclass
class Source:
    id: str
    source: str
    audio: str | None = None
    local_path: Path | None = None
    size_bytes: int | None = None
    duration_s: float | None = None
    title: str | None = None


def _items(*ids: str) -> list[Source]:
    return [
        Source(id=i, source=f"https://example.test/{i}.mp3", audio=f"https://example.test/{i}.mp3")
        for i in ids
    ]


def test_items_are_added_once_and_keep_their_order(tmp_path):
    with Ledger(tmp_path / "state.sqlite") as ledger:
        assert ledger.add_items(_items("b", "a")) == 2
        assert ledger.add_items(_items("a", "c")) == 1
        assert [item.id for item in ledger.items()] == ["b", "a", "c"]
        assert ledger.counts().pending == 3


def test_state_survives_reopening_and_uses_wal(tmp_path):
    path = tmp_path / "state.sqlite"
    with Ledger(path) as ledger:
        ledger.add_items(_items("a", "b"))
        ledger.create_submission("tok1", ["a", "b"])
        ledger.set_meta("options", {"output": "out"})
    # A fresh connection (as after a crash) sees every committed change.
    with Ledger(path) as ledger:
        assert ledger.counts().submitted == 2
        (sub,) = ledger.open_submissions()
        assert (sub.token, sub.job_id, sub.state, sub.item_ids) == (
            "tok1",
            None,
            SubmissionState.CREATED,
            ["a", "b"],
        )
        ledger.set_job_id("tok1", "job-1")
        assert ledger.item("a").job_id == "job-1"
        assert ledger.get_meta("options") == {"output": "out"}
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_finishing_settles_done_retry_and_permanent_failures(tmp_path):
    with Ledger(tmp_path / "state.sqlite") as ledger:
        ledger.add_items(_items("ok", "flaky", "broken", "silent"))
        ledger.create_submission("t", ["ok", "flaky", "broken", "silent"])
        ledger.set_job_id("t", "job")
        ledger.finish_submission(
            "t",
            SubmissionState.FINISHED,
            [
                ItemOutcome(
                    "ok",
                    True,
                    outputs={"txt": "file:///out/ok.txt"},
                    model="tiny.en",
                    language="en",
                    duration_s=3.5,
                ),
                ItemOutcome("flaky", False, error_code="fetch_failed", error_message="HTTP 503"),
                ItemOutcome("broken", False, error_code="not_audio", error_message="HTML", retryable=False),
            ],
            max_attempts=3,
            execution_ms=1200,
        )
        ok, flaky, broken, silent = (ledger.item(i) for i in ("ok", "flaky", "broken", "silent"))
        assert (ok.state, ok.outputs, ok.language, ok.result_duration_s) == (
            ItemState.DONE,
            {"txt": "file:///out/ok.txt"},
            "en",
            3.5,
        )
        assert (flaky.state, flaky.attempts, flaky.error_code, flaky.token) == (
            ItemState.PENDING,
            1,
            "fetch_failed",
            None,
        )
        assert (broken.state, broken.error_code) == (ItemState.FAILED, "not_audio")
        # Not mentioned in the answer: another attempt.
        assert silent.state == ItemState.PENDING
        assert ledger.submission("t").state == SubmissionState.FINISHED
        assert ledger.execution_ms_total() == 1200
        assert ledger.open_submissions() == []


def test_attempts_run_out_then_retry_resets_them(tmp_path):
    with Ledger(tmp_path / "state.sqlite") as ledger:
        ledger.add_items(_items("x"))
        for attempt in range(2):
            ledger.create_submission(f"t{attempt}", ["x"])
            ledger.finish_submission(
                f"t{attempt}",
                SubmissionState.ATTEMPT_FAILED,
                [ItemOutcome("x", False, error_code="fetch_failed", error_message="timeout")],
                max_attempts=2,
            )
        item = ledger.item("x")
        assert (item.state, item.attempts, item.error_code) == (ItemState.FAILED, 2, "fetch_failed")
        assert ledger.reset_failed() == 1
        item = ledger.item("x")
        assert (item.state, item.attempts, item.error_code) == (ItemState.PENDING, 0, None)


def test_a_lost_job_does_not_use_up_attempts(tmp_path):
    with Ledger(tmp_path / "state.sqlite") as ledger:
        ledger.add_items(_items("x"))
        ledger.create_submission("t", ["x"])
        ledger.finish_submission("t", "lost", [], max_attempts=1, count_attempt=False)
        item = ledger.item("x")
        assert (item.state, item.attempts) == (ItemState.PENDING, 0)


def test_a_done_item_is_never_reopened_by_a_late_submission(tmp_path):
    with Ledger(tmp_path / "state.sqlite") as ledger:
        ledger.add_items(_items("x"))
        ledger.create_submission("old", ["x"])
        ledger.finish_submission(
            "old", SubmissionState.FINISHED, [ItemOutcome("x", True, outputs={"txt": "u"})], max_attempts=3
        )
        # A stale submission naming the item (it moved on) must leave it done.
        ledger.create_submission("stale", [])
        ledger._db.execute("UPDATE submissions SET item_ids='[\"x\"]' WHERE token='stale'")
        ledger.finish_submission(
            "stale",
            SubmissionState.ATTEMPT_FAILED,
            [ItemOutcome("x", False, error_code="internal_error")],
            max_attempts=3,
        )
        assert ledger.item("x").state == ItemState.DONE


def test_a_file_that_is_not_sqlite_is_a_clear_error(tmp_path):
    path = tmp_path / "state.sqlite"
    path.write_text("this is not a database, just text that is long enough " * 20)
    with pytest.raises(LedgerError, match="cannot open state file"):
        Ledger(path)


def test_one_run_at_a_time_per_state_file(tmp_path):
    state = tmp_path / "state.sqlite"
    with hold_lock(state):
        with pytest.raises(UsageError, match="another stenopod run"):
            with hold_lock(state):
                pass
    with hold_lock(state):  # released when the first run ended
        pass


def test_audio_seconds_done_and_estimated_left(tmp_path):
    with Ledger(tmp_path / "state.sqlite") as ledger:
        ledger.add_items(
            [
                Source("timed", "s", duration_s=60.0),
                Source("sized", "s", size_bytes=32_000),
                Source("unknown", "s"),
                Source("finished", "s", duration_s=999.0),
            ]
        )
        ledger.create_submission("t", ["finished"])
        ledger.finish_submission(
            "t", SubmissionState.FINISHED, [ItemOutcome("finished", True, duration_s=12.5)], max_attempts=3
        )
        assert ledger.audio_seconds(16_000, 300.0) == (12.5, 60.0 + 2.0 + 300.0)
