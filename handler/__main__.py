"""The worker's entry point: `python -m handler` (RunPod runs this; --test_input for local tests).

Models load here, at start-up, so the cost is paid once per worker at cold start and never per job.
"""

from __future__ import annotations

import logging
import os
from typing import Any

# runpod's logger defaults to DEBUG, which prints each job's whole input (callback secrets, data:
# URIs) in local test mode; INFO still shows the result. Read when runpod is imported, so set first.
os.environ.setdefault("RUNPOD_LOG_LEVEL", "INFO")

from handler.cpu_name import answer_cpuinfo_from_proc

answer_cpuinfo_from_proc()  # before runpod's import, which would otherwise time the CPU for a second

import runpod  # noqa: E402

from handler.decode_pool import shared_pool  # noqa: E402
from handler.engines.registry import EngineRegistry, registry_from_env  # noqa: E402
from handler.job import run_job  # noqa: E402
from handler.parent_watch import watch_parent_from_env  # noqa: E402
from handler.settings import JobSettings, decode_processes_for, jobs_at_once  # noqa: E402

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
# httpx logs every request's full URL at INFO: a presigned audio URL's query string is a credential.
logging.getLogger("httpx").setLevel(logging.WARNING)

# Loaded in main(), not at import: the decode pool's processes (spawned) import this module too,
# as __mp_main__, and must not load the models again.
REGISTRY: EngineRegistry | None = None


async def handler(job: dict[str, Any]) -> dict[str, Any]:
    assert REGISTRY is not None
    return await run_job(job, REGISTRY)


def main() -> None:
    global REGISTRY
    # Under a local endpoint: end with it (a no-op on RunPod, where the variable is never set).
    watch_parent_from_env()
    REGISTRY = registry_from_env()
    REGISTRY.load_all()  # includes each engine's smoke test: a broken GPU or model fails here
    settings = JobSettings.from_env()
    for engine in REGISTRY.loaded():
        # Started now, not in the first job: a GPU must not wait for Python processes to start.
        shared_pool(decode_processes_for(settings, engine.device)).start()
    concurrency = jobs_at_once()
    runpod.serverless.start({"handler": handler, "concurrency_modifier": lambda current: concurrency})


if __name__ == "__main__":
    main()
