"""The backlog's memory: every item and every submission in one SQLite file.

The runner commits each state change here BEFORE acting on it (the token before POST /run, the job
id right after), so the client can be killed at any instant and the same command run again picks
up exactly where it stopped: nothing is submitted twice and nothing finished is redone.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stenopod.backlog.states import ItemState, SubmissionState

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    source TEXT NOT NULL,
    audio TEXT,
    local_path TEXT,
    size_bytes INTEGER,
    duration_s REAL,
    title TEXT,
    identity TEXT,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    token TEXT,
    job_id TEXT,
    error_code TEXT,
    error_message TEXT,
    outputs TEXT,
    model TEXT,
    language TEXT,
    result_duration_s REAL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS items_state ON items(state);
CREATE TABLE IF NOT EXISTS submissions (
    token TEXT PRIMARY KEY,
    job_id TEXT,
    state TEXT NOT NULL,
    item_ids TEXT NOT NULL,
    execution_ms INTEGER,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS submissions_state ON submissions(state);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


class LedgerError(Exception):
    """The state file cannot be opened or is not a stenopod ledger."""


@dataclass
class ItemRecord:
    id: str
    source: str
    audio: str | None
    local_path: str | None
    size_bytes: int | None
    duration_s: float | None
    title: str | None
    state: ItemState
    attempts: int
    token: str | None
    job_id: str | None
    error_code: str | None
    error_message: str | None
    outputs: dict[str, str] = field(default_factory=dict)
    model: str | None = None
    language: str | None = None
    result_duration_s: float | None = None
    identity: str | None = None  # NULL in state files from before readable names


@dataclass
class SubmissionRecord:
    token: str
    job_id: str | None
    state: SubmissionState
    item_ids: list[str]
    execution_ms: int | None
    created_at: float


@dataclass
class ItemOutcome:
    """What one attempt of one item came to, as the runner read it from the results."""

    id: str
    ok: bool
    outputs: dict[str, str] = field(default_factory=dict)
    model: str | None = None
    language: str | None = None
    duration_s: float | None = None
    error_code: str | None = None
    error_message: str | None = None
    # A permanent error (not_audio, too_large...) is not worth another attempt.
    retryable: bool = True
    # A success's item result as the worker answered it (an inline run writes the files from it).
    result: dict[str, Any] | None = field(default=None, repr=False)


@dataclass
class Counts:
    pending: int = 0
    submitted: int = 0
    done: int = 0
    failed: int = 0

    @property
    def total(self) -> int:
        return self.pending + self.submitted + self.done + self.failed


def _item(row: sqlite3.Row) -> ItemRecord:
    return ItemRecord(
        id=row["id"],
        source=row["source"],
        audio=row["audio"],
        local_path=row["local_path"],
        size_bytes=row["size_bytes"],
        duration_s=row["duration_s"],
        title=row["title"],
        state=ItemState(row["state"]),
        attempts=row["attempts"],
        token=row["token"],
        job_id=row["job_id"],
        error_code=row["error_code"],
        error_message=row["error_message"],
        outputs=json.loads(row["outputs"]) if row["outputs"] else {},
        model=row["model"],
        language=row["language"],
        result_duration_s=row["result_duration_s"],
        identity=row["identity"],
    )


def _submission(row: sqlite3.Row) -> SubmissionRecord:
    return SubmissionRecord(
        token=row["token"],
        job_id=row["job_id"],
        state=SubmissionState(row["state"]),
        item_ids=json.loads(row["item_ids"]),
        execution_ms=row["execution_ms"],
        created_at=row["created_at"],
    )


class Ledger:
    """One SQLite file; one writer (the runner). Methods commit before they return."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we open transactions ourselves, so nothing is left uncommitted.
            self._db = sqlite3.connect(str(self.path), isolation_level=None, timeout=30.0)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            if "identity" not in {row["name"] for row in self._db.execute("PRAGMA table_info(items)")}:
                self._db.execute("ALTER TABLE items ADD COLUMN identity TEXT")  # an earlier version's file
        except (sqlite3.Error, OSError) as error:
            raise LedgerError(f"cannot open state file {self.path}: {error}") from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- meta ---------------------------------------------------------------------------------

    def set_meta(self, key: str, value: Any) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (key, json.dumps(value)),
            )

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return json.loads(row["value"]) if row else default

    # -- items --------------------------------------------------------------------------------

    def add_items(self, items: Iterable[Any]) -> int:
        """Insert new items (objects with SourceItem's fields); known ids are left as they are."""
        now = time.time()
        added = 0
        with self._transaction() as db:
            position = db.execute("SELECT COALESCE(MAX(position), -1) + 1 FROM items").fetchone()[0]
            for item in items:
                cursor = db.execute(
                    "INSERT OR IGNORE INTO items(id, position, source, audio, local_path, size_bytes,"
                    " duration_s, title, identity, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        item.id,
                        position,
                        item.source,
                        item.audio,
                        str(item.local_path) if item.local_path else None,
                        item.size_bytes,
                        item.duration_s,
                        getattr(item, "title", None),
                        getattr(item, "identity", None),
                        now,
                    ),
                )
                if cursor.rowcount:
                    added += 1
                    position += 1
        return added

    def items(self, state: ItemState | None = None) -> list[ItemRecord]:
        if state is None:
            rows = self._db.execute("SELECT * FROM items ORDER BY position").fetchall()
        else:
            rows = self._db.execute(
                "SELECT * FROM items WHERE state=? ORDER BY position", (ItemState(state).value,)
            ).fetchall()
        return [_item(row) for row in rows]

    def item(self, item_id: str) -> ItemRecord | None:
        row = self._db.execute("SELECT * FROM items WHERE id=?", (item_id,)).fetchone()
        return _item(row) if row else None

    def counts(self) -> Counts:
        counts = Counts()
        for row in self._db.execute("SELECT state, COUNT(*) AS n FROM items GROUP BY state"):
            if hasattr(counts, row["state"]):
                setattr(counts, row["state"], row["n"])
        return counts

    def audio_seconds(self, bytes_per_second: float, unknown_s: float) -> tuple[float, float]:
        """(audio seconds done, estimated audio seconds left), summed by SQLite: cheap for huge backlogs.

        The estimate matches packing.estimated_seconds: the duration, else the size, else unknown_s.
        """
        row = self._db.execute(
            "SELECT"
            " COALESCE(SUM(CASE WHEN state='done' THEN COALESCE(result_duration_s, 0) ELSE 0 END), 0),"
            " COALESCE(SUM(CASE WHEN state IN ('done', 'failed') THEN 0"
            "   WHEN duration_s > 0 THEN duration_s"
            "   WHEN size_bytes > 0 THEN size_bytes / ?"
            "   ELSE ? END), 0)"
            " FROM items",
            (float(bytes_per_second), float(unknown_s)),
        ).fetchone()
        return float(row[0]), float(row[1])

    def reset_failed(self, done_ids: Iterable[str] | None = None) -> int:
        """Give every failed item a fresh set of attempts (stenopod retry); with done_ids, those done
        items instead (a rerun asks for formats they were not transcribed to)."""
        sql = (
            "UPDATE items SET state='pending', attempts=0, token=NULL, job_id=NULL, error_code=NULL,"
            " error_message=NULL, updated_at=? WHERE "
        )
        with self._transaction() as db:
            if done_ids is None:
                return db.execute(sql + "state='failed'", (time.time(),)).rowcount
            return sum(db.execute(sql + "state='done' AND id=?", (time.time(), i)).rowcount for i in done_ids)

    # -- submissions --------------------------------------------------------------------------

    def create_submission(self, token: str, item_ids: list[str]) -> None:
        """Record the token and claim its items, before /run is sent."""
        now = time.time()
        with self._transaction() as db:
            db.execute(
                "INSERT INTO submissions(token, job_id, state, item_ids, created_at, updated_at)"
                " VALUES (?, NULL, ?, ?, ?, ?)",
                (token, SubmissionState.CREATED.value, json.dumps(item_ids), now, now),
            )
            db.executemany(
                "UPDATE items SET state='submitted', token=?, job_id=NULL, updated_at=? WHERE id=?",
                [(token, now, item_id) for item_id in item_ids],
            )

    def set_job_id(self, token: str, job_id: str) -> None:
        now = time.time()
        with self._transaction() as db:
            db.execute(
                "UPDATE submissions SET job_id=?, state=?, updated_at=? WHERE token=?",
                (job_id, SubmissionState.RUNNING.value, now, token),
            )
            db.execute("UPDATE items SET job_id=?, updated_at=? WHERE token=?", (job_id, now, token))

    def submission(self, token: str) -> SubmissionRecord | None:
        row = self._db.execute("SELECT * FROM submissions WHERE token=?", (token,)).fetchone()
        return _submission(row) if row else None

    def open_submissions(self) -> list[SubmissionRecord]:
        """Submissions whose items still wait for them: created or submitted."""
        rows = self._db.execute(
            "SELECT * FROM submissions WHERE state IN (?, ?) ORDER BY created_at",
            (SubmissionState.CREATED.value, SubmissionState.RUNNING.value),
        ).fetchall()
        return [_submission(row) for row in rows]

    def execution_ms_total(self) -> int:
        row = self._db.execute("SELECT COALESCE(SUM(execution_ms), 0) FROM submissions").fetchone()
        return int(row[0])

    def finish_submission(
        self,
        token: str,
        state: SubmissionState,
        outcomes: list[ItemOutcome],
        *,
        max_attempts: int,
        execution_ms: int | None = None,
        count_attempt: bool = True,
    ) -> None:
        """Close a submission and settle its items in one transaction.

        Items with an outcome become done, or pending again (attempts left, retryable), or failed.
        Items of the submission without an outcome go back to pending (a lost job is not their fault
        when count_attempt is False).
        """
        now = time.time()
        sub = self.submission(token)
        if sub is None:
            return
        by_id = {outcome.id: outcome for outcome in outcomes}
        with self._transaction() as db:
            db.execute(
                "UPDATE submissions SET state=?, execution_ms=COALESCE(?, execution_ms), updated_at=?"
                " WHERE token=?",
                (SubmissionState(state).value, execution_ms, now, token),
            )
            for item_id in sub.item_ids:
                row = db.execute("SELECT state, attempts, token FROM items WHERE id=?", (item_id,)).fetchone()
                # An item already settled elsewhere (or moved to a later submission) is left alone.
                if row is None or row["token"] != token or row["state"] != ItemState.SUBMITTED.value:
                    continue
                outcome = by_id.get(item_id)
                if outcome is not None and outcome.ok:
                    db.execute(
                        "UPDATE items SET state='done', attempts=attempts+1, outputs=?, model=?, language=?,"
                        " result_duration_s=?, error_code=NULL, error_message=NULL, updated_at=? WHERE id=?",
                        (
                            json.dumps(outcome.outputs),
                            outcome.model,
                            outcome.language,
                            outcome.duration_s,
                            now,
                            item_id,
                        ),
                    )
                    continue
                attempts = row["attempts"] + (1 if count_attempt else 0)
                retry = attempts < max_attempts and (outcome is None or outcome.retryable)
                db.execute(
                    "UPDATE items SET state=?, attempts=?, token=NULL, job_id=NULL, error_code=?,"
                    " error_message=?, updated_at=? WHERE id=?",
                    (
                        (ItemState.PENDING if retry else ItemState.FAILED).value,
                        attempts,
                        outcome.error_code if outcome else None,
                        outcome.error_message if outcome else None,
                        now,
                        item_id,
                    ),
                )
