"""Speaker labels from the client's side: `stenopod transcribe --diarize --max-speakers` and
stenopod.api's diarize/max_speakers reach the endpoint's job input; misuse is a usage error.

The endpoint is a TEST DOUBLE of RunPod's API on loopback (its output_for plays the worker).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import stenopod.api as api
from stenopod.backlog.errors import UsageError
from stenopod.cli import main
from stenopod.storage import LocalStore

from tests.support.endpoint_double import RunPodEndpointTestDouble

pytestmark = pytest.mark.timeout(60)


def _worker(job_input: dict[str, Any]) -> dict[str, Any]:
    store = LocalStore(Path(job_input["output"]))
    items = [
        {
            "id": item["id"],
            "status": "ok",
            "duration_s": 1.0,
            "outputs": {"txt": store.put_bytes(f"{item['id']}.txt", b"x")},
        }
        for item in job_input["items"]
    ]
    return {"items": items}


@pytest.fixture
def recording(tmp_path: Path) -> Path:
    path = tmp_path / "talk.mp3"
    path.write_bytes(b"\xff\xfb" + bytes(1000))
    return path


def test_the_cli_and_the_api_send_diarize_and_max_speakers(recording: Path, tmp_path: Path) -> None:
    with RunPodEndpointTestDouble(output_for=_worker) as double:
        argv = [
            "transcribe",
            str(recording),
            "--endpoint",
            double.base_url,
            "--output",
            str(tmp_path / "cli"),
        ]
        assert main([*argv, "--formats", "txt", "--no-progress", "--diarize", "--max-speakers", "2"]) == 0
        api.transcribe(
            str(recording), str(tmp_path / "api"), endpoint=double.base_url, formats="txt", diarize=True
        )
        assert main([*argv[:-1], str(tmp_path / "plain"), "--formats", "txt", "--no-progress"]) == 0
        inputs = [request.body["input"] for request in double.requests_for("run")]
    assert [(i.get("diarize"), i.get("max_speakers")) for i in inputs] == [
        (True, 2),
        (True, None),
        (None, None),
    ]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--max-speakers", "2"], "--max-speakers: applies only with --diarize"),
        (["--diarize", "--max-speakers", "5"], "--max-speakers: 1 to 4"),
    ],
)
def test_max_speakers_misuse_is_a_usage_error(
    recording: Path, tmp_path: Path, extra: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["transcribe", str(recording), "--output", str(tmp_path / "out"), *extra]) == 2
    assert needle in capsys.readouterr().err
    with pytest.raises(UsageError, match="at most|1 to 4"):
        api.transcribe(str(recording), str(tmp_path / "out"), diarize=True, max_speakers=9)
