"""Staging: each item's audio as a URL the worker can fetch.

A URL stays as it is; an s3:// source is presigned with this client's credentials (the worker may
have none for that bucket); a local file is uploaded beside an S3 output and presigned, sent inside
the job as a data: URI (a RunPod endpoint and a folder output), or served on loopback to a local
endpoint for as long as the run lasts.
"""

from __future__ import annotations

import asyncio
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from stenopod.backlog.inline_payload import data_uri
from stenopod.backlog.ledger import ItemOutcome, ItemRecord
from stenopod.schema import ErrorCode
from stenopod.storage import INPUTS_PREFIX, ObjectStore, S3Credentials, S3Store, StorageError, parse_s3_uri


class Stager:
    """Stages the items of one run. closing: where a file server started on first use is stopped."""

    def __init__(
        self,
        store: ObjectStore,
        *,
        upload: bool,
        inline: bool = False,
        presign_expiry_s: int,
        s3_credentials: S3Credentials | None,
        file_server: Any,
        closing: ExitStack,
    ) -> None:
        self.store = store
        self.upload = upload  # local files go to the (S3) output store, not to a file server
        self.inline = inline  # local files go inside the job as data: URIs (no bucket, RunPod)
        self.presign_expiry_s = presign_expiry_s
        self.s3_credentials = s3_credentials
        # Serves local files to a local endpoint (a LocalFileServer; started on first use when None).
        self.file_server = file_server
        self._closing = closing
        self._source_stores: dict[str, S3Store] = {}

    async def stage(self, records: list[ItemRecord]) -> tuple[list[dict[str, str]], list[ItemOutcome]]:
        """The job's items ({"id", "audio"}); an item that cannot be staged (its file gone, an upload
        refused) fails alone, and the rest of its pack still goes."""
        staged: list[dict[str, str]] = []
        unstaged: list[ItemOutcome] = []
        for record in records:
            try:
                staged.append({"id": record.id, "audio": await self.audio_url(record)})
            except (StorageError, OSError) as error:
                message = f"cannot stage {record.source}: {error}"
                unstaged.append(
                    ItemOutcome(
                        id=record.id,
                        ok=False,
                        error_code=ErrorCode.storage_failed.value,
                        error_message=message,
                    )
                )
        return staged, unstaged

    async def audio_url(self, item: ItemRecord) -> str:
        """A URL the worker can fetch the item from."""
        if item.local_path:
            path = Path(item.local_path)
            if self.inline:
                return await asyncio.to_thread(data_uri, path)
            if self.upload:
                key = f"{INPUTS_PREFIX}{item.id}{path.suffix.lower()}"
                store = self.store
                # Ids are stable, so an upload survives a restart and is not repeated.
                if not await asyncio.to_thread(store.exists, key):
                    await asyncio.to_thread(store.put_file, key, path)
                return await asyncio.to_thread(store.presigned_get_url, key, self.presign_expiry_s)
            if self.file_server is None:
                # Local files for a local endpoint: served on loopback for as long as this run lasts.
                from stenopod.backlog.fileserver import LocalFileServer

                self.file_server = self._closing.enter_context(LocalFileServer())
            return self.file_server.register(path)
        audio = item.audio or item.source
        if audio.startswith("s3://"):
            # Presign with the client's credentials: the worker may have none for the source bucket.
            bucket, key = parse_s3_uri(audio)
            store = self._source_stores.get(bucket)
            if store is None:
                store = S3Store(bucket, "", self.s3_credentials)
                self._source_stores[bucket] = store
            return await asyncio.to_thread(store.presigned_get_url, key, self.presign_expiry_s)
        return audio
