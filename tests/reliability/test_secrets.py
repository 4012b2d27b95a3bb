"""Secrets stay secret: unique values are planted and every output is searched for them.

Planted: an S3 secret key (AWS_SECRET_ACCESS_KEY of the worker and of the client, and a job's
s3Config), a RunPod API key (the endpoint's key, given to the client as RUNPOD_API_KEY) and a
callback secret (in the job input). Searched: worker answers and error messages, worker logs,
the stdout/stderr of `python -m handler --test_input` and of `stenopod transcribe`, the ledger's
SQLite files, manifest.jsonl and every object the run left in the bucket.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import numpy as np
import pytest
from stenopod.local import LocalEndpoint, run_in_thread
from stenopod.signing import verify

from handler.engines.instant import INSTANT_MODEL_ID
from handler.engines.registry import EngineRegistry, ModelSpec
from handler.job import run_job
from tests.support.servers import MotoS3, free_port

pytestmark = pytest.mark.timeout(240)

RUN = uuid.uuid4().hex[:12]
S3_SECRET = f"planted-s3-secret-{RUN}"
S3_ACCESS_KEY = f"PLANTEDACCESS{RUN.upper()}"  # an id, not a secret: presigned URLs carry it
RUNPOD_KEY = f"planted-runpod-key-{RUN}"
WRONG_RUNPOD_KEY = f"planted-wrong-key-{RUN}"
CALLBACK_SECRET = f"planted-callback-secret-{RUN}"
SECRETS = (S3_SECRET, RUNPOD_KEY, WRONG_RUNPOD_KEY, CALLBACK_SECRET)


def leaks(data: bytes | str) -> list[str]:
    """The planted secrets found in data (letters, digits and "-" only: URL-encoding cannot hide them)."""
    blob = data if isinstance(data, bytes) else data.encode("utf-8", "replace")
    return [secret for secret in SECRETS if secret.encode() in blob]


def tone_wav(path: Path, seconds: float = 0.5, hz: float = 440.0) -> Path:
    import wave

    t = np.arange(int(seconds * 16_000)) / 16_000
    samples = (0.3 * np.sin(2 * np.pi * hz * t) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        out.writeframes(samples.tobytes())
    return path


def instant_registry() -> EngineRegistry:
    """The registry with only the instant TEST DOUBLE engine: these tests are about messages."""
    return EngineRegistry([ModelSpec(INSTANT_MODEL_ID, "instant")])


class CallbackReceiver:
    """A real HTTP server on loopback that records the signed POSTs it gets."""

    def __init__(self) -> None:
        self.posts: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.posts.append((dict(self.headers.items()), body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.port = free_port()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# --- the worker --------------------------------------------------------------------------------------


def test_worker_answers_errors_and_logs_never_carry_a_secret(
    moto_s3: MotoS3,
    s3_bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET)
    monkeypatch.setenv("S3_ENDPOINT_URL", moto_s3.endpoint_url)
    monkeypatch.setenv("STENOPOD_ALLOW_PRIVATE_URLS", "1")
    monkeypatch.setenv("STENOPOD_CALLBACK_BACKOFF_S", "0.01")
    monkeypatch.setenv("STENOPOD_TMP_DIR", str(tmp_path))
    caplog.set_level(logging.DEBUG)
    audio = "data:audio/wav;base64," + base64.b64encode(tone_wav(tmp_path / "t.wav").read_bytes()).decode()
    closed = f"http://127.0.0.1:{free_port()}/hook"
    callback = {"url": closed, "secret": CALLBACK_SECRET}
    s3_config = {"accessId": S3_ACCESS_KEY, "accessSecret": S3_SECRET, "endpointUrl": moto_s3.endpoint_url}
    jobs: list[dict[str, Any]] = [
        # invalid input next to a valid secret: the refusal must not quote the input back
        {"input": {"audio": audio, "callback": callback, "speed": 2}},
        {"input": {"audio": audio, "callback": {"url": closed, "secret": CALLBACK_SECRET[:10]}}},
        # storage failures with the secret in the environment and in s3Config
        {"input": {"audio": audio, "output": "s3://no-such-bucket-secrets/x/", "callback": callback}},
        {"input": {"audio": audio, "output": "s3://no-such-bucket-secrets/x/"}, "s3Config": s3_config},
        {"input": {"audio": f"s3://{s3_bucket}/missing.wav"}, "s3Config": s3_config},
        # success with a callback that cannot be delivered (callback_failed, item still ok)
        {"input": {"audio": audio, "output": f"s3://{s3_bucket}/ok/", "callback": callback}, "s3Config": s3_config},
    ]  # fmt: skip
    registry = instant_registry()
    answers = [asyncio.run(run_job({"id": f"secret-{n}", **job}, registry)) for n, job in enumerate(jobs)]
    codes = []
    for answer in answers:
        text = json.dumps(answer)
        assert leaks(text) == [], text
        codes.append("error" if "error" in answer else answer["items"][0]["status"])
    assert codes == ["error", "error", "error", "error", "error", "ok"]
    assert answers[-1]["items"][0]["error"]["code"] == "callback_failed"
    assert leaks(caplog.text) == []
    # The successful job really used the credentials: its transcripts are in the bucket.
    assert "ok/audio.json" in {
        o["Key"] for o in moto_s3.client().list_objects_v2(Bucket=s3_bucket)["Contents"]
    }


def test_worker_process_output_carries_no_secret(moto_s3: MotoS3, s3_bucket: str, tmp_path: Path) -> None:
    audio = "data:audio/wav;base64," + base64.b64encode(tone_wav(tmp_path / "t.wav").read_bytes()).decode()
    job = {
        "input": {
            "audio": audio,
            "id": "cli",
            "model": INSTANT_MODEL_ID,
            "output": f"s3://{s3_bucket}/cli/",
            "callback": {"url": f"http://127.0.0.1:{free_port()}/hook", "secret": CALLBACK_SECRET},
        }
    }
    env = dict(
        os.environ,
        AWS_ACCESS_KEY_ID=S3_ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=S3_SECRET,
        S3_ENDPOINT_URL=moto_s3.endpoint_url,
        STENOPOD_ENABLE_TEST_ENGINE="1",
        STENOPOD_ALLOW_PRIVATE_URLS="1",
        STENOPOD_CALLBACK_BACKOFF_S="0.01",
    )
    done = subprocess.run(
        [sys.executable, "-m", "handler", "--test_input", json.dumps(job)],
        capture_output=True,
        env=env,
        timeout=180,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output.decode(errors="replace")[-3000:]
    assert b"callback_failed" in output  # the answer was printed, so the search covered it
    assert leaks(output) == []
    keys = {o["Key"] for o in moto_s3.client().list_objects_v2(Bucket=s3_bucket)["Contents"]}
    assert "cli/cli.txt" in keys


def test_callback_signatures_expire_outside_the_replay_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = CallbackReceiver()
    monkeypatch.setenv("STENOPOD_ALLOW_PRIVATE_URLS", "1")
    monkeypatch.setenv("STENOPOD_TMP_DIR", str(tmp_path))
    audio = "data:audio/wav;base64," + base64.b64encode(tone_wav(tmp_path / "t.wav").read_bytes()).decode()
    try:
        job = {
            "id": "signed",
            "input": {
                "audio": audio,
                "callback": {"url": f"http://127.0.0.1:{receiver.port}/hook", "secret": CALLBACK_SECRET},
            },
        }
        answer = asyncio.run(run_job(job, instant_registry()))
    finally:
        receiver.stop()
    assert answer["items"][0]["status"] == "ok"
    ((headers, body),) = receiver.posts
    assert leaks(body) == [] and leaks(json.dumps(headers)) == []
    assert verify(CALLBACK_SECRET, headers, body)
    assert not verify("another-secret-of-16+", headers, body)
    signed_at = int(headers["X-Stenopod-Timestamp"])
    assert verify(CALLBACK_SECRET, headers, body, now=signed_at + 299)
    assert not verify(CALLBACK_SECRET, headers, body, now=signed_at + 301)  # replayed later
    assert not verify(CALLBACK_SECRET, headers, body, now=signed_at - 301)  # from the future
    assert not verify(CALLBACK_SECRET, headers, body + b" ", now=signed_at)  # tampered


# --- the local endpoint and the client ------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed_endpoint(moto_s3: MotoS3, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEndpoint]:
    """A local endpoint that demands RUNPOD_KEY; its worker holds the planted S3 secret."""
    env = {
        "RUNPOD_PING_INTERVAL": "1000",
        "STENOPOD_ENABLE_TEST_ENGINE": "1",
        "S3_ENDPOINT_URL": moto_s3.endpoint_url,
        "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET,
    }
    with run_in_thread(
        workers=1,
        api_key=RUNPOD_KEY,
        allow_private_urls=True,
        env=env,
        log_dir=tmp_path_factory.mktemp("secret-worker-logs"),
    ) as endpoint:
        yield endpoint


def test_endpoint_refuses_requests_without_the_key_and_public_binds_without_one(
    keyed_endpoint: LocalEndpoint,
) -> None:
    health = f"{keyed_endpoint.url}/health"
    assert httpx.get(health, timeout=10).status_code == 401
    refused = httpx.get(health, headers={"Authorization": f"Bearer {WRONG_RUNPOD_KEY}"}, timeout=10)
    assert refused.status_code == 401 and leaks(refused.text) == []
    assert httpx.get(health, headers={"Authorization": f"Bearer {RUNPOD_KEY}"}, timeout=10).status_code == 200
    with pytest.raises(ValueError, match="API key"):
        LocalEndpoint(host="0.0.0.0")


def _transcribe(
    endpoint: LocalEndpoint, moto_s3: MotoS3, args: list[str], key: str
) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        RUNPOD_API_KEY=key,
        AWS_ACCESS_KEY_ID=S3_ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=S3_SECRET,
        S3_ENDPOINT_URL=moto_s3.endpoint_url,
    )
    command = [sys.executable, "-m", "stenopod.cli", "transcribe", *args, "--endpoint", endpoint.base_url]
    command += ["--model", INSTANT_MODEL_ID, "--formats", "json,txt", "--no-progress"]
    return subprocess.run(command, capture_output=True, env=env, timeout=180)


def _presign_expiries(endpoint: LocalEndpoint, state: Path) -> set[str]:
    """X-Amz-Expires of every audio URL the client sent, read from the endpoint's stored job inputs."""
    db = sqlite3.connect(state)
    try:
        job_ids = [row[0] for row in db.execute("SELECT job_id FROM submissions WHERE job_id IS NOT NULL")]
    finally:
        db.close()
    expiries = set()
    for job_id in job_ids:
        job = endpoint.store.get(job_id)
        assert job is not None, job_id
        for item in job.input["items"]:
            query = parse_qs(urlsplit(item["audio"]).query)
            assert S3_SECRET not in item["audio"]
            expiries.update(query["X-Amz-Expires"])
    return expiries


def test_a_backlog_run_leaves_no_secret_anywhere_and_presigned_urls_expire(
    keyed_endpoint: LocalEndpoint, moto_s3: MotoS3, s3_bucket: str, tmp_path: Path
) -> None:
    audio = tmp_path / "audio"
    audio.mkdir()
    for n in range(3):
        tone_wav(audio / f"clip-{n}.wav", hz=300.0 + 100 * n)
    state = tmp_path / "state.sqlite"
    run = _transcribe(
        keyed_endpoint,
        moto_s3,
        [str(audio), "--output", f"s3://{s3_bucket}/run/", "--state", str(state)],
        RUNPOD_KEY,
    )
    assert run.returncode == 0, run.stderr.decode(errors="replace")
    assert b"3 of 3 items transcribed" in run.stdout
    assert _presign_expiries(keyed_endpoint, state) == {str(24 * 3600)}  # the default: 24 h

    # Configurable: a second backlog asks for 15 minutes.
    state2 = tmp_path / "state2.sqlite"
    args = [
        str(audio),
        "--output",
        f"s3://{s3_bucket}/run2/",
        "--state",
        str(state2),
        "--presign-expiry",
        "900",
    ]
    run2 = _transcribe(keyed_endpoint, moto_s3, args, RUNPOD_KEY)
    assert run2.returncode == 0, run2.stderr.decode(errors="replace")
    assert _presign_expiries(keyed_endpoint, state2) == {"900"}

    # A wrong key is refused, and the refusal does not echo it.
    state3 = tmp_path / "state3.sqlite"
    args = [str(audio), "--output", f"s3://{s3_bucket}/run3/", "--state", str(state3)]
    refused = _transcribe(keyed_endpoint, moto_s3, args, WRONG_RUNPOD_KEY)
    assert refused.returncode != 0
    assert b"401" in refused.stderr or b"nauthori" in refused.stderr, refused.stderr

    searched: dict[str, bytes] = {}
    for n, done in enumerate((run, run2, refused)):
        searched[f"cli-{n}-stdout"] = done.stdout
        searched[f"cli-{n}-stderr"] = done.stderr
    for path in tmp_path.glob("state*.sqlite*"):  # the ledger, its WAL and shared-memory files
        searched[path.name] = path.read_bytes()
    client = moto_s3.client()
    for entry in client.list_objects_v2(Bucket=s3_bucket).get("Contents", []):
        searched[entry["Key"]] = client.get_object(Bucket=s3_bucket, Key=entry["Key"])["Body"].read()
    assert {"run/manifest.jsonl", "run2/manifest.jsonl"} <= set(searched)
    assert keyed_endpoint.log_dir is not None
    logs = sorted(keyed_endpoint.log_dir.glob("*.log"))
    assert logs, "the worker wrote no log"
    for path in logs:
        searched[path.name] = path.read_bytes()
    found = {name: leaks(data) for name, data in searched.items() if leaks(data)}
    assert found == {}
