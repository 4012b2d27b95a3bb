"""The chunking sweep behind handler/longform.py's defaults: `python -m bench.sweep [--minutes M]`.

Transcribes a long recording (the corpus builder's, shortened to --minutes) with tiny.en through
transcribe_long under several chunkings, and with naive fixed windows for comparison, and prints
WER, error counts and wall time for each. On 2 cores: about 30 s per setting at 10 minutes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np

from bench.corpus import DEFAULT_WORK_DIR, SEED, build_corpus
from bench.wer import error_counts, word_error_rate
from handler.engines.base import SAMPLE_RATE, Engine, Transcript
from handler.longform import ChunkingOptions, transcribe_long


def _fixed_windows(engine: Engine, audio: np.ndarray, window_s: float) -> str:
    step = int(window_s * SAMPLE_RATE)
    windows = [audio[i : i + step] for i in range(0, audio.shape[0], step)]
    parts: list[Transcript] = []
    for begin in range(0, len(windows), 8):
        parts.extend(engine.transcribe(windows[begin : begin + 8]))
    return " ".join(part.text for part in parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--max-chunk", type=float, nargs="*", default=[10.0, 15.0, 20.0, 25.0, 30.0])
    parser.add_argument("--pad", type=float, nargs="*", default=[0.2])
    parser.add_argument("--threshold", type=float, nargs="*", default=[0.5])
    parser.add_argument("--min-silence", type=float, nargs="*", default=[0.3])
    parser.add_argument("--edge", type=float, nargs="*", default=[1.0])
    parser.add_argument("--fixed", type=float, nargs="*", default=[10.0, 30.0])
    parser.add_argument(
        "--seed", type=int, default=SEED, help="corpus seed (another seed: other variants and order)"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_WORK_DIR / "sweep.json")
    args = parser.parse_args(argv)

    from faster_whisper import decode_audio

    from handler.engines.registry import registry_from_env

    corpus = build_corpus(DEFAULT_WORK_DIR / "sweep", long_min_s=args.minutes * 60, seed=args.seed)
    engine = registry_from_env().get("tiny.en")
    audio = decode_audio(str(corpus.long_path), sampling_rate=SAMPLE_RATE)
    reference = corpus.long.text
    rows: list[dict[str, object]] = []
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def record(label: str, refs: list[str], hyps: list[str], seconds: float, **settings: object) -> None:
        counts = error_counts(refs, hyps)
        row = {
            "setting": label,
            **settings,
            "wer": round(word_error_rate(refs, hyps), 4),
            **counts,
            "wall_s": round(seconds, 1),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)

    started = time.perf_counter()
    clips = [decode_audio(str(path), sampling_rate=SAMPLE_RATE) for path in corpus.short_paths()]
    texts = [t.text for t in transcribe_long(engine, clips)]
    record(
        "short clips one by one", [item.text for item in corpus.short], texts, time.perf_counter() - started
    )

    for window in args.fixed:
        started = time.perf_counter()
        hypothesis = _fixed_windows(engine, audio, window)
        record(f"fixed {window:g} s windows", [reference], [hypothesis], time.perf_counter() - started)

    grid = itertools.product(args.max_chunk, args.pad, args.threshold, args.min_silence, args.edge)
    for max_chunk, pad, threshold, silence, edge in grid:
        options = ChunkingOptions(pad_s=pad, vad_threshold=threshold, min_silence_s=silence, edge_s=edge)
        started = time.perf_counter()
        (result,) = transcribe_long(engine, [audio], max_chunk_s=max_chunk, options=options)
        record(
            "vad",
            [reference],
            [result.text],
            time.perf_counter() - started,
            max_chunk_s=max_chunk,
            pad_s=pad,
            threshold=threshold,
            min_silence_s=silence,
            edge_s=edge,
        )
        args.out.write_text(json.dumps({"minutes": args.minutes, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
