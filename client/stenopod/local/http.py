"""HTTP helpers shared by both halves of the local endpoint: JSON errors, never a traceback."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

log = logging.getLogger("stenopod.local")


Handler = Callable[..., Awaitable[web.StreamResponse]]


def endpoint_routes(
    guard: Callable[[Handler], Handler], table: list[tuple[str, str, Handler]]
) -> list[web.RouteDef]:
    """(method, path, handler) rows under /v2/{endpoint_id}/, each handler wrapped by guard."""
    return [web.route(method, "/v2/{endpoint_id}/" + path, guard(handler)) for method, path, handler in table]


class RouteTable(Protocol):
    """One group of routes (RunPod's client API, its worker API...), built from the endpoint."""

    def __init__(self, endpoint: Any) -> None: ...

    def routes(self) -> list[web.RouteDef]: ...


class BadRequest(Exception):
    """A request the endpoint refuses with 400 and this message."""


def error_response(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Unknown routes, wrong methods, oversized bodies and bugs all answer JSON; details stay in our log."""
    try:
        return await handler(request)
    except BadRequest as error:
        return error_response(400, str(error))
    except web.HTTPException as error:
        if error.status < 400:
            raise
        return error_response(error.status, error.reason or "error")
    except Exception:
        # request.path leaves out the query string, where worker routes carry their token.
        log.exception("internal error answering %s %s", request.method, request.path)
        return error_response(500, "internal server error")


async def read_json(request: web.Request, *, allow_empty: bool = False) -> Any:
    """The request body as JSON, whatever Content-Type the caller claimed (runpod's worker says form)."""
    raw = await request.read()
    if not raw.strip():
        if allow_empty:
            return None
        raise BadRequest("the request body is empty; send a JSON object")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError) as error:
        raise BadRequest(f"the request body is not valid JSON: {error}") from None
