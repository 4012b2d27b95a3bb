"""How a backlog run fails: before it starts (UsageError) or for good while it runs (BacklogError)."""

from __future__ import annotations


class UsageError(Exception):
    """The backlog cannot start as asked (bad options, an unusable output); the CLI exits 2."""


class BacklogError(Exception):
    """The run stopped for good (the endpoint refused the API key, the output store is unreachable)."""


class EndpointRefused(BacklogError):
    """The endpoint refused the API key: running again changes nothing until the key is fixed."""
