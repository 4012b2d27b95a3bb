"""Where a backlog's transcripts go, parsed once from `output`: an s3:// prefix or a local folder.

Everything that used to ask `output.startswith("s3://")` asks this value instead: the store it
opens, what the job input's `output` says, where the state file lives by default, whether a
RunPod endpoint can write there and where a local file is staged for the worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from stenopod.storage import LocalStore, ObjectStore, S3Credentials, S3Store, StorageError, parse_s3_uri


@dataclass(frozen=True)
class OutputLocation:
    """An s3://bucket/prefix/ (bucket set) or a folder (folder set), as the user named it (text)."""

    text: str
    bucket: str | None = None
    prefix: str = ""  # with its trailing slash, or empty
    folder: Path | None = None  # as given (~ expanded), not resolved

    @classmethod
    def parse(cls, output: str, *, allow_local: bool = True) -> OutputLocation:
        """StorageError, with the reason, for an output that is neither s3:// nor a folder."""
        if output.startswith("s3://"):
            bucket, prefix = parse_s3_uri(output)
            if prefix and not prefix.endswith("/"):
                prefix += "/"
            return cls(output, bucket=bucket, prefix=prefix)
        if not allow_local:
            raise StorageError("output must be an s3://bucket/prefix/ URI here")
        if output.startswith("file://"):
            return cls(output, folder=Path(unquote(urlparse(output).path)))
        if "://" in output:
            raise StorageError(f"unsupported output location {output!r}: use s3://, file:// or a folder path")
        return cls(output, folder=Path(output).expanduser())

    @property
    def is_s3(self) -> bool:
        return self.bucket is not None

    def job_output(self) -> str:
        """The job input's `output`: s3://bucket/prefix/ with its slash, or an absolute folder path."""
        if self.folder is None:
            return self.text if self.text.endswith("/") else self.text + "/"
        return str(self.folder.resolve())

    def default_state_path(self) -> Path:
        """Beside a local output (the backlog and its memory travel together), else the working dir."""
        if self.folder is None:
            return Path("stenopod-state.sqlite")
        return self.folder / ".stenopod-state.sqlite"

    def open_store(
        self, credentials: S3Credentials | None = None, allow_private: bool | None = None
    ) -> ObjectStore:
        if self.bucket is not None:
            return S3Store(self.bucket, self.prefix, credentials, allow_private)
        assert self.folder is not None
        return LocalStore(self.folder)
