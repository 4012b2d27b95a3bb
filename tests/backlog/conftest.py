"""Fixtures for backlog tests: a real local endpoint running the real worker on tiny.en."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from stenopod.local import LocalEndpoint, run_in_thread

from tests.support.endpoint_double import RunPodEndpointTestDouble
from tests.support.servers import AudioHTTPServer, MotoS3

# Short runpod intervals keep the tests quick; the endpoint's own defaults are RunPod's.
FAST_WORKER_ENV = {"RUNPOD_PING_INTERVAL": "1000"}
SPEECH = ("jfk.flac", "librispeech_1089-134686-0001.wav", "hotwords.mp3")


@pytest.fixture(scope="session")
def endpoint(moto_s3: MotoS3, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEndpoint]:
    """One worker with the real handler and tiny.en, allowed to fetch from loopback, writing S3 to moto."""
    env = dict(FAST_WORKER_ENV, S3_ENDPOINT_URL=moto_s3.endpoint_url)
    with run_in_thread(
        workers=1,
        allow_private_urls=True,
        env=env,
        log_dir=tmp_path_factory.mktemp("worker-logs"),
        webhook_retry_delay_s=1.0,
    ) as local:
        yield local


@pytest.fixture
def speech_dir(data_dir: Path, tmp_path: Path) -> Path:
    """A folder of distinct short speech files (names unique, so each fetch names its item)."""
    folder = tmp_path / "speech"
    folder.mkdir()
    for name in SPEECH:
        shutil.copyfile(data_dir / name, folder / name)
    return folder


@pytest.fixture
def speech_server(speech_dir: Path) -> Iterator[AudioHTTPServer]:
    server = AudioHTTPServer(speech_dir).start()
    yield server
    server.stop()


def fetches(server: AudioHTTPServer, name: str) -> int:
    """How many times the worker fetched a file: once per transcription of it."""
    return server.requests.count(f"/{name}")


@pytest.fixture
def runpod_env(monkeypatch: pytest.MonkeyPatch) -> Callable[[RunPodEndpointTestDouble], None]:
    """Points the client at a RunPod test double: use(double) sets the API base and a key."""

    def use(double: RunPodEndpointTestDouble) -> None:
        monkeypatch.setenv("RUNPOD_ENDPOINT_BASE_URL", f"{double.root_url}/v2")
        monkeypatch.setenv("RUNPOD_API_KEY", "test-key")

    return use
