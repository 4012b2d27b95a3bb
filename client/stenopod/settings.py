"""The SDK's and CLI's settings from the environment, read in this module and nowhere else.

Every variable the client honours is a field here, parsed by ClientSettings.from_env; the rest of
client/stenopod takes the values from it. A library cannot pick one start-up moment for its caller,
so the environment is read when a value is needed (client_settings()), always through here. A bad
value raises SettingsError (a ValueError: the CLI's usage errors) naming the variable.

The one documented exception: stenopod.local.worker_env copies this process's environment into the
environment of a worker process it starts (the worker reads its own settings in handler/settings.py).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

ALLOW_PRIVATE_ENV = "STENOPOD_ALLOW_PRIVATE_URLS"
MAX_WORKERS_ENV = "STENOPOD_MAX_WORKERS"
SERVE_API_KEY_ENV = "STENOPOD_SERVE_API_KEY"
PRICE_TABLE_ENV = "STENOPOD_PRICE_TABLE"


class SettingsError(ValueError):
    """An environment variable with a value stenopod cannot use; the message names it."""


@dataclass(frozen=True)
class ClientSettings:
    # RunPod: the key endpoint calls send, and another API base than https://api.runpod.ai/v2.
    runpod_api_key: str | None = None
    runpod_endpoint_base_url: str | None = None
    # S3 (the standard AWS variables; S3_ENDPOINT_URL or AWS_ENDPOINT_URL for R2, MinIO and friends).
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    s3_endpoint_url: str | None = None
    aws_region: str | None = None
    # A JSON file of GPU -> USD per second overlaid on the built-in price table.
    price_table: str | None = None
    # `stenopod serve`: a limit on workers below the machine's own, and the API key it requires.
    max_workers: int | None = None
    serve_api_key: str | None = None
    # Jobs may name loopback and private addresses (local use only).
    allow_private_urls: bool = False

    def __repr__(self) -> str:  # secrets stay out of logs and test output
        return (
            f"ClientSettings(runpod_endpoint_base_url={self.runpod_endpoint_base_url!r}, "
            f"s3_endpoint_url={self.s3_endpoint_url!r}, max_workers={self.max_workers!r}, "
            f"allow_private_urls={self.allow_private_urls!r})"
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ClientSettings:
        env = os.environ if environ is None else environ

        def text(*names: str) -> str | None:
            for name in names:
                value = env.get(name, "").strip()
                if value:
                    return value
            return None

        return cls(
            runpod_api_key=text("RUNPOD_API_KEY"),
            runpod_endpoint_base_url=text("RUNPOD_ENDPOINT_BASE_URL"),
            aws_access_key_id=env.get("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY"),
            s3_endpoint_url=text("S3_ENDPOINT_URL", "AWS_ENDPOINT_URL"),
            aws_region=text("AWS_DEFAULT_REGION", "AWS_REGION"),
            price_table=text(PRICE_TABLE_ENV),
            max_workers=_positive_int(env, MAX_WORKERS_ENV),
            serve_api_key=text(SERVE_API_KEY_ENV),
            allow_private_urls=_switch(env, ALLOW_PRIVATE_ENV),
        )


def client_settings() -> ClientSettings:
    """The settings as the environment has them now."""
    return ClientSettings.from_env()


def _positive_int(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise SettingsError(f"{name}={raw!r}: must be a whole number of at least 1 (or unset)")
    return int(raw)


def _switch(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip()
    if raw not in ("", "0", "1"):
        raise SettingsError(f"{name}={raw!r}: must be 1 (on) or 0 (off), or unset")
    return raw == "1"
