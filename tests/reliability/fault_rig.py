"""What the fault tests (tests/reliability/test_faults*.py) build backlogs from: tone files,
JSONL manifests, the run's options for a local endpoint, and the check that done means stored."""

from __future__ import annotations

import json
import time
import wave
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import numpy as np
from stenopod.backlog.options import BacklogOptions
from stenopod.local import LocalEndpoint

from handler.engines.instant import INSTANT_MODEL_ID
from tests.support.servers import MotoS3

FORMATS = ("json", "txt", "srt", "vtt")


def tone_wav(path: Path, seconds: float = 0.3, hz: float = 440.0) -> None:
    t = np.arange(int(seconds * 16_000)) / 16_000
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        out.writeframes((0.3 * np.sin(2 * np.pi * hz * t) * 32767).astype("<i2").tobytes())


def write_manifest(path: Path, urls: list[tuple[str, str]], duration_s: float = 1.0) -> Path:
    """A JSONL backlog manifest: explicit ids and a duration, so packing is predictable."""
    lines = [json.dumps({"id": item_id, "url": url, "duration_s": duration_s}) for item_id, url in urls]
    path.write_text("\n".join(lines) + "\n")
    return path


def manifest_lines(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.decode().splitlines() if line.strip()]


def local_options(manifest: Path, output: str, endpoint: LocalEndpoint, **extra: Any) -> BacklogOptions:
    settings: dict[str, Any] = {
        "sources": [str(manifest)],
        "output": output,
        "endpoint": endpoint.base_url,
        "model": INSTANT_MODEL_ID,
        "formats": FORMATS,
        "job_seconds": 2.0,
        "poll_initial_s": 0.05,
        "poll_max_s": 0.3,
        **extra,
    }
    return BacklogOptions(**settings)


def check_done_means_stored(
    moto_s3: MotoS3, bucket: str, prefix: str
) -> tuple[list[dict[str, Any]], set[str]]:
    """Every item the manifest calls ok has each format in the bucket; returns (manifest, keys)."""
    client = moto_s3.client()
    keys = {
        entry["Key"] for entry in client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    }
    lines = manifest_lines(client.get_object(Bucket=bucket, Key=f"{prefix}manifest.jsonl")["Body"].read())
    for line in lines:
        if line["status"] == "ok":
            missing = [fmt for fmt in FORMATS if f"{prefix}{line['id']}.{fmt}" not in keys]
            assert missing == [], f"{line['id']} is done but {missing} are not stored"
    return lines, keys


def slow_file(root: Path, name: str, delay_s: float) -> Callable[[BaseHTTPRequestHandler], None]:
    """Serve a file after a pause, so a job stays in flight long enough to be killed around."""

    def route(handler: BaseHTTPRequestHandler) -> None:
        time.sleep(delay_s)
        data = (root / name).read_bytes()
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    return route
