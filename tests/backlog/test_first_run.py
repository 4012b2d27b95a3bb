"""`stenopod transcribe` as a new user meets it, against a TEST DOUBLE of an endpoint on loopback.

The double's output_for plays the worker by writing each item's formats into the real output folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from stenopod.backlog.ledger import Ledger
from stenopod.cli import main
from stenopod.storage import LocalStore

from tests.support.endpoint_double import RunPodEndpointTestDouble

pytestmark = pytest.mark.timeout(120)


_HEALED: set[str] = set()  # what the worker no longer fails (the user fixed the cause)


def _worker(job_input: dict[str, Any]) -> dict[str, Any]:
    store = LocalStore(Path(job_input["output"]))
    items = []
    for item in job_input["items"]:
        if "broken" in item["audio"] and "broken" not in _HEALED:
            error = {"code": "not_audio", "message": "not a readable audio file"}
            items.append({"id": item["id"], "status": "error", "error": error})
            continue
        outputs = {fmt: store.put_bytes(f"{item['id']}.{fmt}", b"ask not") for fmt in job_input["formats"]}
        items.append({"id": item["id"], "status": "ok", "duration_s": 1.0, "outputs": outputs})
    return {"items": items}


def _transcribe(double: RunPodEndpointTestDouble, *sources: str, output: Path, extra: tuple = ()) -> int:
    argv = ["transcribe", *sources, "--endpoint", double.base_url, "--output", str(output)]
    return main([*argv, "--formats", "json,txt", "--no-progress", *extra])


@pytest.fixture
def recordings(tmp_path: Path) -> Path:
    folder = tmp_path / "rec"
    folder.mkdir()
    for name in ("a.mp3", "broken.mp3"):
        (folder / name).write_bytes(b"\xff\xfb" + bytes(1000))
    return folder


def test_a_refused_key_is_exit_2_and_says_to_fix_it(recordings, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RUNPOD_API_KEY", "wrong")
    with RunPodEndpointTestDouble(api_key="right", output_for=_worker) as double:
        assert _transcribe(double, str(recordings / "a.mp3"), output=tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "API key was refused" in err and "same command again" not in err
    assert not double.requests_for("run")


def test_a_key_refused_during_the_run_is_exit_2_and_says_to_fix_it(recordings, tmp_path, capsys):
    with RunPodEndpointTestDouble(output_for=_worker) as double:
        double.fail_next(1, 401, operation="run")
        assert _transcribe(double, str(recordings / "a.mp3"), output=tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "fix the key" in err and "same command again" not in err


def test_failed_items_point_at_retry_not_at_a_rerun(recordings, tmp_path, capsys):
    output = tmp_path / "out"
    with RunPodEndpointTestDouble(output_for=_worker) as double:
        assert _transcribe(double, str(recordings), output=output) == 1
    captured = capsys.readouterr()
    assert "1 of 2 items transcribed" in captured.out
    assert f"stenopod retry --state {output / '.stenopod-state.sqlite'}" in captured.err
    assert "same command again" not in captured.err + captured.out


def test_retry_from_another_folder_finds_relative_sources(recordings, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with RunPodEndpointTestDouble(output_for=_worker) as double:
        assert _transcribe(double, "rec/a.mp3", "rec/broken.mp3", output=Path("out")) == 1
        with Ledger(tmp_path / "out" / ".stenopod-state.sqlite") as ledger:
            stored = ledger.get_meta("options")
        assert stored["sources"] == [str(recordings / "a.mp3"), str(recordings / "broken.mp3")]
        assert stored["output"] == str(tmp_path / "out")
        capsys.readouterr()

        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        os.chdir(elsewhere)
        monkeypatch.setattr(f"{__name__}._HEALED", {"broken"})
        assert main(["retry", "--state", str(tmp_path / "out"), "--no-progress"]) == 0
    assert "2 of 2 items transcribed" in capsys.readouterr().out
    assert not (elsewhere / "out").exists()


def test_a_rerun_with_more_formats_makes_them(recordings, tmp_path, caplog):
    output = tmp_path / "out"
    with RunPodEndpointTestDouble(output_for=_worker) as double:
        assert _transcribe(double, str(recordings / "a.mp3"), output=output) == 0
        assert sorted(path.suffix for path in output.glob("a.*")) == [".json", ".txt"]
        more = ("--formats", "json,txt,srt,vtt")
        assert _transcribe(double, str(recordings / "a.mp3"), output=output, extra=more) == 0
        assert sorted(path.suffix for path in output.glob("a.*")) == [".json", ".srt", ".txt", ".vtt"]
        assert "1 done item(s) lack some of" in caplog.text
        # Fewer formats than were made: nothing to do again.
        jobs = len(double.jobs)
        assert _transcribe(double, str(recordings / "a.mp3"), output=output, extra=("--formats", "srt")) == 0
        assert len(double.jobs) == jobs
