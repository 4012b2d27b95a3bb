"""The runner against a TEST DOUBLE of a RunPod endpoint (RunPod's cloud cannot run here).

The double plays RunPod's queue; its output_for plays the worker by writing each item's formats to
the real (moto) S3 bucket, so the runner's checks of the output store run for real.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from stenopod.backlog.ledger import Ledger
from stenopod.backlog.loop import BacklogRunner
from stenopod.backlog.options import BacklogOptions
from stenopod.backlog.sources import expand_sources
from stenopod.cli import main
from stenopod.endpoint import EndpointClient
from stenopod.storage import S3Credentials, S3Store, parse_s3_uri

from tests.support.endpoint_double import RunPodEndpointTestDouble

pytestmark = pytest.mark.timeout(120)


def _fake_worker(credentials: S3Credentials, *, skip_format: str | None = None):
    """What a worker would answer: every format written to <output><id>.<format>, results returned."""

    def output_for(job_input: dict[str, Any]) -> dict[str, Any]:
        bucket, prefix = parse_s3_uri(job_input["output"])
        store = S3Store(bucket, prefix, credentials)
        items = []
        for item in job_input["items"]:
            # A local file reached the worker as a presigned URL of its upload, never as a path.
            assert item["audio"].startswith("http") and "X-Amz-Signature" in item["audio"]
            outputs = {}
            for fmt in job_input["formats"]:
                if fmt != skip_format:
                    outputs[fmt] = store.put_bytes(f"{item['id']}.{fmt}", b"ask not")
            items.append(
                {
                    "id": item["id"],
                    "status": "ok",
                    "model": "double",
                    "language": "en",
                    "duration_s": 11.0,
                    "outputs": outputs,
                }
            )
        return {"items": items, "model": "double"}

    return output_for


def _options(sources: list[str], output: str, **extra: Any) -> BacklogOptions:
    return BacklogOptions(
        sources=sources,
        output=output,
        endpoint="test-endpoint",
        formats=("json", "txt"),
        poll_initial_s=0.02,
        poll_max_s=0.1,
        price_per_s=0.001,
        **extra,
    )


def test_runpod_backlog_through_throttling_is_complete_and_costed(
    moto_s3, s3_bucket, data_dir, tmp_path, runpod_env
):
    credentials = S3Credentials(endpoint_url=moto_s3.endpoint_url)
    double = RunPodEndpointTestDouble(
        polls_to_complete=3, output_for=_fake_worker(credentials), api_key="test-key"
    )
    with double:
        runpod_env(double)
        double.fail_next(3, 429, operation="run", retry_after="0")
        # An answer lost after the job was made: the client retries, a second job holds the same token.
        double.drop_next(1, operation="run", after_processing=True)
        double.fail_next(2, 503, operation="status", retry_after="0")
        sources = [str(data_dir / "jfk.flac"), str(data_dir / "hotwords.mp3")]
        options = _options(sources, f"s3://{s3_bucket}/out/", job_seconds=1.0)
        report = asyncio.run(
            BacklogRunner(options, state=tmp_path / "state.sqlite", s3_credentials=credentials).run()
        )

    assert (report.done, report.failed) == (2, 0)
    # One job per item (job_seconds=1); each billed 345 ms by the double; $0.001 per second.
    jobs = [job for job in double.jobs.values() if job.status == "COMPLETED"]
    assert len(jobs) == 2
    assert report.execution_seconds == pytest.approx(0.69)
    assert report.cost_usd == pytest.approx(0.00069)
    assert all(job.input["submission"] for job in jobs)
    assert all(request.headers.get("Authorization") == "Bearer test-key" for request in double.requests)


def test_an_item_whose_formats_are_not_all_stored_is_not_done(moto_s3, s3_bucket, tmp_path, runpod_env):
    credentials = S3Credentials(endpoint_url=moto_s3.endpoint_url)
    double = RunPodEndpointTestDouble(output_for=_fake_worker(credentials, skip_format="txt"))
    with double:
        runpod_env(double)
        local = tmp_path / "a.flac"
        local.write_bytes(b"fLaC")
        options = _options([str(local)], f"s3://{s3_bucket}/out/", max_attempts=2)
        report = asyncio.run(
            BacklogRunner(options, state=tmp_path / "state.sqlite", s3_credentials=credentials).run()
        )

    assert (report.done, report.failed) == (0, 1)
    (item,) = report.failed_items
    assert item.error_code == "storage_failed" and "txt" in item.error_message
    assert item.attempts == 2


def test_cancel_stops_jobs_in_flight_and_a_rerun_submits_them_again(
    moto_s3, s3_bucket, tmp_path, runpod_env, capsys
):
    credentials = S3Credentials(endpoint_url=moto_s3.endpoint_url)
    double = RunPodEndpointTestDouble(output_for=_fake_worker(credentials))
    with double:
        runpod_env(double)
        local = tmp_path / "a.flac"
        local.write_bytes(b"fLaC")
        options = _options([str(local)], f"s3://{s3_bucket}/out/")
        state = tmp_path / "state.sqlite"
        (item,) = expand_sources([str(local)])

        async def submit() -> str:
            async with EndpointClient("test-endpoint") as client:
                return await client.run({"items": [{"id": item.id, "audio": "https://example.test/a.flac"}]})

        # A backlog left with one job in flight (its client was stopped).
        job_id = asyncio.run(submit())
        with Ledger(state) as ledger:
            ledger.set_meta("options", options.to_json())
            ledger.add_items([item])
            ledger.create_submission("token1", [item.id])
            ledger.set_job_id("token1", job_id)

        assert main(["cancel", "--state", str(state)]) == 0
        assert "cancelled 1 of 1" in capsys.readouterr().out
        assert double.jobs[job_id].status == "CANCELLED"

        report = asyncio.run(BacklogRunner(options, state=state, s3_credentials=credentials).run())

    assert (report.done, report.failed) == (1, 0)
    # The cancelled job did not use up one of the item's attempts.
    assert report.items[0].attempts == 1
    assert report.items[0].job_id != job_id
