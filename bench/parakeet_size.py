"""`python -m bench.parakeet_size`: the Parakeet path's speed and GPU memory at Parakeet v3's size.

Builds a randomly initialised FastConformer-TDT with Parakeet TDT 0.6B v3's configuration
(bench/tiny_nemo.PARAKEET_V3: 24 layers, d_model 1024, 8,192 pieces, ~0.6 B parameters)
and runs real speech from the benchmark corpus through the worker's own NemoEngine (on a GPU bf16
weights under bf16 autocast, greedy_batch TDT decoding, batches sorted by duration) at each batch
size asked for (issue 5: 1/16/64/128). Random weights cost the encoder what trained ones cost; the greedy decoder
of a random joint may emit more or fewer symbols than a trained one would, so the encoder alone
(preprocessor + encoder forward, which trained weights would not change) is timed beside the
whole transcribe().

    python -m bench.parakeet_size --device cuda                                # on a GPU
    python -m bench.parakeet_size --device cpu --size tiny --batches 1 4       # a smoke run here

Prints a table and writes bench/parakeet_size.json (--out). The model is built once into
bench/work/ (about 2.4 GB at full size) and reused.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.corpus import DEFAULT_WORK_DIR, build_corpus
from handler.engines.base import SAMPLE_RATE

MIN_AUDIOS = 16


def _recording(work: Path, speech: Path | None, min_s: float) -> np.ndarray:
    """Real speech: a plain 16 kHz WAV given with --speech (what bench.gpu_kit carries to the GPU
    machine, read without PyAV), or the corpus's long recording, built here."""
    if speech is not None:
        from handler.wav import probe_plain_wav, read_plain_wav

        layout = probe_plain_wav(speech)
        if layout is None:
            raise SystemExit(f"--speech: {speech} is not a 16 kHz mono 16-bit PCM WAV")
        return read_plain_wav(speech, layout)
    from handler.decode import decode_audio

    corpus = build_corpus(work, long_min_s=max(600.0, min_s))
    return decode_audio(corpus.long_path, 4 * 3600.0)


def _speech(recording: np.ndarray, seconds: float, count: int) -> list[np.ndarray]:
    """`count` audios of `seconds` each, cut from the recording at evenly spaced starts (they
    overlap when the recording is shorter than count x seconds; each is still real speech)."""
    length = int(seconds * SAMPLE_RATE)
    if recording.size < length:
        raise SystemExit(f"the speech is {recording.size / SAMPLE_RATE:.0f} s, shorter than {seconds} s")
    starts = np.linspace(0, recording.size - length, num=count).astype(int)
    return [np.ascontiguousarray(recording[start : start + length]) for start in starts]


def _long_audio(recording: np.ndarray, seconds: float) -> np.ndarray:
    """One recording of `seconds`: the speech repeated end to end as often as needed."""
    length = int(seconds * SAMPLE_RATE)
    return np.ascontiguousarray(np.tile(recording, -(-length // recording.size))[:length])


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def _encoder_seconds(engine: Any, audios: list[np.ndarray], batch: int) -> float:
    """Wall time of preprocessor + encoder over the audios in batches, as NemoEngine's autocast runs them."""
    import torch

    model = engine.model
    device = next(model.parameters()).device
    started = time.perf_counter()
    with torch.inference_mode(), engine._autocast():
        for start in range(0, len(audios), batch):
            chunk = audios[start : start + batch]
            signal = torch.from_numpy(np.stack(chunk)).to(device)
            lengths = torch.full((len(chunk),), signal.shape[1], device=device, dtype=torch.long)
            features, feature_lengths = model.preprocessor(input_signal=signal, length=lengths)
            model.encoder(audio_signal=features, length=feature_lengths)
    _sync(engine.device)
    return time.perf_counter() - started


def measure(engine: Any, audios: list[np.ndarray], batch: int) -> dict[str, Any]:
    import torch

    engine.batch_size = batch
    cuda = engine.device == "cuda"
    # Two batches' worth at least, and a few more at batch 1, where one audio says little.
    audios = audios[: max(2 * batch, MIN_AUDIOS)]
    engine.transcribe(audios[:batch])  # warm-up at this batch size (cuDNN plans, allocator)
    _encoder_seconds(engine, audios[:batch], batch)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    audio_s = sum(audio.size for audio in audios) / SAMPLE_RATE
    _sync(engine.device)
    started = time.perf_counter()
    transcripts = engine.transcribe(audios)
    _sync(engine.device)
    wall = time.perf_counter() - started
    encoder = _encoder_seconds(engine, audios, batch)
    row: dict[str, Any] = {
        "batch": batch,
        "audios": len(audios),
        "audio_s": round(audio_s, 1),
        "transcribe_s": round(wall, 3),
        "rtfx": round(audio_s / wall, 1),
        "encoder_s": round(encoder, 3),
        "encoder_rtfx": round(audio_s / encoder, 1),
        "words_out": sum(len(t.text.split()) for t in transcripts),
    }
    if cuda:
        peak = torch.cuda.max_memory_allocated()
        longest = max(audio.size for audio in audios) / SAMPLE_RATE
        row["gpu_peak_gib"] = round(peak / 2**30, 2)
        row["gpu_weights_gib"] = round(base / 2**30, 2)
        # What gpu_memory.NEMO_BYTES_PER_AUDIO_S estimates per second of audio in a batch.
        row["bytes_per_batch_audio_s"] = round((peak - base) / (batch * longest))
    return row


def measure_long(engine: Any, audio: np.ndarray) -> dict[str, Any]:
    """One long recording through the engine whole (NemoEngine switches to local attention past
    STENOPOD_LOCAL_ATTENTION_S): RTFx and peak GPU memory."""
    import torch

    cuda = engine.device == "cuda"
    engine.transcribe([audio[: 60 * SAMPLE_RATE]])  # warm-up
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    seconds = audio.size / SAMPLE_RATE
    _sync(engine.device)
    started = time.perf_counter()
    (transcript,) = engine.transcribe([audio])
    _sync(engine.device)
    wall = time.perf_counter() - started
    row: dict[str, Any] = {
        "long_audio_s": round(seconds, 1),
        "attention": engine.attention_model,
        "transcribe_s": round(wall, 3),
        "rtfx": round(seconds / wall, 1),
        "words_out": len(transcript.text.split()),
    }
    if cuda:
        peak = torch.cuda.max_memory_allocated()
        row["gpu_peak_gib"] = round(peak / 2**30, 2)
        row["bytes_per_audio_s"] = round((peak - base) / seconds)
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--size", default="parakeet-v3", choices=["parakeet-v3", "tiny"])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64, 128])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each audio")
    parser.add_argument(
        "--audios",
        type=int,
        default=0,
        help="audios cut from the speech (0: 2 x the largest batch); each batch size takes 2 x its batch, at least 16",
    )
    parser.add_argument(
        "--long", type=float, nargs="*", default=[600.0, 3600.0], help="seconds of each long recording"
    )
    parser.add_argument(
        "--speech", type=Path, help="a 16 kHz mono 16-bit WAV of speech (default: the corpus)"
    )
    parser.add_argument(
        "--no-feed",
        action="store_true",
        help="skip the podcast workload (bench.gpu_feed) through this engine, with its busy share",
    )
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK_DIR)
    parser.add_argument("--out", type=Path, default=Path("bench/parakeet_size.json"))
    args = parser.parse_args(argv)

    import torch

    from bench.tiny_nemo import PARAKEET_V3, TINY, build_tdt_nemo
    from handler.engines.gpu_memory import NEMO_BYTES_PER_AUDIO_S
    from handler.engines.parakeet import NemoEngine

    size = PARAKEET_V3 if args.size == "parakeet-v3" else TINY
    path = args.work / f"random-tdt-{args.size}.nemo"
    if not path.exists():
        started = time.perf_counter()
        build_tdt_nemo(path, size=size)
        print(f"built {path} in {time.perf_counter() - started:.0f} s", flush=True)
    started = time.perf_counter()
    engine = NemoEngine(args.size, path, device=args.device)
    parameters = sum(p.numel() for p in engine.model.parameters())
    print(
        f"loaded {parameters / 1e6:.0f} M parameters ({engine.dtype}) on {args.device}"
        f" in {time.perf_counter() - started:.0f} s"
    )
    recording = _recording(args.work, args.speech, args.seconds * 2)
    audios = _speech(recording, args.seconds, args.audios or 2 * max(args.batches))

    rows: list[dict[str, Any]] = []
    long_rows: list[dict[str, Any]] = []
    feed_rows: list[dict[str, Any]] = []
    result = {
        "command": " ".join(["python -m bench.parakeet_size", *(sys.argv[1:] if argv is None else argv)]),
        "device": torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu",
        "model": {"size": args.size, "parameters": parameters, "config": size.__dict__},
        "weights_dtype": engine.dtype,
        "cuda_graph_decoder": bool(engine.model.cfg.decoding.greedy.use_cuda_graph_decoder),
        "audio_s_each": args.seconds,
        "estimate_bytes_per_audio_s": NEMO_BYTES_PER_AUDIO_S,
        "rows": rows,
        "long_rows": long_rows,
        "feed_rows": feed_rows,
    }

    def record(into: list[dict[str, Any]], key: dict[str, Any], run: Any) -> None:
        # One device call is all a GPU session gets: a row that fails (out of memory at batch
        # 128, say) is recorded and the rest still runs, and the file is rewritten after every
        # row, so what was measured comes back even if the call's time runs out.
        try:
            row = run()
        except Exception as error:  # a benchmark row's failure is a result too
            row = {**key, "error": f"{type(error).__name__}: {str(error)[:300]}"}
        into.append(row)
        print(json.dumps(row), flush=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")

    for batch in args.batches:
        record(rows, {"batch": batch}, functools.partial(measure, engine, audios, batch))
    for seconds in args.long:
        audio = _long_audio(recording, seconds)
        record(long_rows, {"long_audio_s": seconds}, functools.partial(measure_long, engine, audio))

    if not args.no_feed:
        # The worker's whole pipeline (fetch, decode, plan, engine) on 3 podcast-like mp3s: how busy
        # this GPU stays behind this host's CPUs (engine_busy_share), the question bench.gpu_feed
        # answers with a paced test double elsewhere.
        from bench.gpu_feed import build, run_one_job

        def feed() -> dict[str, Any]:
            return {"workload": "podcast", **run_one_job(build()["podcast"], engine)}

        record(feed_rows, {"workload": "podcast"}, feed)

    print(f"\n{'batch':>5} {'RTFx':>8} {'encoder RTFx':>13} {'GPU peak GiB':>13} {'B per batch audio-s':>20}")
    for row in rows:
        print(
            f"{row['batch']:>5} {row.get('rtfx', 'failed'):>8} {row.get('encoder_rtfx', '-'):>13} "
            f"{row.get('gpu_peak_gib', '-'):>13} {row.get('bytes_per_batch_audio_s', '-'):>20}"
        )
    if long_rows:
        print(
            f"\n{'long audio s':>12} {'attention':>18} {'RTFx':>8} {'GPU peak GiB':>13} {'B per audio-s':>14}"
        )
    for row in long_rows:
        print(
            f"{row['long_audio_s']:>12} {row.get('attention', '-'):>18} {row.get('rtfx', 'failed'):>8} "
            f"{row.get('gpu_peak_gib', '-'):>13} {row.get('bytes_per_audio_s', '-'):>14}"
        )
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
