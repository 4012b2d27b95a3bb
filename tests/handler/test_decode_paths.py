"""The decode shortcuts give exactly what ffmpeg's resampler gives, and keep its caps and errors.

handler.wav reads 16 kHz mono 16-bit WAVs without ffmpeg, and handler.audio skips the resampler
for frames already at 16 kHz mono. Each case here compares against the full ffmpeg path (the
resampler on every frame, as before the shortcuts) on the same file: a transcript must not depend
on which path read the file.
"""

from __future__ import annotations

import itertools
import struct
from pathlib import Path

import av
import numpy as np
import pytest
from stenopod.schema import ErrorCode

from handler.decode import decode_audio
from handler.errors import StageError
from handler.wav import probe_plain_wav

RATE = 16_000


def _resampled_everywhere(path: Path) -> np.ndarray:
    """The reference: PyAV's resampler on every frame, no shortcut."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
        pieces = [
            out.to_ndarray().reshape(-1)
            for frame in itertools.chain(container.decode(stream), [None])
            for out in resampler.resample(frame)
        ]
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)


def _speechlike(seconds: float) -> np.ndarray:
    rng = np.random.default_rng(7)
    t = np.arange(int(seconds * RATE)) / RATE
    return (
        0.4 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 3 * t) + 0.05 * rng.standard_normal(t.size)
    ).astype(np.float32)


def _encode(
    path: Path, codec: str, sample_format: str, samples: np.ndarray, rate: int = RATE, layout: str = "mono"
) -> Path:
    """Write samples (channels x n, in sample_format's dtype) with PyAV's bundled ffmpeg."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        # Else PyAV converts to the codec's default format (FLAC: 16 bits) before encoding.
        stream.codec_context.format = sample_format
        frame = av.AudioFrame.from_ndarray(samples, format=sample_format, layout=layout)
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return path


def _pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def _riff(chunks: list[tuple[bytes, bytes]], data_size: int | None = None) -> bytes:
    body = b"WAVE"
    for name, payload in chunks:
        size = data_size if name == b"data" and data_size is not None else len(payload)
        body += name + struct.pack("<I", size) + payload + (b"\0" if len(payload) & 1 else b"")
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _fmt(channels: int = 1, rate: int = RATE, bits: int = 16, tag: int = 1) -> bytes:
    block = channels * bits // 8
    return struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)


def _fmt_extensible(bits: int = 16, subformat_tag: int = 1) -> bytes:
    guid = struct.pack("<H", subformat_tag) + bytes.fromhex("000000001000800000aa00389b71")
    return _fmt(tag=0xFFFE, bits=bits) + struct.pack("<HHI", 22, bits, 0x4) + guid


# --- the WAV reader ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "chunks",
    [
        [(b"fmt ", _fmt())],
        [(b"fmt ", _fmt_extensible())],
        # Metadata before the data, of odd length (padded): skipped as ffmpeg skips it.
        [(b"fmt ", _fmt()), (b"LIST", b"INFOISFT\x05\0\0\0Lavf\0")],
    ],
    ids=["pcm", "extensible-pcm", "odd-list-chunk"],
)
def test_plain_wav_reads_as_ffmpeg_does(tmp_path: Path, chunks: list[tuple[bytes, bytes]]) -> None:
    path = tmp_path / "clip.wav"
    path.write_bytes(_riff([*chunks, (b"data", _pcm16(_speechlike(2.3)))]))
    assert probe_plain_wav(path) is not None
    samples = decode_audio(path, 3600)
    reference = _resampled_everywhere(path)
    assert samples.dtype == np.float32 and samples.shape == reference.shape
    assert np.array_equal(samples, reference)


def test_a_wav_written_by_ffmpeg_takes_the_reader(tmp_path: Path) -> None:
    path = _encode(
        tmp_path / "ffmpeg.wav", "pcm_s16le", "s16", (_speechlike(1.7)[None, :] * 2**14).astype(np.int16)
    )
    assert probe_plain_wav(path) is not None
    assert np.array_equal(decode_audio(path, 3600), _resampled_everywhere(path))


@pytest.mark.parametrize(
    ("codec", "sample_format", "rate", "layout"),
    [
        ("pcm_s16le", "s16", 44_100, "mono"),
        ("pcm_s16le", "s16", RATE, "stereo"),
        ("pcm_f32le", "flt", RATE, "mono"),
        ("pcm_s32le", "s32", RATE, "mono"),
    ],
)
def test_other_wavs_go_to_ffmpeg(
    tmp_path: Path, codec: str, sample_format: str, rate: int, layout: str
) -> None:
    channels = 2 if layout == "stereo" else 1
    mono = _speechlike(1.2)
    dtype = {"s16": np.int16, "s32": np.int32, "flt": np.float32}[sample_format]
    scale = {"s16": 2**14, "s32": 2**30, "flt": 1.0}[sample_format]
    samples = np.tile((mono * scale).astype(dtype), channels)[None, :]  # packed: one plane
    path = _encode(tmp_path / "other.wav", codec, sample_format, samples, rate=rate, layout=layout)
    assert probe_plain_wav(path) is None
    decoded = decode_audio(path, 3600)
    reference = _resampled_everywhere(path)
    if rate == RATE:
        assert np.allclose(decoded, reference, atol=1e-6)  # the same downmix as ffmpeg's
    else:
        # soxr's resampler, not ffmpeg's: the same signal, its error a few percent of it at most.
        assert decoded.size == reference.size
        assert np.sqrt(np.mean((decoded - reference) ** 2)) < 0.03 * np.sqrt(np.mean(reference**2))
    assert abs(decoded.size / RATE - samples.shape[1] / channels / rate) < 0.01


def test_extensible_wav_of_another_subformat_goes_to_ffmpeg(tmp_path: Path) -> None:
    path = tmp_path / "float.wav"
    payload = _speechlike(0.5).astype("<f4").tobytes()
    fmt = _fmt_extensible(bits=32, subformat_tag=3)  # IEEE float
    path.write_bytes(_riff([(b"fmt ", fmt), (b"data", payload)]))
    assert probe_plain_wav(path) is None


def test_truncated_wav_gives_what_it_holds(tmp_path: Path) -> None:
    whole = _riff([(b"fmt ", _fmt()), (b"data", _pcm16(_speechlike(3.0)))])
    header = len(whole) - 3 * RATE * 2
    path = tmp_path / "truncated.wav"
    # The header promises 3 s; the download stopped at 1.2 s, mid-sample.
    path.write_bytes(whole[: header + int(1.2 * RATE) * 2 + 1])
    samples = decode_audio(path, 3600)
    assert samples.size == int(1.2 * RATE)
    assert np.array_equal(samples, _resampled_everywhere(path))


def test_streamed_header_without_a_length_reads_to_the_end(tmp_path: Path) -> None:
    payload = _pcm16(_speechlike(1.5))
    path = tmp_path / "live.wav"
    path.write_bytes(_riff([(b"fmt ", _fmt()), (b"data", payload)], data_size=0xFFFFFFFF))
    assert decode_audio(path, 3600).size == len(payload) // 2


def test_plain_wav_caps_and_errors(tmp_path: Path) -> None:
    long_one = tmp_path / "long.wav"
    long_one.write_bytes(_riff([(b"fmt ", _fmt()), (b"data", _pcm16(_speechlike(6.0)))]))
    with pytest.raises(StageError) as caught:
        decode_audio(long_one, max_seconds=5)
    assert caught.value.code == ErrorCode.too_long

    # No declared length: the cap holds while reading.
    live = tmp_path / "live.wav"
    live.write_bytes(_riff([(b"fmt ", _fmt()), (b"data", _pcm16(_speechlike(6.0)))], data_size=0))
    with pytest.raises(StageError) as caught:
        decode_audio(live, max_seconds=5)
    assert caught.value.code == ErrorCode.too_long

    # A header promising 2 s of audio with none after it is not silence.
    hollow = tmp_path / "hollow.wav"
    hollow.write_bytes(_riff([(b"fmt ", _fmt()), (b"data", b"")], data_size=2 * RATE * 2))
    with pytest.raises(StageError) as caught:
        decode_audio(hollow, 3600)
    assert caught.value.code == ErrorCode.not_audio
    assert str(tmp_path) not in caught.value.message


# --- frames already at 16 kHz mono skip the resampler ---------------------------------------------


@pytest.mark.parametrize(
    ("name", "codec", "sample_format", "scale", "dtype"),
    [
        ("clip.flac", "flac", "s16", 2**14, np.int16),
        ("clip24.flac", "flac", "s32", 2**30, np.int32),
        ("clip.mp3", "libmp3lame", "fltp", 1.0, np.float32),
    ],
)
def test_direct_frames_match_the_resampler(
    tmp_path: Path, name: str, codec: str, sample_format: str, scale: float, dtype: type
) -> None:
    samples = (_speechlike(2.1) * scale).astype(dtype)[None, :]
    path = _encode(tmp_path / name, codec, sample_format, samples)
    decoded = decode_audio(path, 3600)
    assert decoded.dtype == np.float32
    assert np.array_equal(decoded, _resampled_everywhere(path))
