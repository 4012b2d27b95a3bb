"""The worker's settings: read in one place, and a bad value stops the worker naming the variable."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from handler.settings import JobSettings, SettingsError, WorkerSettings

REPO = Path(__file__).resolve().parents[2]


def test_defaults_and_values_read_from_one_mapping() -> None:
    settings = WorkerSettings.from_env({})
    assert settings.jobs_at_once == 2 and settings.parent_pid is None
    assert settings.job == JobSettings() and settings.engines.models == ()
    settings = WorkerSettings.from_env(
        {
            "STENOPOD_JOBS_AT_ONCE": "1",
            "STENOPOD_CALLBACK_RETRIES": "0",
            "STENOPOD_MODELS": "tiny.en, parakeet",
            "STENOPOD_NEMO_DTYPE": "Float32",
            "STENOPOD_FETCH_TIMEOUT_S": "2.5",
        }
    )
    assert settings.jobs_at_once == 1 and settings.job.callback_retries == 0
    assert settings.engines.models == ("tiny.en", "parakeet")
    assert settings.engines.nemo.dtype == "float32" and settings.job.limits.timeout_s == 2.5
    # 0, as unset: the batch is picked from the free GPU memory.
    assert WorkerSettings.from_env({"STENOPOD_NEMO_BATCH_SIZE": "0"}).engines.nemo.batch_size is None


@pytest.mark.parametrize(
    ("name", "value", "why"),
    [
        ("STENOPOD_CALLBACK_RETRIES", "abc", "not an integer"),
        ("STENOPOD_JOBS_AT_ONCE", "0", "at least 1"),
        ("STENOPOD_FETCH_TIMEOUT_S", "soon", "not a number"),
        ("STENOPOD_ALLOW_LOCAL_OUTPUT", "maybe", "expected 1 or 0"),
        ("STENOPOD_NEMO_DTYPE", "fp8", "bfloat16 or float32"),
        ("STENOPOD_WHISPER_STREAMS", "0", "at least 1"),
    ],
)
def test_a_bad_value_names_the_variable(name: str, value: str, why: str) -> None:
    with pytest.raises(SettingsError, match=rf"^{name}=.*{why}"):
        WorkerSettings.from_env({name: value})


def test_the_worker_refuses_to_start_with_a_bad_value() -> None:
    env = dict(os.environ, STENOPOD_CALLBACK_RETRIES="abc", PYTHONPATH=str(REPO))
    done = subprocess.run(
        [sys.executable, "-m", "handler"], env=env, cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "STENOPOD_CALLBACK_RETRIES='abc': not an integer" in done.stderr
    assert "Traceback" not in done.stderr


def test_nothing_else_in_the_worker_reads_the_environment() -> None:
    # Writes of third-party defaults (HF_HUB_OFFLINE, RUNPOD_LOG_LEVEL) are not reads.
    reads = re.compile(r"os\.environ(?!\.setdefault)|os\.getenv")
    readers = sorted(
        str(path.relative_to(REPO))
        for path in (REPO / "handler").rglob("*.py")
        if reads.search(path.read_text(encoding="utf-8"))
    )
    assert readers == ["handler/settings.py"]


def test_a_job_runs_with_the_settings_it_was_given_not_the_environment_of_the_moment(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio
    import base64
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from handler.engines.registry import EngineRegistry, ModelSpec
    from handler.job import run_job

    posts: list[bytes] = []

    class Receiver(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            posts.append(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings = JobSettings.from_env({"STENOPOD_ALLOW_PRIVATE_URLS": "1", "STENOPOD_ALLOW_LOCAL_OUTPUT": "1"})
    # What the worker read at its start decides; a value that changed since (here one it would
    # refuse) is never read again by a job, its callback or its output store.
    monkeypatch.setenv("STENOPOD_ALLOW_PRIVATE_URLS", "yes")
    audio = base64.b64encode((data_dir / "jfk.flac").read_bytes()).decode()
    job = {
        "id": "settings-once",
        "input": {
            "audio": f"data:audio/flac;base64,{audio}",
            "output": str(tmp_path / "out"),
            "callback": {"url": f"http://127.0.0.1:{server.server_port}/hook", "secret": "s" * 32},
        },
    }
    try:
        answer = asyncio.run(
            run_job(job, EngineRegistry([ModelSpec("instant", "instant")]), settings=settings)
        )
    finally:
        server.shutdown()
        server.server_close()
    assert "error" not in answer, answer
    [item] = answer["items"]
    assert item["status"] == "ok" and item["error"] is None and item["outputs"]
    assert len(posts) == 1
