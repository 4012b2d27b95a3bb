"""The object store interface on a local folder and on a real S3 HTTP endpoint (moto on loopback)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from stenopod.storage import (
    LocalStore,
    ObjectStore,
    S3Credentials,
    S3Store,
    StorageError,
    open_store,
    parse_s3_uri,
)

from tests.support.servers import MotoS3


def _s3_store(moto_s3: MotoS3, bucket: str, prefix: str = "run/") -> S3Store:
    credentials = S3Credentials("testing", "testing", moto_s3.endpoint_url, "us-east-1")
    return S3Store(bucket, prefix, credentials)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalStore(tmp_path / "out")
    moto_s3 = request.getfixturevalue("moto_s3")
    return _s3_store(moto_s3, request.getfixturevalue("s3_bucket"))


def test_round_trip_listing_and_exclusive_create(store: ObjectStore, tmp_path: Path) -> None:
    uri = store.put_bytes("ep1.txt", b"hello", "text/plain")
    assert uri.endswith("ep1.txt") and store.get_bytes("ep1.txt") == b"hello"
    source = tmp_path / "audio.bin"
    source.write_bytes(b"\x00" * 1000)
    store.put_file("_stenopod/inputs/ep1.bin", source)
    assert store.exists("ep1.txt") and not store.exists("ep2.txt")
    assert sorted(store.list_keys()) == ["_stenopod/inputs/ep1.bin", "ep1.txt"]
    assert list(store.list_keys("_stenopod/")) == ["_stenopod/inputs/ep1.bin"]
    assert store.put_bytes_if_absent("claim.json", b"first") is True
    assert store.put_bytes_if_absent("claim.json", b"second") is False
    assert store.get_bytes("claim.json") == b"first"
    dest = tmp_path / "copy.bin"
    store.download_file("_stenopod/inputs/ep1.bin", dest)
    assert dest.read_bytes() == source.read_bytes()


@pytest.mark.parametrize("key", ["../escape.txt", "/abs.txt", "a//b.txt", "a/./b.txt", ""])
def test_keys_that_would_leave_the_root_are_refused(store: ObjectStore, key: str) -> None:
    with pytest.raises(StorageError):
        store.put_bytes(key, b"x")


def test_local_writes_leave_no_part_files_and_readable_modes(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put_bytes("a/b.txt", b"x")
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["b.txt"]
    assert (tmp_path / "a" / "b.txt").stat().st_mode & 0o777 == 0o644


def test_local_store_reports_an_unwritable_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StorageError, match="cannot write"):
        LocalStore(blocker).put_bytes("x.txt", b"x")


def test_presigned_url_fetches_without_credentials_and_expires_as_asked(
    moto_s3: MotoS3, s3_bucket: str
) -> None:
    store = _s3_store(moto_s3, s3_bucket)
    store.put_bytes("clip.wav", b"RIFF....")
    url = store.presigned_get_url("clip.wav", expires_s=600)
    assert parse_qs(urlparse(url).query)["X-Amz-Expires"] == ["600"]
    assert httpx.get(url).content == b"RIFF...."


def test_s3_errors_name_the_object_but_never_the_secret(moto_s3: MotoS3) -> None:
    secret = "planted-secret-0b6e1f"
    store = S3Store("no-such-bucket", "p/", S3Credentials("testing", secret, moto_s3.endpoint_url))
    with pytest.raises(StorageError) as caught:
        store.put_bytes("x.txt", b"x")
    assert "s3://no-such-bucket/p/x.txt" in str(caught.value) and secret not in str(caught.value)
    assert secret not in repr(S3Credentials("id", secret))


def test_open_store_and_uri_parsing(tmp_path: Path) -> None:
    assert parse_s3_uri("s3://bucket/some/prefix/") == ("bucket", "some/prefix/")
    with pytest.raises(StorageError):
        parse_s3_uri("https://bucket/x")
    assert isinstance(open_store(str(tmp_path)), LocalStore)
    assert isinstance(open_store(tmp_path.as_uri()), LocalStore)
    with pytest.raises(StorageError):
        open_store(str(tmp_path), allow_local=False)
    with pytest.raises(StorageError):
        open_store("ftp://host/x")
    assert open_store("s3://bucket/prefix").uri("a.txt") == "s3://bucket/prefix/a.txt"
