"""A test double of the Hugging Face hub's HTTP API, on 127.0.0.1, for fetch_models.py's download path.

The real hub cannot be reached from the tests. This double serves the few routes the real
huggingface_hub client uses to describe and download a model repo: repo info with file metadata,
and resolve (HEAD for metadata, GET for the bytes). Every file is served as an LFS file with its
sha256. `lie_about` makes the double report a wrong hash for a file, to test verification.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class FakeRepo:
    files: dict[str, Path]  # name in the repo -> local file
    lie_about: set[str] = field(default_factory=set)

    def sha256(self, name: str) -> str:
        if name in self.lie_about:
            return "f" * 64
        return hashlib.sha256(self.files[name].read_bytes()).hexdigest()


class FakeHub:
    def __init__(self, repos: dict[str, FakeRepo]) -> None:
        self.repos = repos
        self.requests: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def do_HEAD(self) -> None:
                hub._serve(self, with_body=False)

            def do_GET(self) -> None:
                hub._serve(self, with_body=True)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeHub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _repo_info(self, repo_id: str) -> dict:
        repo = self.repos[repo_id]
        siblings = []
        for name, path in repo.files.items():
            size = path.stat().st_size
            siblings.append(
                {
                    "rfilename": name,
                    "size": size,
                    "blobId": hashlib.sha1(path.read_bytes()).hexdigest(),
                    "lfs": {"size": size, "sha256": repo.sha256(name), "pointerSize": 134},
                }
            )
        return {"id": repo_id, "modelId": repo_id, "sha": COMMIT, "private": False, "siblings": siblings}

    def _tree(self, repo_id: str) -> list[dict]:
        return [
            {
                "type": "file",
                "path": item["rfilename"],
                "size": item["size"],
                "oid": item["blobId"],
                "lfs": {"oid": item["lfs"]["sha256"], "size": item["size"], "pointerSize": 134},
            }
            for item in self._repo_info(repo_id)["siblings"]
        ]

    def _serve(self, request: BaseHTTPRequestHandler, with_body: bool) -> None:
        path = unquote(urlsplit(request.path).path)
        self.requests.append(f"{request.command} {path}")
        for repo_id, repo in self.repos.items():
            if path.startswith(f"/api/models/{repo_id}/tree/"):
                body = json.dumps(self._tree(repo_id)).encode()
                return self._reply(request, 200, body, {"Content-Type": "application/json"}, with_body)
            if path.startswith(f"/api/models/{repo_id}"):
                body = json.dumps(self._repo_info(repo_id)).encode()
                return self._reply(request, 200, body, {"Content-Type": "application/json"}, with_body)
            prefix = f"/{repo_id}/resolve/"
            if path.startswith(prefix):
                _revision, _, name = path[len(prefix) :].partition("/")
                if name not in repo.files:
                    return self._reply(request, 404, b"", {"X-Error-Code": "EntryNotFound"}, with_body)
                data = repo.files[name].read_bytes()
                headers = {
                    "Content-Type": "application/octet-stream",
                    "X-Repo-Commit": COMMIT,
                    "ETag": f'"{repo.sha256(name)}"',
                    "X-Linked-Etag": f'"{repo.sha256(name)}"',
                    "X-Linked-Size": str(len(data)),
                }
                return self._reply(request, 200, data, headers, with_body)
        self._reply(request, 404, b"", {"X-Error-Code": "RepoNotFound"}, with_body)

    @staticmethod
    def _reply(
        request: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str], with_body: bool
    ) -> None:
        request.send_response(status)
        for key, value in headers.items():
            request.send_header(key, value)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        if with_body:
            request.wfile.write(body)
