from stenopod.schema import ErrorCode, JobError, JobInput, default_item_id, parse_job_input


def test_single_audio_gets_an_id_from_its_url() -> None:
    parsed = parse_job_input({"audio": "https://host/podcasts/ep1.mp3?sig=abc"})
    assert isinstance(parsed, JobInput)
    assert [(i.id, i.audio) for i in parsed.job_items()] == [("ep1", "https://host/podcasts/ep1.mp3?sig=abc")]


def test_unknown_field_and_bad_scheme_are_named() -> None:
    parsed = parse_job_input({"audio": "file:///etc/passwd", "speed": 2})
    assert isinstance(parsed, JobError)
    assert parsed.code is ErrorCode.invalid_input
    assert set(parsed.fields or []) == {"input.audio", "input.speed"}


def test_callback_secret_never_echoed_in_errors() -> None:
    secret = "s3cr3t-value-that-must-not-leak"
    parsed = parse_job_input({"audio": "https://h/a.mp3", "callback": {"url": "ftp://x", "secret": secret}})
    assert isinstance(parsed, JobError)
    assert secret not in parsed.to_runpod_error()
    assert "input.callback.url" in (parsed.fields or [])


def test_runpod_error_round_trip() -> None:
    error = JobError(code=ErrorCode.model_unavailable, message="no such model")
    assert JobError.from_runpod_error(error.to_runpod_error()) == error
    assert JobError.from_runpod_error("Traceback ...").code is ErrorCode.internal_error


def test_default_item_id_is_key_safe() -> None:
    assert default_item_id("https://h/a b/..%2F..%2Fetc.mp3") not in ("", "..")
    assert default_item_id("data:audio/wav;base64,AAAA") == "audio"


def test_docs_copy_of_the_schema_is_current(capsys) -> None:
    """docs/schema.json is what console users read: it must match the code (regenerate: make schema)."""
    import json
    from pathlib import Path

    from stenopod.cli import main

    assert main(["schema", "--all"]) == 0
    printed = json.loads(capsys.readouterr().out)
    documented = json.loads((Path(__file__).parent.parent / "docs" / "schema.json").read_text())
    assert printed == documented


def test_item_ids_may_name_folders_but_never_climb_out_of_the_prefix() -> None:
    for good in ("ep004/stereo", "2024/Season-1/ep1.part2", "a" * 128):
        parsed = parse_job_input({"items": [{"id": good, "audio": "https://h/a.mp3"}]})
        assert isinstance(parsed, JobInput), good
    bad_ids = ("/ep1", "ep1/", "a//b", "a/../b", "../a", "a/./b", "a/.b", "a\\b", "a/b\n", "a" * 129)
    # A folder named like a transcript would take the place of another item's file.
    for bad in (*bad_ids, "ep.json/x", "a/EP.Srt/b"):
        parsed = parse_job_input({"items": [{"id": bad, "audio": "https://h/a.mp3"}]})
        assert isinstance(parsed, JobError) and parsed.fields == ["input.items.0.id"], bad
    # A submission token names one record file: no folders there.
    parsed = parse_job_input({"audio": "https://h/a.mp3", "submission": "a/b"})
    assert isinstance(parsed, JobError) and parsed.fields == ["input.submission"]
