"""`stenopod` without an endpoint: usage errors exit 2 with one line on stderr, schema prints JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from stenopod.backlog.ledger import Ledger
from stenopod.backlog.sources import SourceItem
from stenopod.cli import main


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err
    return err


def test_schema_prints_the_input_and_output_json_schema(capsys):
    assert main(["schema", "--input"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert {"items", "audio", "formats", "submission"} <= set(schema["properties"])
    assert main(["schema"]) == 0
    both = json.loads(capsys.readouterr().out)
    assert set(both) == {"input", "output"}
    assert "duplicate_of" in both["output"]["properties"]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["transcribe"], "SOURCE"),
        (["transcribe", "a.mp3", "--formats", "json,docx"], "docx"),
        (["transcribe", "a.mp3", "--max-in-flight", "0"], "at least 1"),
        (["transcribe", "a.mp3", "--timestamps", "char"], "char"),
        (["frobnicate"], "frobnicate"),
        (["transcribe", "a.mp3", "--formats", ""], "give at least one of json,txt,srt,vtt"),
        (["transcribe", "a.mp3", "--language", "xx"], "--language: 'xx' is not a language code"),
        (["serve", "--port", "99999"], "a port is 0 to 65535"),
    ],
)
def test_bad_arguments_exit_2(argv, needle, capsys):
    assert main(argv) == 2
    assert needle in _one_line_error(capsys)


def test_a_file_too_large_for_a_runpod_run_without_a_bucket_is_a_usage_error(tmp_path, capsys):
    audio = tmp_path / "a.mp3"
    audio.write_bytes(b"ID3" + bytes(9 * 1000**2))  # over RunPod's 10 MB /run body once base64-encoded
    code = main(["transcribe", str(audio), "--endpoint", "abc123", "--output", str(tmp_path / "out")])
    assert code == 2
    error = _one_line_error(capsys)
    assert "a.mp3" in error and "s3://" in error


def test_an_unknown_gpu_is_a_usage_error(capsys):
    code = main(
        [
            "transcribe",
            "https://example.test/a.mp3",
            "--endpoint",
            "abc123",
            "--output",
            "s3://b/p/",
            "--gpu",
            "TPU",
        ]
    )
    assert code == 2
    assert "unknown GPU" in _one_line_error(capsys)


def test_a_source_that_does_not_exist_is_a_usage_error(tmp_path, capsys):
    code = main(
        [
            "transcribe",
            str(tmp_path / "nowhere.mp3"),
            "--endpoint",
            "http://127.0.0.1:9",
            "--output",
            str(tmp_path / "out"),
        ]
    )
    assert code == 2
    assert "nowhere.mp3" in _one_line_error(capsys)


def test_status_retry_and_cancel_need_a_state_file(tmp_path, capsys):
    for command in ("status", "retry", "cancel"):
        assert main([command, "--state", str(tmp_path / "missing.sqlite")]) == 2
        assert "no state file" in _one_line_error(capsys)


def test_status_reports_a_ledger(tmp_path, capsys):
    state = tmp_path / "state.sqlite"
    with Ledger(state) as ledger:
        ledger.set_meta("options", {"sources": ["x"], "output": "s3://bucket/out/", "endpoint": "abc123"})
    assert main(["status", "--state", str(state), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["counts"]["total"] == 0 and report["endpoint"] == "abc123"


def test_the_console_script_runs_and_reports_its_version():
    result = subprocess.run(
        [sys.executable, "-m", "stenopod.cli", "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stdout.startswith("stenopod ")


# --- a run that cannot start: exit 2 at once, naming the option, leaving no state behind -------------


@pytest.fixture
def audio(tmp_path):
    path = tmp_path / "a.mp3"
    path.write_bytes(b"ID3")
    return path


@pytest.fixture
def not_an_endpoint():
    """A plain HTTP server on loopback that implements no method: every request answers 501."""

    class Quiet(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("which", ["closed port", "plain server"])
def test_an_endpoint_that_never_answered_fails_fast(which, audio, tmp_path, capsys, not_an_endpoint):
    endpoint = "http://127.0.0.1:1" if which == "closed port" else not_an_endpoint
    output = tmp_path / "out"
    started = time.monotonic()
    code = main(["transcribe", str(audio), "--endpoint", endpoint, "--output", str(output), "--no-progress"])
    assert code == 2
    assert f"cannot reach the endpoint at {endpoint}" in _one_line_error(capsys)
    assert time.monotonic() - started < 20
    assert not (output / ".stenopod-state.sqlite").exists()


def test_a_file_as_output_is_an_output_error_not_a_state_file_error(audio, tmp_path, capsys):
    urls = tmp_path / "urls.txt"
    urls.write_text("https://example.test/a.mp3\n")
    assert main(["transcribe", str(audio), "--output", str(urls), "--no-progress"]) == 2
    err = _one_line_error(capsys)
    assert err.startswith("stenopod: --output:") and "is a file" in err and "state" not in err


def test_a_read_only_output_is_an_output_error(audio, tmp_path, capsys, monkeypatch):
    import stenopod.backlog.preflight as preflight

    # Tests may run as root, for whom every folder is writable: play the read-only folder.
    folder = tmp_path / "ro"
    folder.mkdir()
    monkeypatch.setattr(preflight.os, "access", lambda path, mode: Path(path) != folder)
    assert main(["transcribe", str(audio), "--output", str(folder), "--no-progress"]) == 2
    err = _one_line_error(capsys)
    assert "--output" in err and "not writable" in err and "database" not in err
    assert not list(folder.iterdir())


def test_a_usage_error_neither_creates_a_state_file_nor_overwrites_saved_options(audio, tmp_path, capsys):
    output = tmp_path / "out"
    state = output / ".stenopod-state.sqlite"
    code = main(["transcribe", str(tmp_path / "nowhere.mp3"), "--output", str(output), "--no-progress"])
    assert code == 2 and not state.exists() and not list(tmp_path.glob("out/.stenopod-state*"))
    capsys.readouterr()
    with Ledger(state) as ledger:
        ledger.set_meta("options", {"sources": [str(audio)], "output": str(output), "endpoint": None})
    code = main(["transcribe", str(tmp_path / "nowhere.mp3"), "--output", str(output), "--no-progress"])
    assert code == 2
    with Ledger(state) as ledger:
        assert ledger.get_meta("options")["sources"] == [str(audio)]


def test_a_bad_webhook_listen_is_named_once_and_leaves_no_state(tmp_path, capsys):
    output = tmp_path / "out"
    argv = ["transcribe", "https://example.test/a.mp3", "--output", str(output), "--webhook-listen", "nope"]
    assert main(argv) == 2
    err = _one_line_error(capsys)
    assert err.count("--webhook-listen") == 1 and "expected HOST:PORT" in err
    assert not output.exists()


def test_schema_into_a_closed_pipe_is_no_traceback():
    read_end, write_end = os.pipe()
    os.close(read_end)  # `| head` that already went away
    try:
        result = subprocess.run(
            [sys.executable, "-m", "stenopod.cli", "schema", "--input"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr


def test_status_and_retry_take_the_output_folder_and_count_in_words(tmp_path, capsys):
    output = tmp_path / "out"
    state = output / ".stenopod-state.sqlite"
    with Ledger(state) as ledger:
        ledger.set_meta("options", {"sources": ["x"], "output": "s3://bucket/out/", "endpoint": "abc123"})
    assert main(["status", "--state", str(output), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["endpoint"] == "abc123"
    with Ledger(state) as ledger:
        ledger.add_items([SourceItem("a-1", "a.mp3", "https://example.test/a.mp3", None, None, None)])
        ledger.create_submission("token", ["a-1"])
        ledger.finish_submission("token", "failed", [], max_attempts=1)
    # One failed item, and a source that is gone since: the count reads as English, then a usage error.
    assert main(["retry", "--state", str(output), "--no-progress"]) == 2
    assert capsys.readouterr().out.startswith("1 failed item gets new attempts\n")
