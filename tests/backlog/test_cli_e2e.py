"""`stenopod transcribe / status / retry / cancel` against a real local endpoint (tiny.en)."""

from __future__ import annotations

import json
import shutil

import pytest
from stenopod.cli import main

pytestmark = pytest.mark.timeout(600)


def test_exit_1_lists_failures_then_retry_finishes_the_backlog(
    endpoint, speech_server, speech_dir, data_dir, tmp_path, capsys
):
    output, state = tmp_path / "out", tmp_path / "state.sqlite"
    argv = [
        "transcribe", speech_server.url("hotwords.mp3"), speech_server.url("late.mp3"),
        "--endpoint", endpoint.base_url, "--output", str(output), "--state", str(state),
        "--formats", "txt", "--max-attempts", "1",
    ]  # fmt: skip
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "1 of 2 items transcribed" in captured.out
    assert "late" in captured.err and "fetch_failed" in captured.err and "Traceback" not in captured.err
    assert f"manifest: {(output / 'manifest.jsonl').as_uri()}" in captured.out

    assert main(["status", "--state", str(state), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert (status["counts"]["done"], status["counts"]["failed"]) == (1, 1)
    assert status["failed"][0]["code"] == "fetch_failed"

    # The file turns up; retry replays the stored command for the failed item only.
    shutil.copyfile(data_dir / "hotwords.mp3", speech_dir / "late.mp3")
    assert main(["retry", "--state", str(state)]) == 0
    assert "2 of 2 items transcribed" in capsys.readouterr().out
    lines = [json.loads(line) for line in (output / "manifest.jsonl").read_text().splitlines()]
    assert [line["status"] for line in lines] == ["ok", "ok"]
    assert speech_server.requests.count("/hotwords.mp3") == 1

    # Nothing left in flight: cancel has nothing to do and says so.
    assert main(["cancel", "--state", str(state)]) == 0
    assert "cancelled 0 of 0" in capsys.readouterr().out


def test_without_an_endpoint_the_embedded_one_does_the_work_like_make_demo(speech_dir, tmp_path, capsys):
    output = tmp_path / "out"
    argv = ["transcribe", str(speech_dir), "--output", str(output), "--formats", "txt,srt"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "3 of 3 items transcribed" in out and f"transcripts: {output}" in out
    assert len(list(output.glob("*.txt"))) == 3 and len(list(output.glob("*.srt"))) == 3
    assert (output / ".stenopod-state.sqlite").is_file()
    # The embedded worker logged to a file beside the state, not over the progress bar.
    assert list((output / ".stenopod-logs").glob("*.log"))

    # Done is done: the rerun has nothing to submit (and starts no endpoint for it).
    assert main(argv) == 0
    assert "3 of 3 items transcribed" in capsys.readouterr().out
