"""Faults around one shared real worker; the backlog must lose nothing.

(a) the object store fails during upload (resets, 500s, slowness) behind a flaky proxy;
(c) the webhook listener is down, so polling must take over;
(d) the client is SIGKILLed 20 times over one backlog.
The worker is the real handler running the instant TEST DOUBLE engine (STENOPOD_ENABLE_TEST_ENGINE=1),
so these tests exercise queueing, storage and recovery, not speech recognition. (b) a 429/503 storm
from the endpoint and (e) a worker killed mid-job, each on its own endpoint, are in
test_faults_endpoint.py.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from stenopod.backlog.loop import BacklogRunner
from stenopod.local import LocalEndpoint, run_in_thread
from stenopod.storage import S3Credentials

from bench.figures import record
from handler.engines.instant import INSTANT_MODEL_ID
from tests.reliability.fault_rig import (
    FORMATS,
    check_done_means_stored,
    local_options,
    manifest_lines,
    slow_file,
    tone_wav,
    write_manifest,
)
from tests.reliability.flaky_proxy import FlakyS3Proxy
from tests.support.servers import AudioHTTPServer, MotoS3, free_port

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def proxy(moto_s3: MotoS3) -> Iterator[FlakyS3Proxy]:
    server = FlakyS3Proxy(moto_s3.port).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def endpoint(proxy: FlakyS3Proxy, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEndpoint]:
    """One real worker (instant test engine) whose S3 traffic goes through the flaky proxy."""
    env = {
        "RUNPOD_PING_INTERVAL": "1000",
        "STENOPOD_ENABLE_TEST_ENGINE": "1",
        "S3_ENDPOINT_URL": proxy.url,
    }
    with run_in_thread(
        workers=1,
        allow_private_urls=True,
        env=env,
        log_dir=tmp_path_factory.mktemp("fault-worker-logs"),
        webhook_retry_delay_s=0.2,
    ) as local:
        yield local


# --- (a) object store faults ---------------------------------------------------------------------------


def test_store_faults_during_upload_are_retried_and_done_means_stored(
    endpoint: LocalEndpoint,
    proxy: FlakyS3Proxy,
    audio: AudioHTTPServer,
    moto_s3: MotoS3,
    s3_bucket: str,
    tmp_path: Path,
) -> None:
    items = [(f"up-{n}", audio.url(f"clip-{n}.wav")) for n in range(6)]
    manifest = write_manifest(tmp_path / "backlog.jsonl", items)
    # Every other PUT misbehaves: each write meets at most one fault in a row, which retries absorb.
    faults = ["reset", "pass", "500", "pass", "slow", "pass", "reset-after", "pass"] * 4
    proxy.script(faults)
    credentials = S3Credentials(endpoint_url=moto_s3.endpoint_url)  # the client reads S3 directly
    options = local_options(manifest, f"s3://{s3_bucket}/a/", endpoint)
    try:
        report = asyncio.run(
            BacklogRunner(options, state=tmp_path / "state.sqlite", s3_credentials=credentials).run()
        )
        injected = dict(proxy.injected)
    finally:
        proxy.clear()
    assert (report.done, report.failed) == (6, 0), [
        (i.id, i.error_code, i.error_message) for i in report.items
    ]
    assert (
        injected.get("reset", 0) >= 2 and injected.get("500", 0) >= 2 and injected.get("reset-after", 0) >= 1
    )
    lines, keys = check_done_means_stored(moto_s3, s3_bucket, "a/")
    assert [line["status"] for line in lines] == ["ok"] * 6
    assert {f"a/up-{n}.{fmt}" for n in range(6) for fmt in FORMATS} <= keys
    record("store_faults_retried", {"items": 6, "faults_injected": injected, "done": report.done})


def test_store_retries_exhausted_mean_storage_failed_not_done(
    endpoint: LocalEndpoint,
    proxy: FlakyS3Proxy,
    audio: AudioHTTPServer,
    moto_s3: MotoS3,
    s3_bucket: str,
    tmp_path: Path,
) -> None:
    items = [(f"ex-{n}", audio.url(f"clip-{10 + n}.wav")) for n in range(3)]
    manifest = write_manifest(tmp_path / "backlog.jsonl", items)
    # One format of one item can never be written: its json and txt land, its srt never does.
    proxy.always_fail.add(f"/{s3_bucket}/b/ex-1.srt")
    credentials = S3Credentials(endpoint_url=moto_s3.endpoint_url)
    options = local_options(manifest, f"s3://{s3_bucket}/b/", endpoint, max_attempts=1)
    try:
        report = asyncio.run(
            BacklogRunner(options, state=tmp_path / "state.sqlite", s3_credentials=credentials).run()
        )
    finally:
        proxy.clear()
    by_id = {item.id: item for item in report.items}
    assert by_id["ex-1"].state == "failed" and by_id["ex-1"].error_code == "storage_failed"
    assert by_id["ex-0"].state == by_id["ex-2"].state == "done"
    lines, keys = check_done_means_stored(moto_s3, s3_bucket, "b/")
    assert {line["id"]: line["status"] for line in lines} == {"ex-0": "ok", "ex-1": "error", "ex-2": "ok"}
    assert "b/ex-1.json" in keys and "b/ex-1.srt" not in keys  # half stored, and not called done
    record("store_retries_exhausted", {"items": 3, "storage_failed": 1, "done": report.done})


# --- (c) webhook listener down ---------------------------------------------------------------------------


def test_a_webhook_listener_that_is_down_leaves_polling_to_finish(
    endpoint: LocalEndpoint, audio: AudioHTTPServer, tmp_path: Path
) -> None:
    items = [(f"hook-{n}", audio.url(f"clip-{20 + n}.wav")) for n in range(4)]
    manifest = write_manifest(tmp_path / "backlog.jsonl", items)
    failed_before = endpoint.stats()["webhooks"]["failed"]
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens here: every webhook POST fails
    options = local_options(
        manifest,
        str(tmp_path / "out"),
        endpoint,
        webhook_listen="127.0.0.1:0",
        webhook_url=closed,
        webhook_poll_s=0.5,
    )
    report = asyncio.run(BacklogRunner(options, state=tmp_path / "state.sqlite").run())
    assert (report.done, report.failed) == (4, 0)
    deadline = time.monotonic() + 30
    while endpoint.stats()["webhooks"]["failed"] == failed_before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert endpoint.stats()["webhooks"]["failed"] > failed_before  # the webhooks really were lost
    record("webhook_down", {"items": 4, "done": report.done})


# --- (d) SIGKILL of the client, 20 times ---------------------------------------------------------------


KILLS = 20
KILL_ITEMS = 40


def _ledger_state(state: Path) -> tuple[int, int, int]:
    """(items done, open submissions, open submissions with a job id), read as another process would."""
    if not state.exists():
        return 0, 0, 0
    try:
        db = sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=5)
        try:
            done = db.execute("SELECT COUNT(*) FROM items WHERE state='done'").fetchone()[0]
            opened = db.execute("SELECT COUNT(*) FROM submissions WHERE state='submitted'").fetchone()[0]
            running = db.execute(
                "SELECT COUNT(*) FROM submissions WHERE state='submitted' AND job_id IS NOT NULL"
            ).fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:  # not created yet
        return 0, 0, 0
    return done, opened, running


@pytest.mark.timeout(420)
def test_twenty_sigkills_then_every_item_is_transcribed_exactly_once(
    endpoint: LocalEndpoint, tmp_path: Path
) -> None:
    root = tmp_path / "audio"
    root.mkdir()
    server = AudioHTTPServer(root).start()
    names = [f"kill-{n}.wav" for n in range(KILL_ITEMS)]
    for n, name in enumerate(names):
        tone_wav(root / name, hz=300.0 + 7 * n)
        server.routes[f"/{name}"] = slow_file(root, name, 0.25)
    try:
        manifest = write_manifest(
            tmp_path / "backlog.jsonl", [(name[:-4], server.url(name)) for name in names]
        )
        output, state = tmp_path / "out", tmp_path / "state.sqlite"
        command = [
            sys.executable, "-m", "stenopod.cli", "transcribe", str(manifest),
            "--endpoint", endpoint.base_url, "--model", INSTANT_MODEL_ID, "--output", str(output),
            "--state", str(state), "--formats", "json,txt", "--job-seconds", "1", "--max-in-flight", "2",
            "--no-progress",
        ]  # fmt: skip
        rng = random.Random(20)
        kills, rounds = 0, 0
        while kills < KILLS and rounds < 3 * KILLS:
            rounds += 1
            client = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            # A third of the kills land as soon as a submission is recorded (maybe before its job id),
            # the rest while a job is in flight, after a random pause.
            early = rng.random() < 1 / 3
            pause = rng.uniform(0.0, 0.5)
            deadline = time.monotonic() + 60
            while client.poll() is None and time.monotonic() < deadline:
                _, opened, running = _ledger_state(state)
                if (early and opened) or (not early and running):
                    break
                time.sleep(0.01)
            if not early:
                time.sleep(pause)
            if client.poll() is None:
                os.kill(client.pid, signal.SIGKILL)
                kills += 1
            client.wait(timeout=30)
            if client.returncode == 0:
                break  # the backlog finished before this round's kill
        assert kills == KILLS, f"only {kills} kills landed before the backlog finished"

        final = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert final.returncode == 0, final.stderr
    finally:
        server.stop()

    ids = [name[:-4] for name in names]
    fetched = {item_id: server.requests.count(f"/{item_id}.wav") for item_id in ids}
    completed = endpoint.stats()["items_completed"]
    assert {i: fetched[i] for i in ids if fetched[i] != 1} == {}, (
        "fetched (transcribed) more or less than once"
    )
    assert {i: completed.get(i, 0) for i in ids if completed.get(i, 0) != 1} == {}
    db = sqlite3.connect(state)
    try:
        states = dict(db.execute("SELECT state, COUNT(*) FROM items GROUP BY state").fetchall())
        open_subs = db.execute("SELECT COUNT(*) FROM submissions WHERE state='submitted'").fetchone()[0]
        done_without_job = db.execute(
            "SELECT COUNT(*) FROM items WHERE state='done' AND job_id IS NULL"
        ).fetchone()[0]
        attempts = dict(db.execute("SELECT attempts, COUNT(*) FROM items GROUP BY attempts").fetchall())
    finally:
        db.close()
    assert states == {"done": KILL_ITEMS} and open_subs == 0 and done_without_job == 0
    lines = manifest_lines((output / "manifest.jsonl").read_bytes())
    assert sorted(line["id"] for line in lines) == sorted(ids) and {line["status"] for line in lines} == {
        "ok"
    }
    assert len(list(output.glob("*.txt"))) == len(list(output.glob("*.json"))) == KILL_ITEMS
    record(
        "sigkill",
        {
            "items": KILL_ITEMS,
            "kills": kills,
            "rounds": rounds,
            "transcribed_once": KILL_ITEMS,
            "attempts": attempts,
        },
    )
