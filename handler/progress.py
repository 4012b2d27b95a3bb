"""RunPod progress updates for a job, at most one a second."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .settings import runpod_job_api_configured

Progress = Callable[[dict[str, Any]], None]
PROGRESS_INTERVAL_S = 1.0


def runpod_progress(job: dict[str, Any]) -> Progress:
    """progress_update for this job on RunPod; a no-op where no RunPod job API is configured."""
    if not runpod_job_api_configured():
        return lambda payload: None

    last_sent = -PROGRESS_INTERVAL_S

    def send(payload: dict[str, Any]) -> None:
        nonlocal last_sent
        # runpod sends each update from a new thread with its own event loop and HTTP session:
        # per stage of every item that is CPU taken from the engine. At most one a second, and
        # always the one that says the job's last item is done, and a long item's progress (one
        # an engine call at most, and dropped it would leave the client's bar still for minutes).
        now = time.monotonic()
        urgent = payload.get("done") == payload.get("total") or payload.get("stage") == "transcribing"
        if now - last_sent < PROGRESS_INTERVAL_S and not urgent:
            return
        last_sent = now
        from runpod.serverless import progress_update

        progress_update(job, payload)

    return send
