"""The worker's submission claims (handler/submission.py) on a local folder and on S3 (moto)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from stenopod.storage import LocalStore, S3Credentials, S3Store
from stenopod.submission_record import submission_key

from handler.submission import claim_submission, read_submission, record_submission_result


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalStore(tmp_path / "out")
    moto = request.getfixturevalue("moto_s3")
    bucket = request.getfixturevalue("s3_bucket")
    return S3Store(bucket, "transcripts/", S3Credentials(endpoint_url=moto.endpoint_url))


def test_first_claim_wins_and_a_second_job_learns_the_first(store):
    assert claim_submission(store, "tok", "job-1") is None
    assert claim_submission(store, "tok", "job-2") == "job-1"
    # The same job claiming again (RunPod retried it, a worker died and it was requeued) goes on.
    assert claim_submission(store, "tok", "job-1") is None
    assert read_submission(store, "tok").state == "started"


def test_result_replaces_the_claim_without_text_or_segments(store):
    claim_submission(store, "tok", "job-1")
    output = {
        "model": "tiny.en",
        "items": [
            {
                "id": "a",
                "status": "ok",
                "model": "tiny.en",
                "language": "en",
                "duration_s": 11.0,
                "text": "ask not what your country can do for you",
                "segments": [{"id": 0, "start": 0.0, "end": 11.0, "text": "..."}],
                "outputs": {"txt": "s3://b/a.txt"},
            },
            {"id": "b", "status": "error", "error": {"code": "not_audio", "message": "an HTML page"}},
        ],
    }
    record_submission_result(store, "tok", "job-1", output)
    record = json.loads(store.get_bytes(submission_key("tok")))
    assert record["state"] == "done" and record["job_id"] == "job-1"
    assert [item["id"] for item in record["items"]] == ["a", "b"]
    assert "text" not in record["items"][0] and "segments" not in record["items"][0]
    assert record["items"][0]["outputs"] == {"txt": "s3://b/a.txt"}
    assert record["items"][1]["error"]["code"] == "not_audio"
    # A late duplicate still defers to the job that did the work.
    assert claim_submission(store, "tok", "job-2") == "job-1"


def test_racing_claims_have_exactly_one_winner(store):
    def claim(n: int) -> str | None:
        return claim_submission(store, "race", f"job-{n}")

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(claim, range(8)))
    winners = [n for n, answer in enumerate(answers) if answer is None]
    assert len(winners) == 1
    assert read_submission(store, "race").job_id == f"job-{winners[0]}"
    assert all(answer == f"job-{winners[0]}" for answer in answers if answer is not None)


def test_unknown_token_reads_as_none(store):
    assert read_submission(store, "nobody") is None
