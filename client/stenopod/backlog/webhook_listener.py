"""A local listener for RunPod's job webhooks, so the runner need not poll every job.

RunPod (and `stenopod serve`) POSTs the final status body to the job's webhook URL. RunPod's
webhooks are unsigned, so the URL carries a random secret and anything posted to another path is
refused. A webhook only wakes the job's waiter: the runner then reads the status and the results
itself, so a forged or replayed body can at worst cause one extra status request.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
from urllib.parse import urlparse

from aiohttp import web

WEBHOOK_PATH = "/stenopod/webhook/"


def parse_listen(listen: str) -> tuple[str, int]:
    """'HOST:PORT' (or ':PORT', '[::1]:PORT') -> (host, port)."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"--webhook-listen: expected HOST:PORT, got {listen!r}")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port_text)


class WebhookListener:
    """An aiohttp server that turns webhook POSTs into per-job wake-ups."""

    def __init__(self, listen: str, public_url: str | None = None) -> None:
        self.host, self.port = parse_listen(listen)
        if public_url is not None:
            parsed = urlparse(public_url)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise ValueError(f"--webhook-url: expected an http(s) URL, got {public_url!r}")
        self._public_url = public_url.rstrip("/") if public_url else None
        self._secret = secrets.token_urlsafe(24)
        self._events: dict[str, asyncio.Event] = {}
        self._arrived: set[str] = set()
        self._runner: web.AppRunner | None = None
        self.received = 0  # accepted webhook deliveries

    @property
    def url(self) -> str:
        """The webhook URL to give each job (it holds the secret: never log it)."""
        if self._public_url:
            base = self._public_url
        else:
            host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
            host = f"[{host}]" if ":" in host else host
            base = f"http://{host}:{self.port}"
        return f"{base}{WEBHOOK_PATH}{self._secret}"

    async def start(self) -> WebhookListener:
        app = web.Application(client_max_size=32 * 1024**2)
        app.router.add_post(WEBHOOK_PATH + "{secret}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:
            server = site._server  # the bound port is only known after start
            sockets = getattr(server, "sockets", None) or []
            if sockets:
                self.port = sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> WebhookListener:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _handle(self, request: web.Request) -> web.Response:
        if not hmac.compare_digest(request.match_info["secret"], self._secret):
            return web.Response(status=404)
        try:
            body = json.loads(await request.read())
        except ValueError:
            return web.Response(status=400, text="body is not JSON")
        job_id = body.get("id") if isinstance(body, dict) else None
        if not isinstance(job_id, str) or not job_id:
            return web.Response(status=400, text="body has no job id")
        self.received += 1
        self._arrived.add(job_id)
        event = self._events.get(job_id)
        if event is not None:
            event.set()
        return web.Response(status=200, text="ok")

    async def wait(self, job_id: str, timeout_s: float) -> bool:
        """Wait up to timeout_s for a webhook about job_id; True when one came."""
        if job_id in self._arrived:
            self._arrived.discard(job_id)
            return True
        event = self._events.setdefault(job_id, asyncio.Event())
        try:
            await asyncio.wait_for(event.wait(), timeout_s)
        except asyncio.TimeoutError:
            return False
        finally:
            self._events.pop(job_id, None)
        self._arrived.discard(job_id)
        return True
