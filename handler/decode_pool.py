"""Decoding and chunk planning in processes of their own, one per core.

Decoding holds the GIL for most of its time (PyAV's frame loop, the downmix): two threads decoded
two podcasts more slowly than one did. A GPU worker must decode every second it transcribes, on
every core RunPod gives it, so an item's audio is decoded, and its chunks planned, in a process of
this pool; the job's event loop and the engine's threads stay free. A long file's stretches are
written straight into memory the job's process maps (handler.shared_samples); a short file's
samples come back pickled.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from .chunking import Chunk, plan_audio
from .decode import SAMPLE_RATE, decode_audio, peak, too_long
from .decode_segments import Layout, SeamMismatch, StretchJoin, decode_stretch, plan_segments

log = logging.getLogger("stenopod.handler.decode_pool")
T = TypeVar("T")


@dataclass
class Prepared:
    """An item's decoded audio, where the engine call will cut it, and what each step took."""

    audio: np.ndarray
    chunks: list[Chunk]
    decode_s: float
    plan_s: float
    peak: float  # the loudest sample: silence is answered without the engine (handler.engine_calls)


def prepare_audio(
    path: str, max_seconds: float, bound: float | None, whole: bool = False
) -> Prepared | Layout:
    """Decode path and plan its chunks (runs in a pool process); for a file long enough to decode
    in stretches (and whole=False), only its Layout, for the caller to spread over the pool."""
    if not whole:
        layout = plan_segments(Path(path))
        if layout is not None:
            return layout
    started = time.perf_counter()
    audio = decode_audio(Path(path), max_seconds)
    decoded = time.perf_counter()
    chunks = plan_audio(audio, bound)
    return Prepared(audio, chunks, decoded - started, time.perf_counter() - decoded, peak(audio))


def _warm() -> None:
    """Load what decoding and planning use, so a job's first item does not wait for it."""
    import av  # noqa: F401
    import soxr  # noqa: F401
    from faster_whisper.vad import get_vad_model

    get_vad_model()


def default_processes() -> int:
    return max(1, os.cpu_count() or 1)


class DecodePool:
    """A pool of decoding processes, started at its first use and shared by the worker's jobs.

    processes=0 decodes in a thread of this process instead (a worker with one core gains nothing
    from another process).
    """

    def __init__(self, processes: int | None = None) -> None:
        self.processes = default_processes() if processes is None else processes
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _pool(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._executor is None:
                # spawn, not fork: the worker has model threads (CTranslate2, torch) a fork would
                # copy in whatever state they are.
                context = multiprocessing.get_context("spawn")
                self._executor = ProcessPoolExecutor(self.processes, mp_context=context)
            return self._executor

    def start(self) -> None:
        """Start every process and load its libraries now (at worker start), not in a job."""
        if self.processes > 0:
            pool = self._pool()
            for future in [pool.submit(_warm) for _ in range(self.processes)]:
                future.result()

    async def prepare(self, path: Path, max_seconds: float, bound: float | None) -> Prepared:
        """Decode and plan one file: a long one in stretches on several processes at once."""
        prepared = await self._run(prepare_audio, str(path), max_seconds, bound)
        if isinstance(prepared, Prepared):
            return prepared
        try:
            return await self._prepare_in_stretches(path, prepared, max_seconds, bound)
        except SeamMismatch as error:
            log.info("%s: decoding in one pass (%s)", path.name, error)
        whole = await self._run(prepare_audio, str(path), max_seconds, bound, True)
        assert isinstance(whole, Prepared)
        return whole

    async def _prepare_in_stretches(
        self, path: Path, layout: Layout, max_seconds: float, bound: float | None
    ) -> Prepared:
        if layout.seconds > max_seconds:
            raise too_long(layout.seconds, max_seconds)
        started = time.perf_counter()
        joined = StretchJoin(layout)
        loudest = 0.0

        async def place(index: int) -> None:
            nonlocal loudest
            stretch = await self._run(decode_stretch, str(path), layout, index, joined.target)
            loudest = max(loudest, stretch.peak)
            joined.add(index, stretch)

        try:
            # Every stretch finished before the shared file closes, even when one failed.
            placed = await asyncio.gather(
                *(place(i) for i in range(len(layout.starts))), return_exceptions=True
            )
        finally:
            joined.close()
        for outcome in placed:
            if isinstance(outcome, BaseException):
                raise outcome
        audio = joined.join()
        if audio.size > max_seconds * SAMPLE_RATE:
            raise too_long(audio.size / SAMPLE_RATE, max_seconds)
        decoded = time.perf_counter()
        chunks = await asyncio.to_thread(plan_audio, audio, bound)
        return Prepared(audio, chunks, decoded - started, time.perf_counter() - decoded, loudest)

    async def _run(self, func: Callable[..., T], *args: Any) -> T:
        """func(*args) in a pool process (in a thread when the pool has none)."""
        if self.processes == 0:
            return await asyncio.to_thread(func, *args)
        pool = self._pool()
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(pool, func, *args)
        except BrokenProcessPool:
            # A decoding process died (out of memory on a huge file, say): this item fails, and
            # the next one gets a fresh pool.
            with self._lock:
                if self._executor is pool:
                    self._executor = None
            pool.shutdown(wait=False, cancel_futures=True)
            raise

    def shutdown(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)


_DECODE_POOLS: dict[int, DecodePool] = {}


def shared_pool(processes: int) -> DecodePool:
    """The worker's decode pool of that many processes, shared by its jobs (started at first use)."""
    if processes not in _DECODE_POOLS:
        _DECODE_POOLS[processes] = DecodePool(processes)
    return _DECODE_POOLS[processes]
