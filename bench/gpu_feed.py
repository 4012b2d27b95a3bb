"""`python -m bench.gpu_feed` (part of `make bench`): can the worker's own pipeline keep a GPU busy?

On RunPod the engine is Parakeet on a GPU at thousands of times real time; every second it hears
must first be fetched, decoded to 16 kHz mono and planned into chunks on the worker's CPUs. This
measures that pipeline with the engine replaced by test doubles:
  no-cost      answers at once: the rate is the pipeline's ceiling
  paced-N      each call takes audio_s / N seconds, as Parakeet at N x real time would
(handler.engines.instant.PacedTestEngine), against two physical references in the same run, one
process per core: ffmpeg's CLI decoding each file to 16 kHz mono, and ffmpeg's decoder alone
through PyAV (frames decoded and dropped: no resampling, no per-file process start). Two workloads made from the real speech in tests/data:
  podcast      3 mp3s of 20 minutes, 44.1 kHz stereo, 128 kb/s
  clips        100 mp3 clips of about 12 s, 44.1 kHz stereo, 128 kb/s
Each job runs in a fresh process (python -m bench.gpu_feed --job ...) through handler.job.run_job,
its audio fetched over HTTP from a loopback server, the peak RSS of that process and its decoding
processes sampled. Prints a table and writes bench/gpu_feed_results.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from bench.corpus import BASE_CLIPS, DATA_DIR, load_clip

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "bench" / "work" / "gpu_feed"
RESULTS = REPO / "bench" / "gpu_feed_results.json"
SOURCE_RATE = 44_100
ENGINES = {"no-cost": math.inf, "paced-1000": 1000.0, "paced-2000": 2000.0}


def _speech() -> list[np.ndarray]:
    from faster_whisper import decode_audio

    clips = [load_clip(clip) for clip in BASE_CLIPS]
    clips += [decode_audio(str(path)) for path in sorted((DATA_DIR / "ljspeech").glob("*.flac"))]
    return clips


def _write_mp3(path: Path, mono16k: np.ndarray) -> None:
    """44.1 kHz stereo mp3 at 128 kb/s, as podcasts are published (the right channel a little quieter)."""
    import av
    import soxr

    high = soxr.resample(mono16k, 16_000, SOURCE_RATE).astype(np.float32)
    stereo = np.ascontiguousarray(np.stack([high, 0.9 * high]))
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libmp3lame", rate=SOURCE_RATE, layout="stereo")
        stream.bit_rate = 128_000
        step = 1152 * 64
        for begin in range(0, stereo.shape[1], step):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(stereo[:, begin : begin + step]), format="fltp", layout="stereo"
            )
            frame.sample_rate = SOURCE_RATE
            frame.pts = begin
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def build(work: Path = WORK) -> dict[str, list[Path]]:
    """The two workloads, written once (seeded, so every build is the same audio)."""
    workloads = {"podcast": [work / "podcast" / f"episode-{n}.mp3" for n in range(3)]}
    workloads["clips"] = [work / "clips" / f"clip-{n:03d}.mp3" for n in range(100)]
    if all(path.exists() for paths in workloads.values() for path in paths):
        return workloads
    clips = _speech()
    rng = np.random.default_rng(20261204)
    pause = np.zeros(8000, dtype=np.float32)
    for path in workloads["podcast"]:
        pieces: list[np.ndarray] = []
        while sum(piece.size for piece in pieces) < 1200 * 16_000:
            pieces += [clips[rng.integers(len(clips))], pause[: rng.integers(3000, 8000)]]
        _write_mp3(path, np.concatenate(pieces)[: 1200 * 16_000])
    for path in workloads["clips"]:
        pieces = []
        while sum(piece.size for piece in pieces) < 11 * 16_000:
            pieces += [clips[rng.integers(len(clips))], pause[:4000]]
        _write_mp3(path, np.concatenate(pieces)[: int(rng.uniform(10, 14) * 16_000)])
    return workloads


def audio_seconds(paths: list[Path]) -> float:
    import av

    total = 0.0
    for path in paths:
        with av.open(str(path)) as container:
            stream = container.streams.audio[0]
            total += float(stream.duration * stream.time_base)
    return total


def _frames_only(path: Path) -> None:
    import av

    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            frame.to_ndarray()


def decoder_rate(paths: list[Path], processes: int) -> float:
    """Audio seconds a second that ffmpeg's decoder alone gets through, one process per core."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(processes) as pool:
        list(pool.map(_frames_only, paths[:processes]))  # started before the clock
        started = time.perf_counter()
        list(pool.map(_frames_only, paths))
    return audio_seconds(paths) / (time.perf_counter() - started)


def ffmpeg_rate(paths: list[Path], processes: int) -> float:
    """Audio seconds a second that ffmpeg's own CLI decodes to 16 kHz mono, one process per core."""

    def decode(path: Path) -> None:
        command = ["ffmpeg", "-v", "error", "-i", str(path), "-ac", "1", "-ar", "16000", "-f", "f32le", "-"]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)

    started = time.perf_counter()
    with ThreadPoolExecutor(processes) as pool:
        list(pool.map(decode, paths))
    return audio_seconds(paths) / (time.perf_counter() - started)


def run_one_job(paths: list[Path], engine: Any) -> dict[str, Any]:
    """One job of all paths through the worker's pipeline with this engine (in this process)."""
    os.environ["STENOPOD_ALLOW_PRIVATE_URLS"] = "1"  # the loopback file server below
    from handler.decode_pool import shared_pool
    from handler.job import run_job
    from handler.settings import JobSettings, decode_processes_for

    # The paced engine stands for a GPU: decode on every core, as a GPU worker does, pool started
    # before the job as the worker starts it with itself.
    os.environ.setdefault("STENOPOD_DECODE_PROCESSES", str(os.cpu_count() or 1))
    shared_pool(decode_processes_for(JobSettings.from_env(), "cuda")).start()

    class Registry:
        def get(self, model_id: str | None) -> Any:
            return engine

        def available(self) -> list[str]:
            return [engine.model_id]

    # The files come from another process, as from another machine: a server in this one would
    # take the GIL from the job it measures.
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "http.server",
            "0",
            "--bind",
            "127.0.0.1",
            "--directory",
            str(paths[0].parent),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = server.stdout.readline().split(" port ")[1].split(" ")[0]  # "Serving HTTP on ... port N ..."
        base = f"http://127.0.0.1:{port}"
        items = [{"id": path.stem, "audio": f"{base}/{path.name}"} for path in paths]
        job = {"id": "gpu-feed", "input": {"items": items, "timestamps": "none"}}
        answer = asyncio.run(run_job(job, Registry()))
    finally:
        server.terminate()
        server.wait()
    failed = [item for item in answer.get("items", []) if item["status"] != "ok"]
    if "error" in answer or failed:
        raise RuntimeError(f"the job failed: {answer.get('error') or failed[0]}")
    audio_s = sum(item["duration_s"] for item in answer["items"])
    timings = {item["id"]: item["timings"] for item in answer["items"]}
    return {"audio_s": audio_s, **answer["worker"], "items": timings}


def measure_job(workload: str, engine: str) -> dict[str, Any]:
    """run_one_job in a fresh process, with the peak RSS of it and its decoding processes."""
    import psutil

    command = [sys.executable, "-m", "bench.gpu_feed", "--job", workload, "--engine", engine]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True)
    peak = 0
    watched = psutil.Process(process.pid)
    while process.poll() is None:
        try:
            tree = [watched, *watched.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.05)
    out, _ = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"{workload}/{engine} failed (exit {process.returncode})")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_mb"] = round(peak / 2**20)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", help=argparse.SUPPRESS)  # one measured job, in its own process
    parser.add_argument("--engine", default="instant", choices=list(ENGINES))
    parser.add_argument("--workloads", default="podcast,clips")
    args = parser.parse_args(argv)
    if not args.job and shutil.which("ffmpeg") is None:
        # The physical reference is ffmpeg's own CLI; without it the rates mean nothing.
        print("bench.gpu_feed compares with ffmpeg's CLI: put ffmpeg on PATH (Debian: apt install ffmpeg)")
        return 2
    workloads = build()
    if args.job:
        from handler.engines.instant import PacedTestEngine

        print(json.dumps(run_one_job(workloads[args.job], PacedTestEngine(ENGINES[args.engine]))))
        return 0
    cores = os.cpu_count() or 1
    table: dict[str, Any] = {"cores": cores}
    for name in args.workloads.split(","):
        paths = workloads[name]
        reference = ffmpeg_rate(paths, cores)
        decoder = decoder_rate(paths, cores)
        rows = {engine: measure_job(name, engine) for engine in ENGINES}
        table[name] = {
            "audio_s": round(audio_seconds(paths)),
            "ffmpeg_cli_audio_s_per_s": round(reference),
            "decoder_only_audio_s_per_s": round(decoder),
            "rows": rows,
        }
        print(f"\n{name}: {len(paths)} files, {table[name]['audio_s']} s of audio, {cores} cores")
        print(f"  ffmpeg's CLI to 16 kHz mono: {reference:.0f} audio s/s; its decoder alone: {decoder:.0f}")
        print(
            f"  {'engine':<12}{'job s':>7}{'audio s/s':>11}{'of CLI':>8}{'of decoder':>12}{'engine busy':>13}{'peak RSS':>10}"
        )
        for engine, row in rows.items():
            rate = row["audio_s"] / row["job_s"]
            row["audio_s_per_s"] = round(rate)
            print(
                f"  {engine:<12}{row['job_s']:>7.2f}{rate:>11.0f}{100 * rate / reference:>7.0f}%"
                f"{100 * rate / decoder:>11.0f}%{100 * row['engine_busy_share']:>12.0f}%{row['peak_rss_mb']:>8} MB"
            )
    RESULTS.write_text(json.dumps(table, indent=2) + "\n")
    print(f"written: {RESULTS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
