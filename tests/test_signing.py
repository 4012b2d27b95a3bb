"""Callback signatures: what the worker sends verifies; anything altered, stale or unsigned does not."""

from __future__ import annotations

import hashlib
import hmac

from stenopod.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign, signature_headers, verify

SECRET = "s3cr3t-for-signing-tests"
BODY = b'{"id":"ep1","status":"ok"}'


def test_sign_is_hmac_sha256_of_timestamp_dot_body() -> None:
    expected = hmac.new(SECRET.encode(), b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, 1700000000, BODY) == expected


def test_headers_from_signature_headers_verify() -> None:
    headers = signature_headers(SECRET, BODY, timestamp=1700000000)
    assert headers[TIMESTAMP_HEADER] == "1700000000"
    assert headers[SIGNATURE_HEADER].startswith("v1=")
    assert verify(SECRET, headers, BODY, now=1700000010)


def test_header_names_match_case_insensitively() -> None:
    headers = {k.lower(): v for k, v in signature_headers(SECRET, BODY, timestamp=1700000000).items()}
    assert verify(SECRET, headers, BODY, now=1700000000)


def test_tampered_body_wrong_secret_or_missing_headers_fail() -> None:
    headers = signature_headers(SECRET, BODY, timestamp=1700000000)
    assert not verify(SECRET, headers, BODY + b" ", now=1700000000)
    assert not verify("another-secret-value", headers, BODY, now=1700000000)
    assert not verify(SECRET, {TIMESTAMP_HEADER: "1700000000"}, BODY, now=1700000000)
    assert not verify(SECRET, {SIGNATURE_HEADER: headers[SIGNATURE_HEADER]}, BODY, now=1700000000)
    assert not verify(SECRET, {**headers, TIMESTAMP_HEADER: "soon"}, BODY, now=1700000000)


def test_timestamp_cannot_be_swapped_for_a_fresh_one() -> None:
    headers = signature_headers(SECRET, BODY, timestamp=1700000000)
    replayed = {**headers, TIMESTAMP_HEADER: "1700000900"}
    assert not verify(SECRET, replayed, BODY, now=1700000900)


def test_replay_window_is_enforced_both_ways() -> None:
    headers = signature_headers(SECRET, BODY, timestamp=1700000000)
    assert verify(SECRET, headers, BODY, tolerance_s=300, now=1700000300)
    assert not verify(SECRET, headers, BODY, tolerance_s=300, now=1700000301)
    assert not verify(SECRET, headers, BODY, tolerance_s=300, now=1699999699)


def test_any_of_several_v1_signatures_is_accepted_during_rotation() -> None:
    good = sign(SECRET, 1700000000, BODY)
    headers = {TIMESTAMP_HEADER: "1700000000", SIGNATURE_HEADER: f"v1={'0' * 64}, v1={good}"}
    assert verify(SECRET, headers, BODY, now=1700000000)
    assert not verify(SECRET, {**headers, SIGNATURE_HEADER: f"v0={good}"}, BODY, now=1700000000)
