"""`python -m bench.decode`: decode time per clip, with the worker's shortcuts and without them.

handler/audio.py reads 16 kHz mono 16-bit WAVs with numpy (handler/wav.py) and lets frames that are
already 16 kHz mono skip the resampler. This times decode_audio on the benchmark's 30 short clips
(wav, flac and mp3) both ways, in this process, and checks that both give the same samples.

    python -m bench.decode              # 5 passes over the clips
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from bench.corpus import DEFAULT_WORK_DIR, build_corpus


@contextmanager
def _without_shortcuts() -> Iterator[None]:
    """decode_audio as before the shortcuts: ffmpeg opens every file, the resampler every frame."""
    from handler import audio

    probe, direct = audio.probe_plain_wav, audio._direct_samples
    audio.probe_plain_wav = lambda path: None  # type: ignore[assignment]
    audio._direct_samples = lambda frame: None  # type: ignore[assignment]
    try:
        yield
    finally:
        audio.probe_plain_wav, audio._direct_samples = probe, direct


def _time(paths: list[Path], passes: int) -> tuple[dict[str, float], list[np.ndarray]]:
    from handler.decode import decode_audio

    seconds: dict[str, list[float]] = defaultdict(list)
    samples = [decode_audio(path, 3600.0) for path in paths]  # warm-up (ffmpeg's libraries, caches)
    for _ in range(passes):
        for path in paths:
            started = time.perf_counter()
            decode_audio(path, 3600.0)
            seconds[path.suffix.lstrip(".")].append(time.perf_counter() - started)
    return {fmt: 1000 * float(np.mean(values)) for fmt, values in seconds.items()}, samples


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--passes", type=int, default=5)
    args = parser.parse_args(argv)
    paths = build_corpus(DEFAULT_WORK_DIR).short_paths()
    with _without_shortcuts():
        before, reference = _time(paths, args.passes)
    after, samples = _time(paths, args.passes)
    same = all(np.array_equal(a, b) for a, b in zip(reference, samples, strict=True))
    counts = defaultdict(int)
    for path in paths:
        counts[path.suffix.lstrip(".")] += 1
    print(f"{'format':>6} {'clips':>5} {'ffmpeg + resampler':>19} {'with shortcuts':>15}")
    for fmt in sorted(before):
        print(f"{fmt:>6} {counts[fmt]:>5} {before[fmt]:>16.2f} ms {after[fmt]:>12.2f} ms")
    print(f"same samples both ways: {same}")


if __name__ == "__main__":
    main()
