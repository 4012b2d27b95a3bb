"""Audio the workers say they have transcribed of jobs still in flight, from their progress updates.

A job's items count as done only once the job has ended and their transcripts are in the store;
until then the worker's progress updates (handler/job_state.py: "audio_done_s", the seconds of the
job's audio transcribed so far, a chunk at a time for a long file), which RunPod's /status shows as
an IN_PROGRESS job's output, tell how far it has got, so that one long file's bar moves.
"""

from __future__ import annotations

import math
from typing import Any

from stenopod.endpoint import JobStatus


def progress_audio_s(output: Any) -> float | None:
    """The audio seconds a progress update reports; None for anything else in an output."""
    value = output.get("audio_done_s") if isinstance(output, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) and value >= 0 else None


class InFlightAudio:
    """The latest audio seconds of each submission (by token) not settled yet."""

    def __init__(self) -> None:
        self._by_token: dict[str, float] = {}

    def update(self, token: str, status: JobStatus) -> bool:
        """Take a status's progress update, if it has one; True when the total changed."""
        seconds = progress_audio_s(status.output) if status.status == "IN_PROGRESS" else None
        if seconds is None or self._by_token.get(token) == seconds:
            return False
        self._by_token[token] = seconds
        return True

    def settled(self, token: str) -> None:
        """The submission's items are in the ledger now (done or not): its partial audio goes."""
        self._by_token.pop(token, None)

    def total_s(self) -> float:
        return sum(self._by_token.values())
