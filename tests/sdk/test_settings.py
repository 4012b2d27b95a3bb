"""stenopod.settings: the client's environment, read in one place, a bad value named."""

from __future__ import annotations

from pathlib import Path

import pytest
from stenopod.cli import main as cli_main
from stenopod.settings import ClientSettings, SettingsError


def test_every_variable_lands_in_its_field() -> None:
    settings = ClientSettings.from_env(
        {
            "RUNPOD_API_KEY": "runpod-key-9",
            "RUNPOD_ENDPOINT_BASE_URL": "http://127.0.0.1:9/v2",
            "AWS_ACCESS_KEY_ID": "id",
            "AWS_SECRET_ACCESS_KEY": "very-secret",
            "AWS_ENDPOINT_URL": "http://minio.test",
            "AWS_REGION": "eu-west-1",
            "STENOPOD_PRICE_TABLE": "prices.json",
            "STENOPOD_MAX_WORKERS": "3",
            "STENOPOD_SERVE_API_KEY": "sk",
            "STENOPOD_ALLOW_PRIVATE_URLS": "1",
        }
    )
    assert (settings.runpod_api_key, settings.runpod_endpoint_base_url) == (
        "runpod-key-9",
        "http://127.0.0.1:9/v2",
    )
    assert (settings.s3_endpoint_url, settings.aws_region) == ("http://minio.test", "eu-west-1")
    assert (settings.price_table, settings.max_workers, settings.serve_api_key) == ("prices.json", 3, "sk")
    assert settings.allow_private_urls
    assert "very-secret" not in repr(settings) and "runpod-key-9" not in repr(settings)
    # S3_ENDPOINT_URL wins over AWS_ENDPOINT_URL; unset variables are None, not "".
    assert ClientSettings.from_env({"S3_ENDPOINT_URL": "a", "AWS_ENDPOINT_URL": "b"}).s3_endpoint_url == "a"
    assert ClientSettings.from_env({}) == ClientSettings()


@pytest.mark.parametrize(
    ("name", "value"),
    [("STENOPOD_MAX_WORKERS", "many"), ("STENOPOD_MAX_WORKERS", "0"), ("STENOPOD_ALLOW_PRIVATE_URLS", "yes")],
)
def test_a_bad_value_is_refused_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as raised:
        ClientSettings.from_env({name: value})
    assert str(raised.value).startswith(f"{name}={value!r}")


def test_the_cli_reports_a_bad_value_as_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STENOPOD_ALLOW_PRIVATE_URLS", "true")
    audio = tmp_path / "a.mp3"
    audio.write_bytes(b"not really audio")
    code = cli_main(
        ["transcribe", str(audio), "--output", "s3://bucket/out/", "--endpoint", "abc123", "--no-progress"]
    )
    err = capsys.readouterr().err
    assert code == 2, err
    assert "STENOPOD_ALLOW_PRIVATE_URLS='true'" in err and "Traceback" not in err
