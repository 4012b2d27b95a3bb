"""The worker's entry point: `python -m handler` (RunPod runs this; --test_input for local tests).

Models load here, at start-up, so the cost is paid once per worker at cold start and never per job.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

# runpod's logger defaults to DEBUG, which prints each job's whole input (callback secrets, data:
# URIs) in local test mode; INFO still shows the result. Read when runpod is imported, so set first.
os.environ.setdefault("RUNPOD_LOG_LEVEL", "INFO")

from handler.cpu_name import answer_cpuinfo_from_proc

answer_cpuinfo_from_proc()  # before runpod's import, which would otherwise time the CPU for a second

import runpod  # noqa: E402

from handler.decode_pool import shared_pool  # noqa: E402
from handler.engines.registry import EngineRegistry, registry_from_settings  # noqa: E402
from handler.job import run_job  # noqa: E402
from handler.parent_watch import watch_parent  # noqa: E402
from handler.settings import SettingsError, WorkerSettings, decode_processes_for  # noqa: E402

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
# httpx logs every request's full URL at INFO: a presigned audio URL's query string is a credential.
logging.getLogger("httpx").setLevel(logging.WARNING)

# Loaded in main(), not at import: the decode pool's processes (spawned) import this module too,
# as __mp_main__, and must not load the models again.
REGISTRY: EngineRegistry | None = None
SETTINGS: WorkerSettings | None = None


async def handler(job: dict[str, Any]) -> dict[str, Any]:
    assert REGISTRY is not None
    # SETTINGS is None only where a caller set REGISTRY without main(): run_job reads the settings.
    return await run_job(job, REGISTRY, settings=SETTINGS.job if SETTINGS is not None else None)


def main() -> None:
    global REGISTRY, SETTINGS
    try:
        SETTINGS = settings = WorkerSettings.from_env()
    except SettingsError as error:
        # Read once, here: a bad value stops the worker at start-up, naming the variable.
        sys.exit(f"stenopod worker: {error}")
    # Under a local endpoint: end with it (a no-op on RunPod, where no parent is named).
    watch_parent(settings.parent_pid)
    REGISTRY = registry_from_settings(settings.engines)
    REGISTRY.load_all()  # includes each engine's smoke test: a broken GPU or model fails here
    for engine in REGISTRY.loaded():
        # Started now, not in the first job: a GPU must not wait for Python processes to start.
        shared_pool(decode_processes_for(settings.job, engine.device)).start()
    concurrency = settings.jobs_at_once
    runpod.serverless.start({"handler": handler, "concurrency_modifier": lambda current: concurrency})


if __name__ == "__main__":
    main()
