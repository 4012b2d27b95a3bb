"""Signed callbacks: the worker signs each POST, the receiver verifies it with the shared secret.

Headers:
    X-Stenopod-Timestamp: <unix seconds>
    X-Stenopod-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>

The timestamp is inside the signed text, so a captured request cannot be replayed with a fresh
timestamp, and verify() refuses timestamps outside a window, so it cannot be replayed later either.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

TIMESTAMP_HEADER = "X-Stenopod-Timestamp"
SIGNATURE_HEADER = "X-Stenopod-Signature"
SCHEME = "v1"
DEFAULT_TOLERANCE_S = 300


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of f"{timestamp}.{body}" under secret."""
    message = str(int(timestamp)).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def signature_headers(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The two headers a signed POST carries."""
    ts = int(time.time()) if timestamp is None else int(timestamp)
    return {TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: f"{SCHEME}={sign(secret, ts, body)}"}


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """True when headers carry a valid v1 signature of body made within tolerance_s of now.

    Header names are matched case-insensitively (HTTP servers differ). Several comma-separated
    v1= values are accepted, so a sender can sign with an old and a new secret while rotating.
    """
    lowered = {key.lower(): value for key, value in headers.items()}
    raw_ts = lowered.get(TIMESTAMP_HEADER.lower(), "").strip()
    raw_sig = lowered.get(SIGNATURE_HEADER.lower(), "")
    if not raw_ts.isdigit() or not raw_sig:
        return False
    timestamp = int(raw_ts)
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        return False
    expected = sign(secret, timestamp, body)
    valid = False
    for part in raw_sig.split(","):
        scheme, _, value = part.strip().partition("=")
        # compare_digest on every candidate: the time taken does not reveal which one matched.
        if scheme == SCHEME and hmac.compare_digest(value.strip().encode(), expected.encode()):
            valid = True
    return valid
