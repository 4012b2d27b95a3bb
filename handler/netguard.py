"""Outbound HTTP that cannot be pointed at the worker's own network (SSRF guard).

A job names URLs the worker fetches (audio) or POSTs to (callbacks). Left unchecked, a job could
make the worker read cloud metadata (169.254.169.254), loopback services or the private network.
Every TCP connection the worker opens for a job goes through GuardedBackend: it resolves the host
itself, refuses any non-public address, and connects to the address it checked. Checking at
connect time covers every redirect hop and every retry, and connecting to the checked address
leaves no window for DNS rebinding. TLS still verifies the certificate against the URL's host name.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import ssl
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

import httpcore
import httpx

# The address policy lives in the SDK, shared with the guard on a job's S3 endpoint (stenopod.s3_guard).
from stenopod.addresses import is_forbidden_address, url_problem
from stenopod.schema import ErrorCode

from .errors import StageError


class ForbiddenAddress(Exception):
    """The host resolves to an address a job may not reach."""


def redact_url(url: str) -> str:
    """The URL without user info, query string or fragment: safe to show (presigned URLs carry keys)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # bad brackets, a port that is not a number or out of range
        return "<unparseable URL>"
    if parts.scheme.lower() == "data":
        return "data:..."
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal needs its brackets back
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def resolve_checked(host: str, port: int, allow_private: bool) -> list[str]:
    """The addresses of host, each one checked; ForbiddenAddress if any is not public.

    Refusing when *any* address is private (not just the first) stops a name that resolves to both
    a public and a private address from reaching the private one on a later attempt.
    """
    # "127.0.0.1." and "localhost." name the same host as without the dot, but some resolvers
    # refuse the dotted form: the guard must see the address either way.
    host = host.rstrip(".") or host
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise httpcore.ConnectError(f"cannot resolve {host}: {error.strerror}") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not allow_private:
        for text in addresses:
            if is_forbidden_address(ipaddress.ip_address(text.split("%", 1)[0])):
                raise ForbiddenAddress(
                    f"{host} resolves to {text}, a loopback, private, link-local or reserved address"
                )
    return addresses


class GuardedBackend(httpcore.SyncBackend):
    """httpcore's socket backend, connecting only to checked addresses."""

    def __init__(self, allow_private: bool) -> None:
        self.allow_private = allow_private

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        last_error: Exception | None = None
        for address in resolve_checked(host, port, self.allow_private):
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                last_error = error
        assert last_error is not None  # getaddrinfo never returns an empty list without raising
        raise last_error


@functools.cache
def _shared_ssl_context() -> ssl.SSLContext:
    """One verifying TLS context for every fetch: building one loads the CA bundle (~20 ms of CPU),
    which per fetch was most of the cost of getting a short clip over a fast network."""
    return httpx.create_ssl_context(trust_env=False)


class GuardedTransport(httpx.HTTPTransport):
    """httpx's transport over GuardedBackend. No proxies: a proxy would connect on our behalf."""

    def __init__(self, allow_private: bool) -> None:
        ssl_context = _shared_ssl_context()
        super().__init__(verify=ssl_context, trust_env=False)
        # httpx has no public hook for the network backend; the pool it builds is replaced by an
        # identical one whose backend is guarded (same defaults as httpx.HTTPTransport).
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=100,
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
            network_backend=GuardedBackend(allow_private),
        )


def guarded_client(timeout: httpx.Timeout, allow_private: bool) -> httpx.Client:
    """An httpx client for job-supplied URLs: guarded, no env proxies, redirects left to the caller."""
    return httpx.Client(
        transport=GuardedTransport(allow_private),
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
        headers={"User-Agent": "stenopod-worker"},
    )


def check_scheme(url: str, schemes: tuple[str, ...] = ("http", "https")) -> None:
    """Refuse a URL (e.g. a redirect target) whose scheme the worker must not follow."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme not in schemes:
        raise StageError(
            ErrorCode.url_forbidden, f"{redact_url(url)}: scheme {scheme or '(none)'!r} is not allowed"
        )


def check_url(url: str, field: str, code: ErrorCode = ErrorCode.invalid_input) -> None:
    """Refuse, before any network work, an http(s) URL the worker cannot parse, naming the field.

    The job's own URL is invalid_input; a redirect's target (the server's choice) is url_forbidden.
    """
    check_scheme(url)
    problem = url_problem(url)
    if problem is not None:
        raise StageError(code, f"{field}: {redact_url(url)} {problem}")
