"""The worker's settings, read from the environment in one place (docs/deploy.md lists them)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from .audio import AudioLimits
from .decode_pool import default_processes

log = logging.getLogger("stenopod.handler.settings")


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    try:
        return int(raw) if raw else default
    except ValueError:
        log.warning("ignoring %s=%r: not an integer", name, raw)
        return default


def _env_batch_size() -> int | None:
    configured = _env_int("STENOPOD_BATCH_SIZE", 0)
    return configured if configured > 0 else None


def _decode_processes() -> int | None:
    raw = os.environ.get("STENOPOD_DECODE_PROCESSES", "").strip()
    return None if not raw else max(0, _env_int("STENOPOD_DECODE_PROCESSES", 0))


def decode_processes_for(settings: JobSettings, device: str) -> int:
    """The decode processes a worker whose engine runs on `device` uses (see JobSettings)."""
    if settings.decode_processes is not None:
        return settings.decode_processes
    return default_processes() if device == "cuda" else 0


def jobs_at_once() -> int:
    """Jobs a worker runs at once (STENOPOD_JOBS_AT_ONCE, default 2; handler/__main__.py).

    With 2, the worker takes its next job while the current one runs, so that job's audio is
    fetched and decoded while the engine works instead of after: the GPU does not wait on the
    network between jobs. Engine calls stay bounded across jobs (ENGINE_GATE); 1 runs jobs
    strictly one after another.
    """
    return max(1, _env_int("STENOPOD_JOBS_AT_ONCE", 2))


@dataclass(frozen=True)
class JobSettings:
    batch_size: int | None = None  # None: the engine's own batch limits decide
    fetch_concurrency: int = 4
    # Processes that decode and plan (handler.decode_pool); 0 decodes in a thread. None: one per
    # core when the engine is on a GPU, which the pipeline must keep fed, and 0 on a CPU, where
    # the engine itself needs every core and decoding is a sliver of its time.
    decode_processes: int | None = None
    max_inline_bytes: int = 10 * 1000**2
    allow_local_output: bool = False
    tmp_root: str | None = None  # None: the system temp dir
    limits: AudioLimits = field(default_factory=AudioLimits)

    @classmethod
    def from_env(cls) -> JobSettings:
        return cls(
            batch_size=_env_batch_size(),
            fetch_concurrency=max(1, _env_int("STENOPOD_FETCH_CONCURRENCY", cls.fetch_concurrency)),
            decode_processes=_decode_processes(),
            max_inline_bytes=_env_int("STENOPOD_MAX_INLINE_BYTES", cls.max_inline_bytes),
            allow_local_output=os.environ.get("STENOPOD_ALLOW_LOCAL_OUTPUT", "") == "1",
            tmp_root=os.environ.get("STENOPOD_TMP_DIR") or None,
            limits=AudioLimits.from_env(),
        )
