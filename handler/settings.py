"""The worker's settings: every variable it reads from the environment, read and checked here.

`python -m handler` reads WorkerSettings once at start-up; a bad value stops the worker with a
message naming the variable (SettingsError), never a job that fails later. Library callers that
pass no settings (tests, benchmarks) get the same values from the same readers. docs/deploy.md
lists the variables.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from stenopod.storage import S3Credentials

from .audio import AudioLimits
from .decode_pool import default_processes


class SettingsError(ValueError):
    """A variable whose value the worker cannot use; the message names it."""


class _Reader:
    """Typed reads of one environment mapping, each naming the variable when its value is bad."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self.environ = os.environ if environ is None else environ

    def text(self, name: str) -> str:
        return self.environ.get(name, "").strip()

    def flag(self, name: str) -> bool:
        # The client's rule too (stenopod.settings): one variable never means two things.
        raw = self.text(name)
        if raw not in ("", "0", "1"):
            raise SettingsError(f"{name}={raw!r}: expected 1 or 0")
        return raw == "1"

    def first(self, *names: str) -> str | None:
        return next((self.text(name) for name in names if self.text(name)), None)

    def number(self, name: str, default: float, minimum: float | None = None) -> float:
        raw = self.text(name)
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw!r}: not a number") from None
        if minimum is not None and value < minimum:
            raise SettingsError(f"{name}={raw!r}: must be at least {minimum:g}")
        return value

    def integer(self, name: str, default: int, minimum: int | None = None) -> int:
        raw = self.text(name)
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw!r}: not an integer") from None
        if minimum is not None and value < minimum:
            raise SettingsError(f"{name}={raw!r}: must be at least {minimum}")
        return value

    def optional_integer(self, name: str, minimum: int) -> int | None:
        return self.integer(name, 0, minimum) if self.text(name) else None

    def names(self, name: str) -> tuple[str, ...]:
        return tuple(part.strip() for part in self.text(name).split(",") if part.strip())


def audio_limits_from_env(environ: Mapping[str, str] | None = None) -> AudioLimits:
    """Caps and network settings for fetching and decoding (STENOPOD_MAX_*, STENOPOD_FETCH_*)."""
    env, defaults = _Reader(environ), AudioLimits()
    return AudioLimits(
        max_bytes=env.integer("STENOPOD_MAX_AUDIO_BYTES", defaults.max_bytes, 1),
        max_data_uri_bytes=env.integer("STENOPOD_MAX_DATA_URI_BYTES", defaults.max_data_uri_bytes, 1),
        max_seconds=env.number("STENOPOD_MAX_AUDIO_SECONDS", defaults.max_seconds, 0.001),
        timeout_s=env.number("STENOPOD_FETCH_TIMEOUT_S", defaults.timeout_s, 0.001),
        retries=env.integer("STENOPOD_FETCH_RETRIES", defaults.retries, 0),
        backoff_s=env.number("STENOPOD_FETCH_BACKOFF_S", defaults.backoff_s, 0.0),
        deadline_s=env.number("STENOPOD_FETCH_DEADLINE_S", defaults.deadline_s, 0.001),
        allow_private=env.flag("STENOPOD_ALLOW_PRIVATE_URLS"),
    )


@dataclass(frozen=True)
class JobSettings:
    """What each job runs with."""

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
    callback_retries: int = 2
    callback_backoff_s: float = 1.0
    # The operator's bucket credentials (AWS_*, S3_ENDPOINT_URL): for s3:// audio and outputs of
    # jobs that bring no s3Config of their own.
    s3_credentials: S3Credentials = field(default_factory=S3Credentials)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> JobSettings:
        env = _Reader(environ)
        batch_size = env.integer("STENOPOD_BATCH_SIZE", 0, 0)
        return cls(
            batch_size=batch_size or None,
            fetch_concurrency=env.integer("STENOPOD_FETCH_CONCURRENCY", cls.fetch_concurrency, 1),
            decode_processes=env.optional_integer("STENOPOD_DECODE_PROCESSES", 0),
            max_inline_bytes=env.integer("STENOPOD_MAX_INLINE_BYTES", cls.max_inline_bytes, 1),
            allow_local_output=env.flag("STENOPOD_ALLOW_LOCAL_OUTPUT"),
            tmp_root=env.text("STENOPOD_TMP_DIR") or None,
            limits=audio_limits_from_env(environ),
            callback_retries=env.integer("STENOPOD_CALLBACK_RETRIES", cls.callback_retries, 0),
            callback_backoff_s=env.number("STENOPOD_CALLBACK_BACKOFF_S", cls.callback_backoff_s, 0.0),
            s3_credentials=S3Credentials(
                access_key_id=env.first("AWS_ACCESS_KEY_ID"),
                secret_access_key=env.first("AWS_SECRET_ACCESS_KEY"),
                endpoint_url=env.first("S3_ENDPOINT_URL", "AWS_ENDPOINT_URL"),
                region=env.first("AWS_DEFAULT_REGION", "AWS_REGION"),
            ),
        )


def decode_processes_for(settings: JobSettings, device: str) -> int:
    """The decode processes a worker whose engine runs on `device` uses (see JobSettings)."""
    if settings.decode_processes is not None:
        return settings.decode_processes
    return default_processes() if device == "cuda" else 0


@dataclass(frozen=True)
class NemoSettings:
    """How the NeMo engine runs (handler/engines/parakeet.py says what each does)."""

    cuda_graphs: bool = False
    local_attention_s: float = 1200.0
    batch_size: int | None = None  # None: from the free GPU memory (4 on the CPU)
    dtype: str | None = None  # None: bfloat16 on a GPU that has it, else float32

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> NemoSettings:
        env = _Reader(environ)
        dtype = env.text("STENOPOD_NEMO_DTYPE").lower()
        if dtype not in {"", "bfloat16", "float32"}:
            raise SettingsError(f"STENOPOD_NEMO_DTYPE={dtype!r}: expected bfloat16 or float32")
        return cls(
            cuda_graphs=env.flag("STENOPOD_NEMO_CUDA_GRAPHS"),
            local_attention_s=env.number("STENOPOD_LOCAL_ATTENTION_S", cls.local_attention_s, 1.0),
            # 0, as unset: picked from the free GPU memory.
            batch_size=env.optional_integer("STENOPOD_NEMO_BATCH_SIZE", 0) or None,
            dtype=dtype or None,
        )


@dataclass(frozen=True)
class EngineSettings:
    """Which models the worker serves and how their engines run (handler/engines/registry.py)."""

    models_dir: Path | None = None
    models: tuple[str, ...] = ()
    default_model: str | None = None
    enable_test_engine: bool = False
    test_engine_rtfx: float = 2000.0
    whisper_streams: int | None = None
    nemo: NemoSettings = field(default_factory=NemoSettings)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EngineSettings:
        env = _Reader(environ)
        models_dir = env.text("STENOPOD_MODELS_DIR")
        return cls(
            models_dir=Path(models_dir) if models_dir else None,
            models=env.names("STENOPOD_MODELS"),
            default_model=env.text("STENOPOD_DEFAULT_MODEL") or None,
            enable_test_engine=env.flag("STENOPOD_ENABLE_TEST_ENGINE"),
            test_engine_rtfx=env.number("STENOPOD_TEST_ENGINE_RTFX", cls.test_engine_rtfx, 0.001),
            whisper_streams=env.optional_integer("STENOPOD_WHISPER_STREAMS", 1),
            nemo=NemoSettings.from_env(environ),
        )


@dataclass(frozen=True)
class WorkerSettings:
    """Everything `python -m handler` reads from its environment, once, at start-up."""

    job: JobSettings
    engines: EngineSettings
    # Jobs run at once (STENOPOD_JOBS_AT_ONCE, default 2): with 2, the worker takes its next job
    # while the current one runs, so that job's audio is fetched and decoded while the engine
    # works instead of after. Engine calls stay bounded across jobs (pipeline.ENGINE_GATE).
    jobs_at_once: int = 2
    # A local endpoint's process id: the worker ends with it (handler/parent_watch.py).
    parent_pid: int | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WorkerSettings:
        env = _Reader(environ)
        return cls(
            job=JobSettings.from_env(environ),
            engines=EngineSettings.from_env(environ),
            jobs_at_once=env.integer("STENOPOD_JOBS_AT_ONCE", cls.jobs_at_once, 1),
            parent_pid=env.optional_integer("STENOPOD_PARENT_PID", 1),
        )


def runpod_job_api_configured(environ: Mapping[str, str] | None = None) -> bool:
    """Whether RunPod's job API is there to take progress updates (unset in local test mode)."""
    return bool(_Reader(environ).text("RUNPOD_WEBHOOK_POST_OUTPUT"))
