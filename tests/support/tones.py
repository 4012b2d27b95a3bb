"""A sine tone as a 16 kHz mono 16-bit WAV, for tests whose subject is not what is said."""

from __future__ import annotations

import io
import wave

import numpy as np


def tone_wav(seconds: float, hz: float = 440.0) -> bytes:
    t = np.arange(int(seconds * 16_000)) / 16_000
    samples = (0.3 * np.sin(2 * np.pi * hz * t) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        out.writeframes(samples.tobytes())
    return buf.getvalue()
