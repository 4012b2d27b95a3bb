"""What the runner does when one item, or the endpoint, goes wrong: nothing else is lost with it.

Against a TEST DOUBLE of a RunPod endpoint (RunPod's cloud cannot run here) on loopback; its
output_for plays the worker by writing each item's formats into the real output folder, so the
runner's checks of the output store run for real.
"""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from typing import Any

import pytest
import stenopod.backlog.loop as loop_module
from stenopod.backlog.ledger import Ledger
from stenopod.backlog.loop import BacklogRunner
from stenopod.backlog.options import BacklogOptions
from stenopod.backlog.sources import expand_sources
from stenopod.backlog.states import ItemState
from stenopod.endpoint import EndpointClient
from stenopod.storage import LocalStore

from handler.submission import record_submission_result
from tests.support.endpoint_double import DoubleJob, RunPodEndpointTestDouble

pytestmark = pytest.mark.timeout(120)


def _worker(job_input: dict[str, Any]) -> dict[str, Any]:
    """What a worker answers: every format written to the output folder, the submission recorded."""
    store = LocalStore(Path(job_input["output"]))
    items = []
    for item in job_input["items"]:
        outputs = {fmt: store.put_bytes(f"{item['id']}.{fmt}", b"ask not") for fmt in job_input["formats"]}
        items.append(
            {"id": item["id"], "status": "ok", "model": "double", "duration_s": 1.0, "outputs": outputs}
        )
    output = {"items": items, "model": "double"}
    record_submission_result(store, job_input["submission"], "double-job", output)
    return output


def _recordings(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(count):
        (folder / f"f{n}.mp3").write_bytes(b"\xff\xfb" + bytes(1000 + n))
    return folder


def _options(double: RunPodEndpointTestDouble, source: Path, output: Path) -> BacklogOptions:
    return BacklogOptions(
        sources=[str(source)],
        output=str(output),
        endpoint=f"{double.root_url}/v2/{double.endpoint_id}",
        formats=("json", "txt"),
        poll_initial_s=0.02,
        poll_max_s=0.1,
        max_attempts=3,
        resubmit_wait_s=0.01,
    )


def test_a_file_that_cannot_be_staged_fails_alone(tmp_path: Path) -> None:
    source = _recordings(tmp_path / "src", 4)
    state = tmp_path / "state.sqlite"
    with Ledger(state) as ledger:
        ledger.add_items(expand_sources([str(source)]))
    (source / "f1.mp3").unlink()  # gone between the listing and the submission
    with RunPodEndpointTestDouble(output_for=_worker) as double:
        report = asyncio.run(BacklogRunner(_options(double, source, tmp_path / "out"), state=state).run())
        sent = [item["id"] for job in double.jobs.values() for item in job.input["items"]]

    by_name = {Path(item.source).name: item for item in report.items}
    assert (report.done, report.failed) == (3, 1)
    gone = by_name["f1.mp3"]
    assert gone.state == "failed" and gone.attempts == 3
    assert gone.error_code == "storage_failed" and "cannot stage" in (gone.error_message or "")
    assert all(
        by_name[name].state == "done" and by_name[name].attempts == 1
        for name in ("f0.mp3", "f2.mp3", "f3.mp3")
    )
    assert gone.id not in sent  # never handed to a worker


class _CancelsEveryJob(RunPodEndpointTestDouble):
    """TEST DOUBLE: someone runs `stenopod cancel` (or purges the queue) as each job is queued."""

    def _advance(self, job: DoubleJob) -> None:
        if job.status in ("IN_QUEUE", "IN_PROGRESS"):
            job.status = "CANCELLED"


def test_a_job_cancelled_during_the_run_is_not_resubmitted_by_it(tmp_path: Path) -> None:
    source = _recordings(tmp_path / "src", 2)
    state = tmp_path / "state.sqlite"
    with _CancelsEveryJob(output_for=_worker) as double:

        async def run_once() -> Any:
            # Without the hold the run resubmits forever (a cancel uses up no attempt).
            return await asyncio.wait_for(
                BacklogRunner(_options(double, source, tmp_path / "out"), state=state).run(), 60
            )

        report = asyncio.run(run_once())
        assert len(double.requests_for("run")) == 1
    assert (report.done, report.failed, report.pending) == (0, 0, 2)
    with Ledger(state) as ledger:
        assert [(item.state, item.attempts) for item in ledger.items()] == [
            (ItemState.PENDING, 0),
            (ItemState.PENDING, 0),
        ]

    # The next run picks them up again.
    with RunPodEndpointTestDouble(output_for=_worker) as double:
        again = asyncio.run(BacklogRunner(_options(double, source, tmp_path / "out"), state=state).run())
    assert (again.done, again.failed, again.pending) == (2, 0, 0)


class _TimesOutAfterTheWork(RunPodEndpointTestDouble):
    """TEST DOUBLE: the worker finishes and records the submission, then the job is reported
    TIMED_OUT (the endpoint's execution timeout landed as the answer was being returned)."""

    def _advance(self, job: DoubleJob) -> None:
        if job.status in ("IN_QUEUE", "IN_PROGRESS"):
            self.output_for(job.input)
            job.status = "TIMED_OUT"


def test_a_job_that_timed_out_after_its_worker_finished_is_not_redone(tmp_path: Path) -> None:
    source = _recordings(tmp_path / "src", 2)
    with _TimesOutAfterTheWork(output_for=_worker) as double:
        report = asyncio.run(
            BacklogRunner(_options(double, source, tmp_path / "out"), state=tmp_path / "state.sqlite").run()
        )
        assert len(double.requests_for("run")) == 1
    assert (report.done, report.failed) == (2, 0)
    assert all(item.attempts == 1 for item in report.items)


def test_a_run_whose_answers_were_lost_is_asked_again_under_the_same_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real client, with its backoff shortened so its 9 tries take milliseconds.
    quick = functools.partial(EndpointClient, backoff_base_s=0.001, backoff_max_s=0.002)
    monkeypatch.setattr(loop_module, "EndpointClient", quick)
    source = _recordings(tmp_path / "src", 2)
    with RunPodEndpointTestDouble(output_for=_worker) as double:
        # Every try of the first /run creates its job, then the answer is lost.
        double.drop_next(9, operation="run", after_processing=True)
        report = asyncio.run(
            BacklogRunner(_options(double, source, tmp_path / "out"), state=tmp_path / "state.sqlite").run()
        )
        tokens = {job.input["submission"] for job in double.jobs.values()}
        created = len(double.jobs)
    assert (report.done, report.failed) == (2, 0)
    assert all(item.attempts == 1 for item in report.items)
    # Ten jobs, all under one token: on RunPod the nine unanswered ones would find the token
    # claimed and answer duplicate_of, instead of transcribing the items again.
    assert created == 10 and len(tokens) == 1
