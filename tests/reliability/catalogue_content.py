"""What the bad-input catalogue's servers hold and do: broken and hostile files (truncated, corrupt,
not audio, four hours of silence) and scripted misbehaviour (hangs, drips, lying lengths,
redirects to forbidden places), served by a real HTTP server on loopback."""

from __future__ import annotations

import base64
import io
import struct
import time
import zipfile
from collections.abc import Callable
from fractions import Fraction
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import numpy as np

from tests.support.servers import AudioHTTPServer

Route = Callable[[BaseHTTPRequestHandler], None]


def silence_wav(seconds: float, rate: int = 16_000) -> bytes:
    data = np.zeros(int(seconds * rate), dtype="<i2").tobytes()
    header = b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt "
    header += (
        struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16) + b"data" + struct.pack("<I", len(data))
    )
    return header + data


def data_uri(data: bytes) -> str:
    return "data:audio/wav;base64," + base64.b64encode(data).decode()


def _long_silence_mka(seconds: int) -> bytes:
    """A Matroska/FLAC file of `seconds` of silence that takes about 1 MB per hour.

    One 8-second FLAC-encoded block of silence is muxed over and over with advancing timestamps,
    so a real multi-hour file exists in a fraction of a second.
    """
    import av

    rate, block = 8000, 8
    encoder = av.CodecContext.create("flac", "w")
    encoder.sample_rate, encoder.layout, encoder.format = rate, "mono", "s16"
    frame = av.AudioFrame.from_ndarray(
        np.zeros((1, rate * block), dtype=np.int16), format="s16", layout="mono"
    )
    frame.sample_rate, frame.pts = rate, 0
    packets = [*encoder.encode(frame), *encoder.encode(None)]
    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska") as out:
        stream = out.add_stream("flac", rate=rate)
        stream.layout = "mono"
        stream.codec_context.extradata = encoder.extradata
        for index in range(seconds // block):
            for packet in packets:
                copy = av.Packet(bytes(packet))
                copy.pts = copy.dts = index * rate * block + (packet.pts or 0)
                copy.duration, copy.time_base, copy.stream = packet.duration, Fraction(1, rate), stream
                out.mux(copy)
    return buf.getvalue()


def _jpeg() -> bytes:
    """A real JPEG image, encoded by PyAV's bundled ffmpeg."""
    import av

    codec = av.CodecContext.create("mjpeg", "w")
    codec.width, codec.height, codec.pix_fmt, codec.time_base = 32, 32, "yuvj420p", Fraction(1, 25)
    frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 200, dtype=np.uint8), format="rgb24")
    return b"".join(bytes(p) for p in [*codec.encode(frame.reformat(format="yuvj420p")), *codec.encode(None)])


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("episode.txt", "not audio " * 200)
    return buf.getvalue()


def write_content(root: Path, data_dir: Path) -> None:
    jfk = (data_dir / "jfk.flac").read_bytes()
    rng = np.random.default_rng(6)
    corrupt = bytearray(jfk)
    corrupt[200:] = rng.integers(0, 256, len(jfk) - 200, dtype=np.uint8).tobytes()  # header kept
    files = {
        "jfk.flac": jfk,
        "truncated-header.flac": jfk[:64],
        "truncated-third.flac": jfk[: len(jfk) // 3],
        "corrupt.flac": bytes(corrupt),
        "random.mp3": rng.integers(0, 256, 50_000, dtype=np.uint8).tobytes(),
        "page.html": b"<!DOCTYPE html><html><head><title>Episode</title></head><body>moved</body></html>"
        * 30,
        "photo.jpg": _jpeg(),
        "episode.mp3": _zip(),
        "empty.mp3": b"",
        "silence.wav": silence_wav(3.0),
        "four-hours.mka": _long_silence_mka(4 * 3600),
        "four-hours-and-8s.mka": _long_silence_mka(4 * 3600 + 8),
    }
    for name, data in files.items():
        (root / name).write_bytes(data)


def _reply(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> Route:
    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return route


def _hang(handler: BaseHTTPRequestHandler) -> None:
    time.sleep(3)  # never a status line; the worker gives up first


def _drip(interval_s: float, total_s: float) -> Route:
    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "1000000")
        handler.end_headers()
        deadline = time.monotonic() + total_s
        try:
            while time.monotonic() < deadline:
                handler.wfile.write(b"x")
                handler.wfile.flush()
                time.sleep(interval_s)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the worker hung up, as it should
        handler.close_connection = True

    return route


def _claims_big(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", str(50 * 1024**3))
    handler.end_headers()
    try:
        handler.wfile.write(b"x" * 1000)
    except (BrokenPipeError, ConnectionResetError):
        pass
    handler.close_connection = True


def _chunked_forever(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    piece = b"y" * 16_384
    try:
        for _ in range(1000):  # 16 MB if nobody stops it
            handler.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        handler.wfile.write(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass
    handler.close_connection = True


def routes(server: AudioHTTPServer) -> dict[str, Route]:
    return {
        "/forbidden": _reply(403, b"no"),
        "/broken": _reply(500, b"oops"),
        "/hang": _hang,
        "/drip-slow": _drip(1.0, 3.0),
        "/drip": _drip(0.05, 4.0),
        "/big": _claims_big,
        "/chunked": _chunked_forever,
        "/redirect-metadata": _reply(302, headers={"Location": "http://169.254.169.254/latest/meta-data/"}),
        "/redirect-ipv6-loopback": _reply(302, headers={"Location": f"http://[::1]:{server.port}/jfk.flac"}),
        "/redirect-file": _reply(302, headers={"Location": "file:///etc/passwd"}),
        "/redirect-loop": _reply(302, headers={"Location": "/redirect-loop"}),
        "/redirect-octal": _reply(302, headers={"Location": f"http://0177.0.0.1:{server.port}/jfk.flac"}),
        "/redirect-bad-port": _reply(302, headers={"Location": "http://127.0.0.1:99999/jfk.flac"}),
    }
