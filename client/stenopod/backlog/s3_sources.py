"""An s3://bucket/prefix source: the audio objects under it (or the one object it names)."""

from __future__ import annotations

from stenopod.backlog.source_items import FoundEntry, SourceError, is_audio_name, stem
from stenopod.storage import S3Credentials, StorageError, parse_s3_uri


def s3_entries(uri: str, credentials: S3Credentials | None) -> list[FoundEntry]:
    from stenopod.storage import S3Store  # boto3 loads only for s3 sources

    try:
        bucket, prefix = parse_s3_uri(uri)
        store = S3Store(bucket, "", credentials)
        listing = list(store.list_sizes(prefix))
    except StorageError as error:
        raise SourceError(f"{uri}: {error}") from None
    exact = [(key, size) for key, size in listing if key == prefix and prefix]
    folder = prefix if not prefix or prefix.endswith("/") else prefix + "/"
    if exact:
        objects = exact  # the URI names one object: take it whatever its extension
    else:
        objects = [
            (key, size)
            for key, size in listing
            if key.startswith(folder) and is_audio_name(key) and not _hidden_key(key[len(folder) :])
        ]
    if not objects:
        raise SourceError(f"{uri}: no audio or video objects under this prefix")
    found = []
    for key, size in objects:
        object_uri = f"s3://{bucket}/{key}"
        name = None  # one object named: its own stem
        if not exact:  # below a prefix, the "folders" after it are kept, as for a local folder
            relative = key[len(folder) :]
            name = "/".join([*relative.split("/")[:-1], stem(relative)])
        found.append(
            FoundEntry(object_uri, None, None, uri, object_uri, object_uri, None, size_bytes=size, name=name)
        )
    return found


def _hidden_key(relative_key: str) -> bool:
    # _stenopod/ holds our own bookkeeping (and uploaded inputs) when the source is also the output.
    return any(part.startswith((".", "_stenopod")) for part in relative_key.split("/"))
