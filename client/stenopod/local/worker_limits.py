"""How many local workers this machine may run: by its cores, its memory and STENOPOD_MAX_WORKERS."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from stenopod.settings import MAX_WORKERS_ENV, ClientSettings

__all__ = ["MAX_WORKERS_ENV", "check_worker_count", "worker_limit"]

# How many workers a machine may run. A worker holding a loaded model takes about 1.5 GB (a CPU
# worker with small.en and its decode processes: 1-1.5 GB); past two per core they only contend.
WORKERS_PER_CORE = 2
WORKER_MEMORY_BYTES = 1536 * 2**20


def usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def available_memory_bytes() -> int | None:
    """MemAvailable (what can be used without swapping), else free physical memory; None: unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def worker_limit(
    *,
    loads_model: bool = True,
    cores: int | None = None,
    memory_bytes: int | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[int, str]:
    """The most workers this machine may run, and how that was worked out (for error messages).

    At most WORKERS_PER_CORE per usable core and, for workers that load a model, at most one per
    WORKER_MEMORY_BYTES of available memory; STENOPOD_MAX_WORKERS may lower it. Never below 1.
    """
    cores = usable_cores() if cores is None else cores
    limit = cores * WORKERS_PER_CORE
    reasons = [f"{cores} core(s) x {WORKERS_PER_CORE} = {limit}"]
    if loads_model:
        memory = available_memory_bytes() if memory_bytes is None else memory_bytes
        if memory is not None:
            by_memory = int(memory // WORKER_MEMORY_BYTES)
            limit = min(limit, by_memory)
            reasons.append(
                f"{memory / 2**30:.1f} GB available / {WORKER_MEMORY_BYTES / 2**30:.1f} GB per worker = {by_memory}"
            )
    # STENOPOD_MAX_WORKERS can lower the limit, never raise it (env: for tests, else this process's).
    configured = ClientSettings.from_env(env).max_workers
    if configured is not None and configured < limit:
        limit = configured
        reasons.append(f"{MAX_WORKERS_ENV}={configured}")
    return max(1, limit), "; ".join(reasons)


def check_worker_count(count: int, **kwargs: object) -> None:
    """ValueError, naming --workers and the limit, when count is more than this machine can run."""
    if count < 1:
        raise ValueError(f"--workers must be at least 1, got {count}")
    limit, how = worker_limit(**kwargs)  # type: ignore[arg-type]
    if count > limit:
        raise ValueError(
            f"--workers {count} is more than this machine can run: the limit is {limit} ({how}); "
            f"{MAX_WORKERS_ENV} can lower the limit, not raise it"
        )
