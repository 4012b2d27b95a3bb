"""Ways to run the local endpoint: blocking (`stenopod serve`) or in a background thread (embedded)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stenopod.cli_args import port
from stenopod.local.server import LocalEndpoint
from stenopod.settings import SERVE_API_KEY_ENV, client_settings

log = logging.getLogger("stenopod.local")


@contextlib.contextmanager
def run_in_thread(**kwargs: Any) -> Iterator[LocalEndpoint]:
    """Start a LocalEndpoint(**kwargs) on its own event loop in a background thread; stop it on exit.

    with run_in_thread(workers=1) as endpoint:
        ...  # endpoint.base_url is ready here
    """
    endpoint = LocalEndpoint(**kwargs)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    failure: list[BaseException] = []

    def main() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(endpoint.start())
        except BaseException as error:  # reported to the caller's thread below
            failure.append(error)
            started.set()
            with contextlib.suppress(Exception):
                loop.run_until_complete(endpoint.stop())
            loop.close()
            return
        started.set()
        loop.run_forever()
        # As asyncio.run does: what is still pending (a handler the server's shutdown cancelled,
        # say) gets to finish before the loop closes, instead of being destroyed while pending.
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    thread = threading.Thread(target=main, name="stenopod-local-endpoint", daemon=True)
    thread.start()
    started.wait()
    if failure:
        thread.join()
        raise failure[0]
    try:
        yield endpoint
    finally:
        try:
            asyncio.run_coroutine_threadsafe(endpoint.stop(), loop).result()
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()


def serve(**options: Any) -> None:
    """Run LocalEndpoint(**options) (the same keywords: host, port, workers, model, api_key, ...) in
    the foreground until Ctrl-C or SIGTERM, then stop its workers and return."""
    options.setdefault("port", 8000)  # a fixed, documented port by default, not LocalEndpoint's free one
    asyncio.run(_serve_until_signalled(LocalEndpoint(**options)))


async def _serve_until_signalled(endpoint: LocalEndpoint) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await endpoint.start()
    try:
        print(
            f"stenopod serve: endpoint {endpoint.url} with {endpoint.workers} worker(s)\n"
            f"  RUNPOD_ENDPOINT_BASE_URL={endpoint.base_url}  endpoint id: {endpoint.endpoint_id}\n"
            "  Ctrl-C stops it.",
            flush=True,
        )
        await stop.wait()
        print("stenopod serve: stopping workers...", flush=True)
    finally:
        await endpoint.stop()


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `stenopod serve`, for the CLI to register on its subcommand."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=port, default=8000, help="port to listen on (default 8000)")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes (default 1; at most 2 per core and one per 1.5 GB of available "
        "memory; STENOPOD_MAX_WORKERS lowers that limit)",
    )
    parser.add_argument("--model", default=None, help="the workers' default model")
    parser.add_argument(
        "--api-key",
        default=None,
        help=f"require this key as 'Authorization: Bearer <key>' (default: ${SERVE_API_KEY_ENV}); "
        "required when binding a non-loopback address",
    )
    parser.add_argument(
        "--allow-private-urls",
        action="store_true",
        help="let workers fetch audio from loopback/private addresses (local backlogs, tests)",
    )
    parser.add_argument(
        "--log-dir", type=Path, default=None, help="write worker output to DIR/worker-N.log instead of stderr"
    )
    parser.add_argument(
        "--retention-s", type=float, default=1800, help="keep finished results this long (default 1800)"
    )


def serve_main(args: argparse.Namespace) -> int:
    """`stenopod serve` with parsed arguments (see add_serve_arguments); returns the exit code."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = client_settings()
        serve(
            host=getattr(args, "host", "127.0.0.1"),
            port=getattr(args, "port", 8000),
            workers=getattr(args, "workers", 1),
            model=getattr(args, "model", None),
            api_key=getattr(args, "api_key", None) or settings.serve_api_key,
            allow_private_urls=getattr(args, "allow_private_urls", False),
            log_dir=getattr(args, "log_dir", None),
            retention_s=getattr(args, "retention_s", 1800),
        )
    except ValueError as error:
        print(f"stenopod serve: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # the port is taken, the address is not ours
        print(f"stenopod serve: cannot listen: {error}", file=sys.stderr)
        return 1
    return 0
