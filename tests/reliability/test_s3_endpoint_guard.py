"""An S3 endpoint a job names (RunPod's s3Config.endpointUrl) goes through the address guard.

The endpoint here is real: moto's S3 server on 127.0.0.1, behind a counting proxy on loopback (the
flaky proxy with no faults scripted), so a test can show that *no* request reached it. Jobs run
through handler.job.run_job with the instant test engine (the subject is the storage path, not
speech recognition); the stores are stenopod.storage's, talking to the endpoint through boto3.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.awsrequest import AWSRequest
from botocore.exceptions import EndpointConnectionError
from stenopod import s3_guard
from stenopod.s3_guard import ForbiddenEndpoint
from stenopod.schema import ErrorCode, JobError
from stenopod.storage import S3Credentials, S3Store, open_store

from handler.engines.instant import INSTANT_MODEL_ID
from handler.engines.registry import EngineRegistry, ModelSpec
from handler.job import run_job
from tests.reliability.flaky_proxy import FlakyS3Proxy
from tests.support.servers import MotoS3
from tests.support.tones import tone_wav

pytestmark = pytest.mark.timeout(120)

FORMATS = ["json", "txt", "srt", "vtt"]


TONE = tone_wav(0.5)
TONE_URI = "data:audio/wav;base64," + base64.b64encode(TONE).decode()


@pytest.fixture(scope="module")
def proxy(moto_s3: MotoS3) -> Iterator[FlakyS3Proxy]:
    """The job's S3 endpoint: moto behind a proxy that counts every request reaching it."""
    server = FlakyS3Proxy(moto_s3.port).start()
    yield server
    server.stop()


@pytest.fixture
def bucket(moto_s3: MotoS3, proxy: FlakyS3Proxy) -> str:
    name = f"guard-{uuid.uuid4().hex[:10]}"
    moto_s3.client().create_bucket(Bucket=name)
    moto_s3.client().put_object(Bucket=name, Key="in/tone.wav", Body=TONE)
    proxy.requests.clear()
    return name


@pytest.fixture(autouse=True)
def worker_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("STENOPOD_ALLOW_PRIVATE_URLS", "STENOPOD_ALLOW_LOCAL_OUTPUT", "S3_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("STENOPOD_TMP_DIR", str(tmp_path))
    monkeypatch.setenv("STENOPOD_FETCH_RETRIES", "0")


def s3_config(proxy: FlakyS3Proxy) -> dict[str, str]:
    return {"accessId": "testing", "accessSecret": "testing", "endpointUrl": proxy.url}


def run(job: dict[str, Any]) -> dict[str, Any]:
    registry = EngineRegistry([ModelSpec(INSTANT_MODEL_ID, "instant")])
    return asyncio.run(run_job({"id": "guard-job", **job}, registry))


def refusal(answer: dict[str, Any]) -> JobError:
    assert "error" in answer, answer
    return JobError.from_runpod_error(answer["error"])


def test_a_loopback_endpoint_in_s3config_sees_no_request(proxy: FlakyS3Proxy, bucket: str) -> None:
    config = s3_config(proxy)
    # input: the job's s3:// audio would be read from the job's endpoint
    read = refusal(run({"input": {"audio": f"s3://{bucket}/in/tone.wav"}, "s3Config": config}))
    assert read.code == ErrorCode.url_forbidden
    assert "s3Config.endpointUrl" in read.message and "127.0.0.1" in read.message
    # output: the transcripts (and a submission record) would be written there
    output = {"audio": TONE_URI, "output": f"s3://{bucket}/out/", "formats": FORMATS, "submission": "t" * 16}
    write = refusal(run({"input": output, "s3Config": config}))
    assert write.code == ErrorCode.url_forbidden
    assert "s3Config.endpointUrl" in write.message and "STENOPOD_ALLOW_PRIVATE_URLS" in write.message
    # presigning and listing go through the same stores
    credentials = S3Credentials.from_runpod_s3_config(config)
    with pytest.raises(ForbiddenEndpoint, match="s3Config.endpointUrl"):
        open_store(f"s3://{bucket}/in/", credentials).presigned_get_url("tone.wav")
    with pytest.raises(ForbiddenEndpoint):
        list(S3Store(bucket, "", credentials).list_keys())
    assert proxy.requests == []


def test_with_the_switch_set_the_same_jobs_work(
    proxy: FlakyS3Proxy, bucket: str, moto_s3: MotoS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STENOPOD_ALLOW_PRIVATE_URLS", "1")
    config = s3_config(proxy)
    answer = run({"input": {"audio": f"s3://{bucket}/in/tone.wav"}, "s3Config": config})
    assert answer["items"][0]["status"] == "ok", answer
    answer = run(
        {
            "input": {"audio": TONE_URI, "id": "tone", "output": f"s3://{bucket}/out/", "formats": FORMATS},
            "s3Config": config,
        }
    )
    assert answer["items"][0]["status"] == "ok", answer
    listing = moto_s3.client().list_objects_v2(Bucket=bucket, Prefix="out/")
    assert sorted(entry["Key"] for entry in listing["Contents"]) == [
        f"out/tone.{fmt}" for fmt in sorted(FORMATS)
    ]
    url = open_store(f"s3://{bucket}/in/", S3Credentials.from_runpod_s3_config(config)).presigned_get_url(
        "tone.wav"
    )
    assert url.startswith(proxy.url)
    assert any(request.startswith("PUT ") for request in proxy.requests)


def test_the_operators_own_endpoint_stays_trusted(
    proxy: FlakyS3Proxy, bucket: str, moto_s3: MotoS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("S3_ENDPOINT_URL", proxy.url)  # the worker's environment, not the job's
    answer = run(
        {
            "input": {
                "audio": f"s3://{bucket}/in/tone.wav",
                "output": f"s3://{bucket}/mine/",
                "formats": ["txt"],
            }
        }
    )
    assert answer["items"][0]["status"] == "ok", answer
    assert moto_s3.client().list_objects_v2(Bucket=bucket, Prefix="mine/")["KeyCount"] == 1
    assert proxy.requests


def test_a_public_endpoint_is_pinned_to_the_address_it_was_checked_at(
    proxy: FlakyS3Proxy, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # TEST DOUBLES: no public S3 is reachable from a test, so the policy plays "127.0.0.1 is
    # public", and the resolver answers 127.0.0.1 for the job's name once, then (a rebinding
    # attacker's DNS) 10.0.0.1. The connections must all go to the address that was checked.
    # (A name without dots: moto reads a dotted Host as a virtual-hosted bucket.)
    real_policy = s3_guard.is_forbidden_address
    monkeypatch.setattr(s3_guard, "is_forbidden_address", lambda a: str(a) != "127.0.0.1" and real_policy(a))
    real_resolve = socket.getaddrinfo
    lookups: list[str] = []

    def rebinding_resolver(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "rebinding-s3-host":
            return real_resolve(host, port, *args, **kwargs)
        lookups.append(host)
        return real_resolve("127.0.0.1" if len(lookups) == 1 else "10.0.0.1", port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding_resolver)
    config = {**s3_config(proxy), "endpointUrl": f"http://rebinding-s3-host:{proxy.port}"}
    store = S3Store(bucket, "", S3Credentials.from_runpod_s3_config(config))
    for n in range(3):  # a new connection each time: the pool is emptied between requests
        store.put_bytes(f"pinned/{n}.txt", b"x")
        store._client._endpoint.http_session._manager.clear()
    assert sorted(store.list_keys("pinned/")) == ["pinned/0.txt", "pinned/1.txt", "pinned/2.txt"]
    assert lookups == ["rebinding-s3-host"]  # resolved once, when the store opened
    assert sum(request.startswith("PUT /") for request in proxy.requests) == 3
    # A request to any other host (a redirect, a proxy) never gets a connection.
    seen = len(proxy.requests)
    session = store._client._endpoint.http_session
    with pytest.raises(EndpointConnectionError):
        session.send(AWSRequest(method="GET", url=f"http://localhost:{proxy.port}/{bucket}").prepare())
    assert len(proxy.requests) == seen


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://10.0.0.1:9000",
        "http://169.254.169.254",
        "http://[::1]:9000",
        "http://localhost.:9000",
        "ftp://s3.example.com",
    ],
)
def test_private_or_odd_endpoints_are_refused_before_any_request(endpoint: str) -> None:
    credentials = S3Credentials(
        access_key_id="a", secret_access_key="b", endpoint_url=endpoint, from_job=True
    )
    with pytest.raises(ForbiddenEndpoint, match="s3Config.endpointUrl"):
        S3Store("bucket", "", credentials)
