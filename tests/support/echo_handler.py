"""A test worker: the UNMODIFIED runpod worker loop (runpod.serverless.start) with a trivial handler.

The local endpoint starts it the way it starts `python -m handler`, so everything between the
endpoint and the runpod loop is exercised for real. The job input picks the behaviour:
  {"echo": x}                      -> {"echo": x, "worker": <RUNPOD_POD_ID>, "pid": ...}
  {"sleep": s}                     -> awaits s seconds first (cancellable through the stop channel)
  {"block": s}                     -> blocks the event loop s seconds (a handler that ignores stops)
  {"fail": "msg"}                  -> raises RuntimeError(msg): runpod reports a FAILED job
  {"error": "msg"}                 -> returns {"error": msg}: FAILED without a traceback
  {"progress": [a, b]}             -> sends each as a progress update, 0.3 s apart
  {"refresh": true}                -> returns with refresh_worker: the endpoint restarts this worker
  {"die": true}                    -> os._exit(3) mid-job, every time
  {"die_once": "/path/marker"}     -> os._exit(3) if the marker file does not exist yet (creates it)
  {"env": ["NAME", ...]}           -> also returns those environment variables
With ECHO_STREAM=1 in its environment the handler is a generator that yields {"part": i} for
i in range(input["parts"]); with ECHO_CONCURRENCY=N each worker runs up to N jobs at once.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import runpod


async def echo(job: dict[str, Any]) -> dict[str, Any]:
    data = job["input"]
    if data.get("die"):
        os._exit(3)
    marker = data.get("die_once")
    if marker and not Path(marker).exists():
        Path(marker).write_text(str(os.getpid()))
        os._exit(3)
    if data.get("sleep"):
        await asyncio.sleep(float(data["sleep"]))
    if data.get("block"):
        time.sleep(float(data["block"]))
    for update in data.get("progress", []):
        runpod.serverless.progress_update(job, update)
        await asyncio.sleep(0.3)
    if data.get("fail"):
        raise RuntimeError(data["fail"])
    if data.get("error"):
        return {"error": data["error"]}
    result: dict[str, Any] = {
        "echo": data.get("echo"),
        "worker": os.environ.get("RUNPOD_POD_ID"),
        "pid": os.getpid(),
    }
    if data.get("env"):
        result["env"] = {name: os.environ.get(name) for name in data["env"]}
    if data.get("refresh"):
        result["refresh_worker"] = True
    return result


async def stream(job: dict[str, Any]):
    for index in range(int(job["input"].get("parts", 3))):
        await asyncio.sleep(0.05)
        yield {"part": index}


if __name__ == "__main__":
    config: dict[str, Any] = {"handler": stream if os.environ.get("ECHO_STREAM") == "1" else echo}
    if os.environ.get("ECHO_CONCURRENCY"):
        # More than one job at a time: the runpod loop then asks job-take-batch for several.
        config["concurrency_modifier"] = lambda current: int(os.environ["ECHO_CONCURRENCY"])
    runpod.serverless.start(config)
