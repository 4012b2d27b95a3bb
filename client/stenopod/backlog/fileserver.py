"""Serve chosen local files over HTTP so the workers of a local endpoint can fetch them.

Workers fetch audio by URL; a local backlog run against `stenopod serve --allow-private-urls`
can hand them these URLs instead of uploading every file to object storage first. Only files
registered here are served, each under an unguessable token, so the server exposes nothing else
on the machine even to other local users who find the port.
"""

from __future__ import annotations

import mimetypes
import os
import secrets
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

_CHUNK = 1024 * 1024


class LocalFileServer:
    """A threaded HTTP server on host (127.0.0.1) and a free port, serving registered files.

    Usage: `with LocalFileServer() as server: url = server.register(path)`.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._files: dict[str, Path] = {}
        self._urls: dict[Path, str] = {}
        self._lock = threading.Lock()
        self.served: list[str] = []  # tokens of files sent, for callers counting fetches
        files = self._files
        served = self.served

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass  # the URLs carry tokens; keep them out of logs

            def do_GET(self) -> None:
                self._answer(send_body=True)

            def do_HEAD(self) -> None:
                self._answer(send_body=False)

            def _answer(self, send_body: bool) -> None:
                token = self.path.split("?", 1)[0].lstrip("/").split("/", 1)[0]
                path = files.get(token)
                try:
                    handle = path.open("rb") if path is not None else None
                except OSError:
                    handle = None
                if handle is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                with handle:
                    size = os.fstat(handle.fileno()).st_size
                    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
                    self.send_response(200)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(size))
                    self.end_headers()
                    if send_body:
                        served.append(token)
                        try:
                            shutil.copyfileobj(handle, self.wfile, _CHUNK)
                        except (BrokenPipeError, ConnectionResetError):
                            self.close_connection = True  # the worker gave up; nothing to clean

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None
        self.host = host
        self.port = self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def register(self, path: Path) -> str:
        """The URL at which path is served (the same URL when a file is registered twice)."""
        resolved = Path(path).resolve()
        if not resolved.is_file():
            raise FileNotFoundError(f"{path}: not a file")
        with self._lock:
            url = self._urls.get(resolved)
            if url is None:
                token = secrets.token_urlsafe(24)
                self._files[token] = resolved
                # The file name after the token keeps URLs readable and the extension visible.
                url = f"{self.base_url}/{token}/{quote(resolved.name)}"
                self._urls[resolved] = url
        return url

    def start(self) -> LocalFileServer:
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> LocalFileServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
