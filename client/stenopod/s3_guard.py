"""An S3 endpoint a job chose (RunPod's s3Config.endpointUrl): checked once, then pinned.

Left unchecked, a job could point the worker's boto3 at its own loopback or the private network
and have it read from there (s3:// audio) or write there (an s3:// output). The endpoint is
resolved when the job's store opens; a loopback, private, link-local or reserved address refuses
it (ForbiddenEndpoint) unless STENOPOD_ALLOW_PRIVATE_URLS=1. From then on boto3 connects only to
the addresses that were checked, for every request, retry and redirect: a connection to another
host is refused and the name is never resolved again, so DNS rebinding has no window. TLS still
verifies the certificate against the endpoint's name. The worker's own endpoint (S3_ENDPOINT_URL,
set by the operator) is trusted and never comes here.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .addresses import ALLOW_PRIVATE_ENV, allow_private_urls, is_forbidden_address
from .storage import S3Credentials, StorageError

FIELD = "s3Config.endpointUrl"


class ForbiddenEndpoint(StorageError):
    """The job's S3 endpoint is not a public http(s) address; the message names the field."""


@dataclass(frozen=True)
class PinnedEndpoint:
    host: str  # lower case, no trailing dot, no IPv6 brackets
    port: int
    addresses: tuple[str, ...]  # every address the host resolved to, all of them checked


def check_job_endpoint(
    credentials: S3Credentials, allow_private: bool | None = None
) -> PinnedEndpoint | None:
    """The checked endpoint to pin, or None: the operator's endpoint, AWS's default, or allowed.

    allow_private: the worker passes its own setting (read at its start); None reads the client's."""
    if allow_private is None:
        allow_private = allow_private_urls()
    if not credentials.from_job or not credentials.endpoint_url or allow_private:
        return None
    return check_endpoint(credentials.endpoint_url)


def check_endpoint(url: str) -> PinnedEndpoint:
    """Resolve the endpoint's host and check every address; ForbiddenEndpoint when one is not public."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError:
        raise ForbiddenEndpoint(f"{FIELD}: not a valid URL") from None
    host = (parts.hostname or "").rstrip(".")
    if parts.scheme.lower() not in ("http", "https") or not host:
        raise ForbiddenEndpoint(f"{FIELD}: must be an http(s)://host URL")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise StorageError(f"{FIELD}: cannot resolve {host}: {getattr(error, 'strerror', error)}") from None
    addresses = tuple(dict.fromkeys(str(info[4][0]) for info in infos))
    # All of them, not just the first: a name with a public and a private address must not reach
    # the private one on a later connection.
    for address in addresses:
        if is_forbidden_address(ipaddress.ip_address(address.split("%", 1)[0])):
            raise ForbiddenEndpoint(
                f"{FIELD}: {host} resolves to {address}, a loopback, private, link-local or reserved "
                f"address (the worker's {ALLOW_PRIVATE_ENV}=1 allows it)"
            )
    return PinnedEndpoint(host, port, addresses)


def pin_client(client: Any, endpoint: PinnedEndpoint) -> None:
    """Make a boto3 client connect only to endpoint's checked addresses."""
    from botocore.awsrequest import AWSHTTPConnectionPool, AWSHTTPSConnectionPool

    try:
        # botocore has no public hook for how it connects. Its session builds its pools (proxy
        # pools too) from this dict, so pools of pinned connections replace the stock ones.
        pools = client._endpoint.http_session._pool_classes_by_scheme
    except AttributeError:
        raise StorageError(f"{FIELD}: this botocore cannot be pinned to a checked address") from None
    pools["http"] = _pinned_pool(AWSHTTPConnectionPool, endpoint)
    pools["https"] = _pinned_pool(AWSHTTPSConnectionPool, endpoint)


def _pinned_pool(base: Any, endpoint: PinnedEndpoint) -> type:
    from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
    from urllib3.util.connection import create_connection

    class PinnedConnection(base.ConnectionCls):
        def _new_conn(self) -> socket.socket:
            host = self._dns_host.rstrip(".").strip("[]").lower()
            if (host, self.port) != (endpoint.host, endpoint.port):
                # A redirect (or a proxy) elsewhere: only the checked endpoint is reachable.
                raise NewConnectionError(self, f"{host}:{self.port} is not the job's S3 endpoint")
            error: OSError | None = None
            for address in endpoint.addresses:
                try:
                    return create_connection(
                        (address, self.port),
                        self.timeout,
                        source_address=self.source_address,
                        socket_options=self.socket_options,
                    )
                except TimeoutError as timeout:
                    raise ConnectTimeoutError(self, f"connecting to {host} timed out") from timeout
                except OSError as failure:
                    error = failure
            raise NewConnectionError(self, f"cannot connect to {host}: {error}")

    return type(f"Pinned{base.__name__}", (base,), {"ConnectionCls": PinnedConnection})
