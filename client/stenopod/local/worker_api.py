"""The worker half of the local endpoint: the routes the runpod worker loop calls.

Shapes as runpod 1.12's rp_job.py / rp_http.py / rp_ping.py use them:
  GET  job-take/{worker}?...&job_in_progress=0|1          -> 200 job object, or 204 for none
  GET  job-take-batch/{worker}?...&batch_size=N&job_in_progress=0|1 -> 200 list of jobs, or 204
  GET  job-stop/{worker}?...                               -> 200 {"jobsToStop": [...]}, or 204
  POST job-done/{worker}/{job}?...&isStream=true|false     body: {"output"|"error", "stopPod"?}
                                                           or {"status": "IN_PROGRESS", "output"} (progress)
  POST job-stream/{worker}/{job}?...                       body: {"output": part}
  GET  ping/{worker}?...&job_id=a,b&runpod_version=...
The bodies are JSON although runpod labels them application/x-www-form-urlencoded.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from stenopod.local.http import BadRequest, endpoint_routes, error_response, read_json
from stenopod.local.workers import Worker

if TYPE_CHECKING:
    from stenopod.local.server import LocalEndpoint

NO_CONTENT = 204


class WorkerAPI:
    def __init__(self, endpoint: LocalEndpoint) -> None:
        self.endpoint = endpoint

    def routes(self) -> list[web.RouteDef]:
        return endpoint_routes(
            self._guard,
            [
                ("GET", "job-take/{worker_id}", self.job_take),
                ("GET", "job-take-batch/{worker_id}", self.job_take_batch),
                ("GET", "job-stop/{worker_id}", self.job_stop),
                ("POST", "job-done/{worker_id}/{job_id}", self.job_done),
                ("POST", "job-stream/{worker_id}/{job_id}", self.job_stream),
                ("GET", "ping/{worker_id}", self.ping),
            ],
        )

    def _guard(self, handler: Callable[..., Awaitable[web.StreamResponse]]) -> Callable[..., Any]:
        """Only a live worker process of ours, with its own token, gets through."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            if request.match_info["endpoint_id"] != self.endpoint.endpoint_id:
                return error_response(404, "endpoint does not exist")
            # The token rides in the query string; the Authorization header is accepted too (see workers.py).
            token = request.query.get("token") or request.headers.get("Authorization")
            worker = self.endpoint.find_worker(request.match_info["worker_id"], token)
            if worker is None:
                return error_response(401, "unknown worker or wrong worker token")
            return await handler(request, worker)

        return guarded

    async def job_take(self, request: web.Request, worker: Worker) -> web.StreamResponse:
        jobs = await self.endpoint.take_jobs(worker, 1, _flag(request, "job_in_progress"), request)
        if not jobs:
            return web.Response(status=NO_CONTENT)
        return web.json_response(jobs[0].worker_payload())

    async def job_take_batch(self, request: web.Request, worker: Worker) -> web.StreamResponse:
        try:
            batch_size = max(1, int(request.query.get("batch_size", "1")))
        except ValueError:
            raise BadRequest("batch_size: must be an integer") from None
        jobs = await self.endpoint.take_jobs(worker, batch_size, _flag(request, "job_in_progress"), request)
        if not jobs:
            return web.Response(status=NO_CONTENT)
        return web.json_response([job.worker_payload() for job in jobs])

    async def job_stop(self, request: web.Request, worker: Worker) -> web.StreamResponse:
        job_ids = await self.endpoint.stop_signals(worker)
        if not job_ids:
            return web.Response(status=NO_CONTENT)
        return web.json_response({"jobsToStop": job_ids})

    async def job_done(self, request: web.Request, worker: Worker) -> web.StreamResponse:
        body = _object(await read_json(request))
        is_stream = request.query.get("isStream", "false").lower() == "true"
        self.endpoint.report_result(worker, request.match_info["job_id"], body, is_stream)
        return web.json_response({})

    async def job_stream(self, request: web.Request, worker: Worker) -> web.StreamResponse:
        body = _object(await read_json(request))
        self.endpoint.report_stream(worker, request.match_info["job_id"], body)
        return web.json_response({})

    async def ping(self, request: web.Request, worker: Worker) -> web.StreamResponse:
        running = {job_id for job_id in request.query.get("job_id", "").split(",") if job_id}
        self.endpoint.ping(worker, running)
        return web.json_response({})


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "0") not in ("", "0", "false")


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest(f"the body must be a JSON object, got {type(body).__name__}")
    return body
