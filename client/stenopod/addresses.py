"""Which addresses a job may make the worker reach, and which URLs the worker can parse at all.

Shared by the worker's HTTP guard (handler/netguard.py), the S3 stores it opens with an endpoint a
job chose (stenopod.s3_guard) and the job schema, which refuses a URL nothing can parse up front,
naming the field, instead of letting it fail deep inside a fetch.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import unquote

from stenopod.settings import ALLOW_PRIVATE_ENV, client_settings

__all__ = ["ALLOW_PRIVATE_ENV", "allow_private_urls", "is_forbidden_address", "url_problem"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Letters, digits, '-' and '_' in dot-separated labels (IDNA names arrive as xn-- here), with one
# optional trailing dot. Anything else in a host (spaces, '%') can only fail in the resolver.
_HOST_NAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?", re.IGNORECASE)


def allow_private_urls() -> bool:
    """STENOPOD_ALLOW_PRIVATE_URLS=1: jobs may name loopback and private addresses (local use only)."""
    return client_settings().allow_private_urls


def is_forbidden_address(address: IPAddress) -> bool:
    """Anything but a public unicast address: loopback, private, link-local, multicast, reserved..."""
    if isinstance(address, ipaddress.IPv6Address):
        # ::ffff:127.0.0.1 and 64:ff9b::/96-style embeddings reach the IPv4 address they carry.
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None and is_forbidden_address(embedded):
            return True
    return (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    )


def url_problem(url: str) -> str | None:
    """Why the worker could not fetch url as written (unparseable, no host, bad port), or None.

    The parser is httpx's, the one that fetches: what it refuses (an octal IPv4 spelling such as
    0177.0.0.1, say) would otherwise surface mid-fetch as an unexpected exception.
    """
    import httpx  # ~50 ms to import: only a check of an http(s) URL pays for it, once

    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as error:
        return f"cannot be parsed ({error})"  # httpx quotes only the offending part, never the query
    if parsed.scheme not in ("http", "https"):
        return "is not an http(s) URL"
    host = parsed.raw_host.decode("ascii", "replace")
    if not host:
        return "has no host"
    if parsed.port is not None and not 0 < parsed.port < 65536:
        return f"has port {parsed.port}, outside 1-65535"
    if ":" in host:  # an IPv6 literal (httpx checked it; a zone id comes percent-encoded)
        try:
            ipaddress.ip_address(unquote(host))
        except ValueError:
            return "has an invalid IPv6 address"
    elif not _HOST_NAME.fullmatch(host):
        return "has an invalid host name"
    return None
