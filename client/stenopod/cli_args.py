"""argparse types for the `stenopod` commands: each rejects a bad value with a message saying why."""

from __future__ import annotations

import argparse

ALL_FORMATS = ("json", "txt", "srt", "vtt")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def port(text: str) -> int:
    """A TCP port; 0 asks the OS for a free one."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, got {value}")
    return value


def formats(text: str) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(part.strip().lower() for part in text.split(",") if part.strip()))
    if not chosen:
        raise argparse.ArgumentTypeError(f"give at least one of {','.join(ALL_FORMATS)}")
    bad = [fmt for fmt in chosen if fmt not in ALL_FORMATS]
    if bad:
        raise argparse.ArgumentTypeError(f"{','.join(bad)} not among {','.join(ALL_FORMATS)}")
    return chosen
