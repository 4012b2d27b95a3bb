"""kill -9 of the client mid-backlog, several times: the rerun finishes with each item transcribed once."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.backlog.conftest import fetches
from tests.support.servers import AudioHTTPServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

COPIES = 6


def _ledger_counts(state: Path) -> tuple[int, int]:
    """(items done, submissions in flight with a known job id), read as another process would."""
    if not state.exists():
        return 0, 0
    try:
        db = sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=10)
        try:
            done = db.execute("SELECT COUNT(*) FROM items WHERE state='done'").fetchone()[0]
            running = db.execute(
                "SELECT COUNT(*) FROM submissions WHERE state='submitted' AND job_id IS NOT NULL"
            ).fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:  # the tables may not exist yet
        return 0, 0
    return done, running


def test_sigkill_mid_backlog_then_rerun_transcribes_each_item_once(endpoint, data_dir, tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    names = [f"jfk-{n}.flac" if n % 2 else f"libri-{n}.wav" for n in range(COPIES)]
    for name in names:
        shutil.copyfile(
            data_dir / ("jfk.flac" if name.endswith(".flac") else "librispeech_1089-134686-0001.wav"),
            audio / name,
        )
    server = AudioHTTPServer(audio).start()
    try:
        manifest = tmp_path / "backlog.txt"
        manifest.write_text("".join(f"{server.url(name)}\n" for name in names))
        output, state = tmp_path / "out", tmp_path / "state.sqlite"
        command = [
            sys.executable, "-m", "stenopod.cli", "transcribe", str(manifest),
            "--endpoint", endpoint.base_url, "--output", str(output), "--state", str(state),
            "--formats", "txt,json", "--job-seconds", "1", "--max-in-flight", "2", "--no-progress",
        ]  # fmt: skip
        accepted_before = endpoint.stats()["jobs"]["accepted"]
        kills = 0
        for round_ in range(1, 4):
            client = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            # Kill while jobs are in flight, once a little more of the backlog is done each round.
            deadline = time.monotonic() + 300
            while client.poll() is None and time.monotonic() < deadline:
                done, running = _ledger_counts(state)
                if running and done >= round_ - 1:
                    break
                time.sleep(0.05)
            if client.poll() is None:
                os.kill(client.pid, signal.SIGKILL)
                kills += 1
            client.wait(timeout=60)
        assert kills >= 1

        final = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert final.returncode == 0, final.stderr

        for name in names:
            assert fetches(server, name) == 1, f"{name} was transcribed {fetches(server, name)} times"
        txts = sorted(output.glob("*.txt"))
        assert len(txts) == COPIES
        assert all(path.read_text().strip() for path in txts)
        assert len((output / "manifest.jsonl").read_text().splitlines()) == COPIES
        db = sqlite3.connect(state)
        assert (
            db.execute("SELECT COUNT(*) FROM items WHERE state='done' AND attempts=1").fetchone()[0] == COPIES
        )
        # Jobs that lost the race for a token answered duplicate_of; none transcribed.
        assert endpoint.stats()["jobs"]["accepted"] - accepted_before >= 1
    finally:
        server.stop()
