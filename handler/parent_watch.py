"""A local endpoint's worker ends when the endpoint that started it is gone.

`stenopod serve` (and the CLI's embedded endpoint) run workers in their own process group, so a
Ctrl-C reaches the server and not the workers, and the server stops them in order. When the
server dies without that (SIGKILL, a SIGTERM without handler, a crash), nobody is left to stop
them: the runpod loop would poll a dead address forever, holding a model in memory. The server
names itself in STENOPOD_PARENT_PID; a worker that is re-parented, or whose server pid no longer
exists, ends its whole group, the runpod ping process included. RunPod's own
workers never have the variable, so nothing watches there.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

PARENT_ENV = "STENOPOD_PARENT_PID"
CHECK_INTERVAL_S = 1.0

log = logging.getLogger("stenopod.handler.parent_watch")


def parent_gone(server_pid: int, first_parent_pid: int) -> bool:
    """The server is gone: this process was re-parented (the usual case: the server started it),
    or the server's pid no longer exists (a wrapper command between them still runs)."""
    if os.getppid() != first_parent_pid:
        return True
    try:
        os.kill(server_pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, owned by someone else: not ours to judge
        return False
    return False


def _watch(server_pid: int, first_parent_pid: int, interval_s: float) -> None:
    stop = threading.Event()
    while not stop.wait(interval_s):
        if parent_gone(server_pid, first_parent_pid):
            log.warning("the local endpoint (pid %d) is gone; this worker stops", server_pid)
            os.killpg(os.getpgrp(), signal.SIGKILL)


def watch_parent(parent_pid: int | None, interval_s: float = CHECK_INTERVAL_S) -> threading.Thread | None:
    """Start the watch when a parent (STENOPOD_PARENT_PID, WorkerSettings.parent_pid) is named."""
    if parent_pid is None:
        return None
    thread = threading.Thread(
        target=_watch, args=(parent_pid, os.getppid(), interval_s), name="parent-watch", daemon=True
    )
    thread.start()
    return thread
