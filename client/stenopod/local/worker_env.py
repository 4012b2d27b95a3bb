"""The environment of a local worker process, and the runpod URLs that point it at this server.

The documented exception to "only stenopod.settings reads the environment": a worker inherits this
process's environment (PATH, AWS_*, HF caches...), so build_worker_env copies os.environ, then
drops, sets and adds what a local worker needs. The worker parses its own settings from it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from stenopod.local.workers import Worker
from stenopod.settings import ALLOW_PRIVATE_ENV

# Knobs of the runpod worker loop that only make sense on RunPod's own hosts: its fitness checks
# dial 8.8.8.8, demand 4 GB free memory and benchmark the GPU; its default log level prints every
# handler output (whole transcripts) and the job-take URL with its token.
WORKER_ENV_DEFAULTS: dict[str, str] = {
    "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
    "RUNPOD_SKIP_GPU_CHECK": "true",
    "RUNPOD_LOG_LEVEL": "INFO",
    "RUNPOD_PING_INTERVAL": "5000",
    "PYTHONUNBUFFERED": "1",
}
# Inherited variables that would switch the runpod loop into another mode or widen what it may fetch.
WORKER_ENV_DROPPED = ("RUNPOD_REALTIME_PORT", "RUNPOD_REALTIME_CONCURRENCY", ALLOW_PRIVATE_ENV)


@dataclass(frozen=True)
class WorkerUrls:
    """The runpod webhook URL templates for one worker ($ID and $RUNPOD_POD_ID are filled by runpod)."""

    get_job: str
    post_output: str
    post_stream: str
    ping: str

    @classmethod
    def for_worker(cls, server_base: str, endpoint_id: str, worker: Worker) -> WorkerUrls:
        # Same shapes as RunPod's; the query string carries the token because the runpod loop
        # sends ~/.runpod/config.toml's key instead of RUNPOD_AI_API_KEY when that file exists.
        # runpod appends "&job_in_progress=..." and "&isStream=...", so a query string must exist.
        root = f"{server_base}/v2/{endpoint_id}"
        query = f"?gpu=local&token={worker.token}"
        return cls(
            get_job=f"{root}/job-take/$ID{query}",
            post_output=f"{root}/job-done/$RUNPOD_POD_ID/$ID{query}",
            post_stream=f"{root}/job-stream/$RUNPOD_POD_ID/$ID{query}",
            ping=f"{root}/ping/$RUNPOD_POD_ID{query}",
        )


def check_worker_settings(env: Mapping[str, str]) -> None:
    """ValueError naming the variable when a worker started with this environment (plus env) would
    refuse its settings: said once, before any worker starts, not by workers restarting forever."""
    from handler.settings import WorkerSettings  # the worker's own reader; a checkout has it

    WorkerSettings.from_env({**os.environ, **env})


def build_worker_env(
    worker: Worker,
    urls: WorkerUrls,
    endpoint_id: str,
    *,
    model: str | None,
    allow_private_urls: bool,
    extra: Mapping[str, str] | None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of one worker process: inherited, our defaults, the caller's, then ours."""
    env = dict(os.environ if base is None else base)
    for name in WORKER_ENV_DROPPED:
        env.pop(name, None)
    env.update(WORKER_ENV_DEFAULTS)
    env.update(extra or {})
    env.update(
        {
            "RUNPOD_WEBHOOK_GET_JOB": urls.get_job,
            "RUNPOD_WEBHOOK_POST_OUTPUT": urls.post_output,
            "RUNPOD_WEBHOOK_POST_STREAM": urls.post_stream,
            "RUNPOD_WEBHOOK_PING": urls.ping,
            "RUNPOD_AI_API_KEY": worker.token,
            "RUNPOD_POD_ID": worker.id,
            "RUNPOD_POD_HOSTNAME": worker.id,
            "RUNPOD_ENDPOINT_ID": endpoint_id,
            "STENOPOD_ALLOW_LOCAL_OUTPUT": "1",
            # The worker ends itself if this process dies without stopping it (handler.parent_watch).
            "STENOPOD_PARENT_PID": str(os.getpid()),
        }
    )
    if allow_private_urls:
        env[ALLOW_PRIVATE_ENV] = "1"
    else:
        env.pop(ALLOW_PRIVATE_ENV, None)
    if model:
        env["STENOPOD_DEFAULT_MODEL"] = model
    return env
