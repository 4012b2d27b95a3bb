"""LocalFileServer: registered local files, and nothing else, served on loopback at token URLs."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from stenopod.backlog.fileserver import LocalFileServer

pytestmark = pytest.mark.timeout(60)


def test_serves_registered_files_only(data_dir: Path, tmp_path: Path) -> None:
    secret = tmp_path / "private.wav"
    secret.write_bytes(b"RIFF-not-for-you")
    with LocalFileServer() as server:
        url = server.register(data_dir / "jfk.flac")
        assert url.startswith("http://127.0.0.1:") and url.endswith("/jfk.flac")
        assert server.register(data_dir / "jfk.flac") == url  # registering twice: same URL
        response = httpx.get(url)
        assert response.status_code == 200
        assert response.content == (data_dir / "jfk.flac").read_bytes()
        assert response.headers["Content-Type"] == "audio/flac"

        head = httpx.head(url)
        assert head.status_code == 200 and head.content == b""
        assert int(head.headers["Content-Length"]) == (data_dir / "jfk.flac").stat().st_size

        token = url.split("/")[3]
        guessed = [
            f"{server.base_url}/",
            f"{server.base_url}/{token[:-1]}x/jfk.flac",
            f"{server.base_url}/private.wav",
            f"{server.base_url}/{token}/../private.wav",
            f"{server.base_url}{secret}",
        ]
        for other in guessed:
            assert httpx.get(other).status_code == 404, other
        assert server.served == [token]

        other_url = server.register(secret)
        assert other_url.split("/")[3] != token
        assert httpx.get(other_url).content == b"RIFF-not-for-you"
    with pytest.raises(httpx.ConnectError):
        httpx.get(url)


def test_file_removed_after_registration_is_404(tmp_path: Path) -> None:
    audio = tmp_path / "gone.mp3"
    audio.write_bytes(b"ID3")
    with LocalFileServer() as server:
        url = server.register(audio)
        audio.unlink()
        assert httpx.get(url).status_code == 404


def test_register_needs_an_existing_file(tmp_path: Path) -> None:
    server = LocalFileServer()
    try:
        with pytest.raises(FileNotFoundError, match="missing.mp3"):
            server.register(tmp_path / "missing.mp3")
        with pytest.raises(FileNotFoundError):
            server.register(tmp_path)
    finally:
        server.stop()
