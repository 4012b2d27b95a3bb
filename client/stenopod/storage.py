"""Object storage behind one small interface: S3-compatible stores (boto3) and a local folder.

The worker writes transcripts through it and the client reads them back, uploads local audio and
presigns URLs through it, so both sides agree on keys and URIs.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote, urlparse

DEFAULT_PRESIGN_SECONDS = 24 * 3600
# Keys stenopod itself keeps beside the transcripts (under the output root).
SUBMISSIONS_PREFIX = "_stenopod/submissions/"
INPUTS_PREFIX = "_stenopod/inputs/"


class StorageError(Exception):
    """Any failure of the object store, with the secrets already left out of the message."""


@dataclass(frozen=True)
class S3Credentials:
    """Credentials and endpoint for an S3-compatible store. repr() never shows the secret."""

    access_key_id: str | None = None
    secret_access_key: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    # The endpoint came with a job (RunPod's s3Config), not from the operator: see stenopod.s3_guard.
    from_job: bool = False

    def __repr__(self) -> str:
        shown = "set" if self.secret_access_key else "unset"
        return f"S3Credentials(endpoint_url={self.endpoint_url!r}, access_key_id=<{shown}>)"

    @classmethod
    def from_env(cls) -> S3Credentials:
        """Standard AWS variables, plus S3_ENDPOINT_URL / AWS_ENDPOINT_URL for R2, MinIO and friends."""
        from stenopod.settings import client_settings

        settings = client_settings()
        return cls(
            access_key_id=settings.aws_access_key_id,
            secret_access_key=settings.aws_secret_access_key,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.aws_region,
        )

    @classmethod
    def from_runpod_s3_config(cls, config: dict[str, Any] | None) -> S3Credentials | None:
        """RunPod passes {accessId, accessSecret, bucketName, endpointUrl} as the job's s3Config."""
        if not config:
            return None
        return cls(
            access_key_id=config.get("accessId") or None,
            secret_access_key=config.get("accessSecret") or None,
            endpoint_url=config.get("endpointUrl") or None,
            region=config.get("region") or None,
            from_job=True,
        )


class ObjectStore(ABC):
    """A flat key space under a root (bucket + prefix, or a folder)."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        """Store data at key and return the object's URI."""

    @abstractmethod
    def put_file(self, key: str, path: Path, content_type: str = "application/octet-stream") -> str:
        """Store a local file at key and return the object's URI."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def download_file(self, key: str, dest: Path) -> None: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list_keys(self, prefix: str = "") -> Iterator[str]:
        """Keys under the store's root that start with prefix (relative to the root)."""

    @abstractmethod
    def uri(self, key: str) -> str: ...

    @abstractmethod
    def presigned_get_url(self, key: str, expires_s: int = DEFAULT_PRESIGN_SECONDS) -> str:
        """A URL a worker can GET without credentials."""

    def put_bytes_if_absent(
        self, key: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> bool:
        """Store data at key only when nothing is there yet; True when this call created it.

        Subclasses make this atomic; this fallback (check, then write) is only race-tolerant.
        """
        if self.exists(key):
            return False
        self.put_bytes(key, data, content_type)
        return True


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise StorageError(f"unsafe object key {key!r}")
    return key


class LocalStore(ObjectStore):
    """A folder on this machine; used for local mode and tests."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / _check_key(key)).resolve()
        if self.root not in path.parents:
            raise StorageError(f"object key {key!r} escapes {self.root}")
        return path

    def _stage(self, path: Path, write: Callable[[BinaryIO], None]) -> str:
        """Write a hidden .part file beside path and return its name; removed again if writing fails.

        Writing then renaming (or linking) means a reader never sees half a transcript.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        try:
            # mkstemp creates 0600; transcripts are ordinary files their owner's group may read.
            os.fchmod(fd, 0o644)
            with os.fdopen(fd, "wb") as handle:
                write(handle)
        except BaseException:
            os.unlink(tmp)
            raise
        return tmp

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        path = self._path(key)
        try:
            os.replace(self._stage(path, lambda handle: handle.write(data)), path)
        except OSError as error:
            raise StorageError(f"cannot write {self.uri(key)}: {error.strerror or error}") from None
        return self.uri(key)

    def put_file(self, key: str, path: Path, content_type: str = "application/octet-stream") -> str:
        dest = self._path(key)
        try:
            with path.open("rb") as source:
                os.replace(self._stage(dest, lambda handle: shutil.copyfileobj(source, handle)), dest)
        except OSError as error:
            raise StorageError(f"cannot write {self.uri(key)}: {error.strerror or error}") from None
        return self.uri(key)

    def put_bytes_if_absent(
        self, key: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> bool:
        path = self._path(key)
        try:
            tmp = self._stage(path, lambda handle: handle.write(data))
            try:
                # link() fails when the name exists: an exclusive create that never shows half a file.
                os.link(tmp, path)
                return True
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
        except OSError as error:
            raise StorageError(f"cannot write {self.uri(key)}: {error.strerror or error}") from None

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except OSError as error:
            raise StorageError(f"cannot read {self.uri(key)}: {error.strerror or error}") from None

    def download_file(self, key: str, dest: Path) -> None:
        try:
            shutil.copyfile(self._path(key), dest)
        except OSError as error:
            raise StorageError(f"cannot read {self.uri(key)}: {error.strerror or error}") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        # Walk only the entries the prefix can match: the runner lists each finished item's files,
        # and walking every transcript each time made a backlog of n items cost n^2 stats.
        folder, _, stem = prefix.rpartition("/")
        base = (self.root / folder).resolve() if folder else self.root
        if not base.is_dir() or (base != self.root and self.root not in base.parents):
            return
        for entry in sorted(child for child in base.iterdir() if child.name.startswith(stem)):
            for path in sorted(entry.rglob("*")) if entry.is_dir() else [entry]:
                if path.is_file() and not path.name.endswith(".part"):
                    key = path.relative_to(self.root).as_posix()
                    if key.startswith(prefix):
                        yield key

    def uri(self, key: str) -> str:
        return (self.root / key).as_uri()

    def presigned_get_url(self, key: str, expires_s: int = DEFAULT_PRESIGN_SECONDS) -> str:
        raise StorageError("a local folder has no URLs; serve it over HTTP or use an s3:// output")


class S3Store(ObjectStore):
    """An S3-compatible bucket with an optional key prefix (boto3)."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        credentials: S3Credentials | None = None,
        allow_private: bool | None = None,
    ) -> None:
        import boto3  # boto3 is slow to import; only S3 users pay for it
        from botocore.config import Config

        from .s3_guard import check_job_endpoint, pin_client

        self.bucket = bucket
        self.prefix = prefix
        creds = credentials or S3Credentials.from_env()
        # A job's own endpoint is checked before any request (and pinned after); path-style
        # addressing keeps the bucket name out of the host, so the checked host is the only one.
        pinned = check_job_endpoint(creds, allow_private)
        try:
            self._client = boto3.client(
                "s3",
                aws_access_key_id=creds.access_key_id,
                aws_secret_access_key=creds.secret_access_key,
                endpoint_url=creds.endpoint_url,
                region_name=creds.region or "us-east-1",
                config=Config(
                    retries={"max_attempts": 5, "mode": "standard"},
                    connect_timeout=10,
                    read_timeout=60,
                    signature_version="s3v4",
                    s3={"addressing_style": "path"} if pinned else None,
                ),
            )
        except ValueError:  # botocore's "Invalid endpoint: <the URL>", which could carry user info
            raise StorageError(f"cannot open s3://{bucket}/: the S3 endpoint URL is not valid") from None
        if pinned is not None:
            pin_client(self._client, pinned)

    def _key(self, key: str) -> str:
        return self.prefix + _check_key(key)

    def _fail(self, action: str, key: str, error: Exception) -> StorageError:
        # botocore messages name the bucket and key but never the secret; keep only the short form.
        code = (
            getattr(error, "response", {}).get("Error", {}).get("Code")
            if hasattr(error, "response")
            else None
        )
        detail = code or type(error).__name__
        return StorageError(f"cannot {action} {self.uri(key)}: {detail}")

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        try:
            self._client.put_object(
                Bucket=self.bucket, Key=self._key(key), Body=data, ContentType=content_type
            )
        except Exception as error:  # botocore raises many unrelated types
            raise self._fail("write", key, error) from None
        return self.uri(key)

    def put_bytes_if_absent(
        self, key: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> bool:
        try:
            self._client.put_object(
                Bucket=self.bucket, Key=self._key(key), Body=data, ContentType=content_type, IfNoneMatch="*"
            )
            return True
        except Exception as error:
            response = getattr(error, "response", {}) or {}
            code = response.get("Error", {}).get("Code")
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
                return False
            if code != "NotImplemented" and status != 501:
                raise self._fail("write", key, error) from None
        # Stores without conditional writes (older MinIO and friends): check, then write.
        return super().put_bytes_if_absent(key, data, content_type)

    def put_file(self, key: str, path: Path, content_type: str = "application/octet-stream") -> str:
        try:
            self._client.upload_file(
                str(path), self.bucket, self._key(key), ExtraArgs={"ContentType": content_type}
            )
        except Exception as error:
            raise self._fail("write", key, error) from None
        return self.uri(key)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except Exception as error:
            raise self._fail("read", key, error) from None

    def download_file(self, key: str, dest: Path) -> None:
        try:
            self._client.download_file(self.bucket, self._key(key), str(dest))
        except Exception as error:
            raise self._fail("read", key, error) from None

    def exists(self, key: str) -> bool:
        try:
            self._client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except Exception as error:
            status = getattr(error, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 404:
                return False
            raise self._fail("check", key, error) from None

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        try:
            paginator = self._client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                for entry in page.get("Contents", []):
                    yield entry["Key"][len(self.prefix) :]
        except Exception as error:
            raise self._fail("list", prefix or ".", error) from None

    def list_sizes(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        """Like list_keys, with each object's size in bytes (the listing carries it for free)."""
        try:
            paginator = self._client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                for entry in page.get("Contents", []):
                    yield entry["Key"][len(self.prefix) :], int(entry.get("Size", 0))
        except Exception as error:
            raise self._fail("list", prefix or ".", error) from None

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}"

    def presigned_get_url(self, key: str, expires_s: int = DEFAULT_PRESIGN_SECONDS) -> str:
        try:
            return self._client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": self._key(key)}, ExpiresIn=expires_s
            )
        except Exception as error:
            raise self._fail("presign", key, error) from None


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """s3://bucket/some/prefix/ -> ("bucket", "some/prefix/")."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise StorageError(f"not an s3://bucket/key URI: {uri!r}")
    return parsed.netloc, unquote(parsed.path.lstrip("/"))


def open_store(
    location: str,
    credentials: S3Credentials | None = None,
    allow_local: bool = True,
    allow_private: bool | None = None,
) -> ObjectStore:
    """An ObjectStore rooted at an s3://bucket/prefix/ URI, a file:// URI or a folder path."""
    from stenopod.output_location import OutputLocation  # it builds on this module's stores

    return OutputLocation.parse(location, allow_local=allow_local).open_store(credentials, allow_private)
