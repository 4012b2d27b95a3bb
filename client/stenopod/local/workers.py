"""Worker processes of the local endpoint: spawn, relay their logs, restart them, stop them.

How many a machine may run is worker_limits.py's; the environment each one gets is worker_env.py's.

Each worker runs the unmodified runpod worker loop in production mode, pointed at this server's
worker routes through the RUNPOD_WEBHOOK_* variables. A worker gets a fresh id and token for every
process it starts, so a request from a process that already died (the runpod ping runs in a child
process that can outlive its parent) is refused instead of being mistaken for its successor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

log = logging.getLogger("stenopod.local")

MAX_RESTART_DELAY_S = 30.0

# Every worker process runs under guard.py, which ends the worker's process group when the endpoint
# is gone, however it went (see guard.py): the worker's own parent watch cannot see a zombie
# endpoint, a worker other than `python -m handler`, nor the ping process of a SIGKILLed worker.
GUARD_PATH = str(Path(__file__).resolve().with_name("guard.py"))


@dataclass(eq=False)
class Worker:
    """One incarnation of a worker slot: a process and the server's view of it."""

    slot: int
    id: str
    token: str = field(repr=False)  # a secret: kept out of reprs, logs and test failure output
    started_at: float = field(default_factory=time.monotonic)
    process: asyncio.subprocess.Process | None = None
    ready: bool = False  # it has called the server at least once
    stopping: bool = False  # being stopped: its long-polls answer "nothing" at once
    jobs: set[str] = field(default_factory=set)  # ids of jobs it is running
    stop_queue: list[str] = field(default_factory=list)  # job ids to hand out on job-stop
    stop_wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    stop_deadlines: dict[str, float] = field(default_factory=dict)  # job id -> must have let go by

    @classmethod
    def new(cls, slot: int) -> Worker:
        return cls(slot=slot, id=f"w{slot}-{secrets.token_hex(4)}", token=secrets.token_urlsafe(24))

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None


EnvFactory = Callable[[Worker], dict[str, str]]
ExitListener = Callable[[Worker, int], None]


class WorkerPool:
    """N worker slots, each kept running by a supervisor task until the pool stops."""

    def __init__(
        self,
        count: int,
        command: list[str],
        env_for: EnvFactory,
        on_exit: ExitListener,
        wake: Callable[[], None],
        *,
        log_dir: Path | None = None,
        stop_grace_s: float = 5.0,
    ) -> None:
        if count < 1:
            raise ValueError(f"workers must be at least 1, got {count}")
        self.count = count
        self.command = list(command)
        self.log_dir = log_dir
        self.stop_grace_s = stop_grace_s
        self._env_for = env_for
        self._on_exit = on_exit
        self._wake = wake
        self._closing = False
        self._by_id: dict[str, Worker] = {}
        self._crashing: set[int] = set()  # slots waiting out a restart backoff
        self._supervisors: list[asyncio.Task[None]] = []
        self._stoppers: set[asyncio.Task[None]] = set()
        self._lifeline: tuple[int, int] | None = None  # (read, write): see guard.py
        self.restarts = 0

    # ---- queries ------------------------------------------------------------------------------
    def get(self, worker_id: str) -> Worker | None:
        return self._by_id.get(worker_id)

    def workers(self) -> list[Worker]:
        return list(self._by_id.values())

    def counts(self) -> dict[str, int]:
        live = [w for w in self._by_id.values() if w.alive and not w.stopping]
        running = sum(1 for w in live if w.jobs)
        idle = sum(1 for w in live if w.ready and not w.jobs)
        return {
            "idle": idle,
            "initializing": sum(1 for w in live if not w.ready),
            "ready": idle,
            "running": running,
            "throttled": 0,
            "unhealthy": len(self._crashing),
        }

    # ---- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        # Both ends are close-on-exec: only the guards get the read end (pass_fds), and the write
        # end stays in this process alone, so its end-of-file means this pool is gone.
        self._lifeline = os.pipe()
        self._supervisors = [
            asyncio.create_task(self._supervise(slot), name=f"stenopod-worker-{slot}")
            for slot in range(1, self.count + 1)
        ]

    async def stop(self) -> None:
        self._closing = True
        await asyncio.gather(*(self.terminate(w) for w in self.workers()), return_exceptions=True)
        for task in self._supervisors:
            task.cancel()
        await asyncio.gather(*self._supervisors, *self._stoppers, return_exceptions=True)
        if self._lifeline is not None:
            for fd in self._lifeline:  # any guard still running now ends its group
                os.close(fd)
            self._lifeline = None

    def restart(self, worker: Worker, reason: str) -> None:
        """Stop a worker's process in the background; its supervisor starts a fresh one."""
        if worker.stopping or not worker.alive:
            return
        log.warning("restarting worker %s: %s", worker.id, reason)
        task = asyncio.create_task(self.terminate(worker))
        self._stoppers.add(task)
        task.add_done_callback(self._stoppers.discard)

    async def terminate(self, worker: Worker) -> None:
        """SIGTERM (the runpod loop finishes its current job and exits), then SIGKILL after the grace."""
        worker.stopping = True
        worker.stop_wakeup.set()
        self._wake()
        proc = worker.process
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), self.stop_grace_s)
        except asyncio.TimeoutError:
            _kill_group(proc.pid)
            await proc.wait()

    # ---- supervision --------------------------------------------------------------------------
    async def _supervise(self, slot: int) -> None:
        fast_failures = 0
        while not self._closing:
            worker = Worker.new(slot)
            self._by_id[worker.id] = worker
            try:
                returncode = await self._run_once(worker)
            except OSError as error:
                log.error("worker slot %d could not start %s: %s", slot, self.command, error)
                returncode = -1
            finally:
                self._by_id.pop(worker.id, None)
            self._on_exit(worker, returncode)
            if self._closing:
                return
            # A worker that never reached the server (import error, missing model) is retried with a
            # growing delay instead of in a tight loop; a deliberate restart comes back at once.
            if worker.ready or worker.stopping:
                fast_failures = 0
                delay = 0.0
            else:
                fast_failures += 1
                delay = min(0.5 * 2 ** (fast_failures - 1), MAX_RESTART_DELAY_S)
            if not worker.stopping:
                log.warning(
                    "worker %s exited with code %s; restarting in %.1f s (log: %s)",
                    worker.id,
                    returncode,
                    delay,
                    self._log_path(slot) or "relayed to stderr",
                )
            self.restarts += 1
            if delay:
                self._crashing.add(slot)
                try:
                    await asyncio.sleep(delay)
                finally:
                    self._crashing.discard(slot)

    async def _run_once(self, worker: Worker) -> int:
        if self._lifeline is None:
            raise OSError("the worker pool is stopped")
        lifeline = self._lifeline[0]
        log_file = self._open_log(worker)
        try:
            worker.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-I",
                "-S",
                GUARD_PATH,
                str(lifeline),
                "--",
                *self.command,
                pass_fds=(lifeline,),
                env=self._env_for(worker),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file if log_file is not None else asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                # Own process group: Ctrl-C on the server's terminal does not hit the workers (the
                # server stops them in order), and the whole group can be reaped at once.
                start_new_session=True,
            )
        finally:
            if log_file is not None:
                log_file.close()  # the child holds its own descriptor
        proc = worker.process
        relay = None
        if proc.stdout is not None:
            relay = asyncio.create_task(_relay_output(proc.stdout, worker.id))
        log.info("worker %s started (pid %d)", worker.id, proc.pid)
        try:
            returncode = await proc.wait()
        finally:
            # The runpod ping process is a child that survives its parent's os._exit or SIGKILL.
            _kill_group(proc.pid)
        if relay is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(relay, 5)
        return returncode

    def _log_path(self, slot: int) -> Path | None:
        return None if self.log_dir is None else self.log_dir / f"worker-{slot}.log"

    def _open_log(self, worker: Worker) -> IO[bytes] | None:
        path = self._log_path(worker.slot)
        if path is None:
            return None
        handle = path.open("ab")
        handle.write(f"==== stenopod: worker {worker.id} starting: {' '.join(self.command)}\n".encode())
        handle.flush()
        return handle


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


async def _relay_output(stream: asyncio.StreamReader, worker_id: str) -> None:
    """Without a log folder, worker output goes to our stderr, each line tagged with the worker."""
    while True:
        try:
            line = await stream.readline()
        except ValueError:  # a line longer than the reader's limit: pass it on in pieces
            line = await stream.read(64 * 1024)
        if not line:
            return
        sys.stderr.write(f"[{worker_id}] {line.decode('utf-8', 'replace').rstrip()}\n")
        sys.stderr.flush()
