"""Pack items into jobs: many short files share one job, a long file gets a job of its own.

A job has a fixed cost (queueing, maybe a cold start, status round trips) so a thousand
30-second clips should not be a thousand jobs; but one job holding hours of audio would hold a
worker hostage and lose much work to a single failure. The target is audio seconds per job.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

DEFAULT_JOB_SECONDS = 600.0
DEFAULT_MAX_ITEMS_PER_JOB = 64
# Without a known duration, assume 128 kbit/s (16 kB per second): typical of podcast MP3s, and on
# the safe side for speech codecs (a 32 kbit/s file counts as shorter than it is only 4x).
BYTES_PER_SECOND = 16_000
# An item with neither a duration nor a size is assumed to be this long.
UNKNOWN_SECONDS = 300.0


class Packable(Protocol):
    id: str
    size_bytes: int | None
    duration_s: float | None


def estimated_seconds(item: Packable) -> float:
    """The item's duration when known, else an estimate from its size."""
    if item.duration_s is not None and item.duration_s > 0:
        return float(item.duration_s)
    if item.size_bytes is not None and item.size_bytes > 0:
        return item.size_bytes / BYTES_PER_SECOND
    return UNKNOWN_SECONDS


@dataclass(frozen=True)
class Pack:
    item_ids: list[str]
    seconds: float


def pack_items(
    items: Sequence[Packable],
    *,
    job_seconds: float = DEFAULT_JOB_SECONDS,
    max_items: int = DEFAULT_MAX_ITEMS_PER_JOB,
    payload_bytes: Callable[[Packable], int] | None = None,
    max_payload_bytes: int | None = None,
) -> list[Pack]:
    """Group items, in order, into jobs of at most job_seconds of audio and max_items items.

    An item at or over job_seconds goes alone. Order is kept, so the backlog is worked front to back.
    With payload_bytes, a job also holds at most max_payload_bytes of what the items add to its
    request (audio sent inline as data: URIs must fit in one /run body).
    """
    if job_seconds <= 0:
        raise ValueError("job_seconds must be positive")
    if max_items < 1:
        raise ValueError("max_items must be at least 1")
    packs: list[Pack] = []
    current: list[str] = []
    current_seconds = 0.0
    current_bytes = 0
    for item in items:
        seconds = estimated_seconds(item)
        size = payload_bytes(item) if payload_bytes is not None else 0
        if seconds >= job_seconds:
            packs.append(Pack([item.id], seconds))
            continue
        over_payload = max_payload_bytes is not None and current_bytes + size > max_payload_bytes
        if current and (current_seconds + seconds > job_seconds or len(current) >= max_items or over_payload):
            packs.append(Pack(current, current_seconds))
            current, current_seconds, current_bytes = [], 0.0, 0
        current.append(item.id)
        current_seconds += seconds
        current_bytes += size
    if current:
        packs.append(Pack(current, current_seconds))
    return packs
