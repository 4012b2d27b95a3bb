"""The bad-input catalogue: one table of hostile or broken jobs, each with the error code it must get.

Every case runs through run_job with the real development registry (tiny.en, loaded once for the
module), against real servers on loopback: an HTTP server with scripted misbehaviour and moto's S3
with IAM enforcement switched on for the credential cases. After the table the same registry must
still transcribe jfk.flac, the worker's temp root must be empty and no answer may carry a traceback.

The table itself is in catalogue_cases.py, the servers' files and routes in catalogue_content.py.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from stenopod.schema import ErrorCode, JobError

from bench.figures import record
from handler import netguard
from handler.engines.registry import EngineRegistry, registry_from_env
from handler.job import run_job
from tests.reliability.catalogue_cases import (
    CASES,
    OK_EMPTY,
    OK_PARTIAL,
    SECRET_FOR_BAD_CREDENTIALS,
    URL,
    Case,
    World,
)
from tests.reliability.catalogue_content import routes, write_content
from tests.support.servers import AudioHTTPServer, MotoS3

pytestmark = pytest.mark.timeout(300)


# --- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry() -> EngineRegistry:
    """The real development registry (tiny.en), loaded once: every case runs on the same worker."""
    loaded = registry_from_env()
    assert loaded.available() == ["tiny.en"], loaded.available()
    loaded.load_all()
    return loaded


@pytest.fixture(scope="module")
def world(moto_s3: MotoS3, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("catalogue-content")
    write_content(root, data_dir)
    server = AudioHTTPServer(root).start()
    server.routes.update(routes(server))
    bucket = f"catalogue-{uuid.uuid4().hex[:10]}"
    moto_s3.client().create_bucket(Bucket=bucket)
    iam = boto3.client(
        "iam",
        endpoint_url=moto_s3.endpoint_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    user = f"writer-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
            {"Effect": "Deny", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{bucket}/denied/*"},
        ],
    }
    iam.put_user_policy(UserName=user, PolicyName="no-writes-under-denied", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    yield World(server, moto_s3, bucket, key["AccessKeyId"], key["SecretAccessKey"])
    server.stop()


@pytest.fixture(scope="module")
def worker_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("worker-tmp")


@pytest.fixture(scope="module")
def outcomes() -> dict[str, tuple[str, str]]:
    """case name -> (code it got, the answer as JSON), filled as the table runs."""
    return {}


def outcome_of(answer: dict[str, Any]) -> str:
    """The case's result in the table's terms: the first item's error code, ok-empty or ok."""
    if "error" in answer:
        return JobError.from_runpod_error(answer["error"]).code.value
    item = answer["items"][0]
    if item["status"] == "error":
        return item["error"]["code"]
    return OK_EMPTY if not item["text"] else OK_PARTIAL


# --- the table -----------------------------------------------------------------------------------------


def test_the_catalogue_has_at_least_40_distinct_cases() -> None:
    names = [case.name for case in CASES]
    assert len(names) == len(set(names))
    assert len(CASES) >= 40
    assert {case.expect for case in CASES} - {OK_EMPTY, OK_PARTIAL} <= {code.value for code in ErrorCode}


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input(
    case: Case,
    registry: EngineRegistry,
    world: World,
    worker_tmp: Path,
    outcomes: dict[str, tuple[str, str]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from moto.core.authorization import enable_iam_authentication

    for name in ("STENOPOD_ALLOW_PRIVATE_URLS", "STENOPOD_ALLOW_LOCAL_OUTPUT", "STENOPOD_MAX_AUDIO_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    env = {
        "STENOPOD_TMP_DIR": str(worker_tmp),
        "STENOPOD_FETCH_RETRIES": "0",
        "STENOPOD_FETCH_BACKOFF_S": "0.01",
        "STENOPOD_FETCH_TIMEOUT_S": "5",
        "S3_ENDPOINT_URL": world.moto.endpoint_url,
        **case.env,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if case.policy_double:
        # TEST DOUBLE of the address policy: no public host is reachable from a test, so it plays
        # "127.0.0.1 is public" for the first hop; every other address keeps the real verdict.
        real_policy = netguard.is_forbidden_address
        monkeypatch.setattr(
            netguard,
            "is_forbidden_address",
            lambda address: str(address) != "127.0.0.1" and real_policy(address),
        )
    job = {"id": f"catalogue-{case.name}", **case.job(world)}
    started = time.monotonic()
    if case.iam:
        with enable_iam_authentication():
            answer = asyncio.run(run_job(job, registry))
    else:
        answer = asyncio.run(run_job(job, registry))
    elapsed = time.monotonic() - started
    text = json.dumps(answer)
    got = outcome_of(answer)
    outcomes[case.name] = (got, text)
    assert got == case.expect, text[:2000]
    assert "Traceback" not in text
    tracebacks = [record.getMessage() for record in caplog.records if record.exc_info]
    assert not tracebacks, f"the worker logged a traceback: {tracebacks}"
    assert SECRET_FOR_BAD_CREDENTIALS not in text and world.writer_secret not in text
    if got == "invalid_input":
        error = JobError.from_runpod_error(answer["error"])
        # Refused by the schema: the field's path; refused while fetching (data: URIs): "audio:".
        assert error.fields or "audio:" in error.message, "an invalid_input answer names the field"
    assert elapsed < 60, f"{case.name} took {elapsed:.1f} s: the worker must not hang"
    assert list(worker_tmp.iterdir()) == [], "temp files left behind"


def test_after_the_table_the_same_worker_still_transcribes(
    registry: EngineRegistry,
    world: World,
    worker_tmp: Path,
    outcomes: dict[str, tuple[str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if len(outcomes) != len(CASES):
        pytest.skip("runs after the whole table (run the module, not a selection)")
    monkeypatch.setenv("STENOPOD_ALLOW_PRIVATE_URLS", "1")
    monkeypatch.setenv("STENOPOD_TMP_DIR", str(worker_tmp))
    answer = asyncio.run(run_job({"id": "after", "input": {"audio": world.url("jfk.flac")}}, registry))
    (item,) = answer["items"]
    assert item["status"] == "ok"
    assert "ask not what your country can do for you" in item["text"].lower()
    assert list(worker_tmp.iterdir()) == []
    assert not any("Traceback" in text for _, text in outcomes.values())
    # Refused ids never became object keys: nothing was written anywhere in the bucket.
    listing = world.moto.client().list_objects_v2(Bucket=world.bucket)
    assert listing.get("KeyCount", 0) == 0, [entry["Key"] for entry in listing.get("Contents", [])]
    by_code: dict[str, int] = {}
    for got, _ in outcomes.values():
        by_code[got] = by_code.get(got, 0) + 1
    record(
        "catalogue",
        {
            "cases": len(CASES),
            "passed": sum(1 for case in CASES if outcomes[case.name][0] == case.expect),
            "by_code": dict(sorted(by_code.items())),
            "cases_by_name": {case.name: case.expect for case in CASES},
        },
    )
    print(f"bad-input catalogue: {len(CASES)} cases, by code: {by_code}")


def test_a_refused_local_output_names_the_switch_that_allows_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # The same refusal answers `python -m handler --test_input` (RunPod's local test mode is left
    # refusing, so it shows what the job would get on RunPod): the message says how to allow it.
    monkeypatch.delenv("STENOPOD_ALLOW_LOCAL_OUTPUT", raising=False)
    job = {"id": "local-output", "input": {"audio": URL, "output": "/tmp/transcripts"}}
    answer = asyncio.run(run_job(job, EngineRegistry([])))
    error = JobError.from_runpod_error(answer["error"])
    assert error.code == ErrorCode.invalid_input and error.fields == ["input.output"]
    assert "STENOPOD_ALLOW_LOCAL_OUTPUT=1" in error.message
