"""The parent of each local worker process: it ends the worker's whole process group with the endpoint.

    python -I -S guard.py FD -- COMMAND...

The endpoint holds the only write end of a pipe whose read end is FD. However the endpoint ends
(stopped, SIGKILL, out of memory, a crash), the kernel closes that write end, the read returns
end-of-file and the guard SIGKILLs its process group: the worker, the runpod ping process and any
decode processes with it, whatever the worker's own code does. A guard started after the endpoint
died sees end-of-file at once. SIGTERM, SIGINT and SIGHUP are passed on to the worker; the guard
exits as the worker did. Standard library only, run without site: it starts in a few milliseconds.
"""

from __future__ import annotations

import os
import signal
import sys
import threading


def _watch(fd: int) -> None:
    while True:
        try:
            if not os.read(fd, 1):  # the endpoint never writes: only end-of-file comes
                break
        except InterruptedError:
            continue
        except OSError:
            break
    os.killpg(os.getpgrp(), signal.SIGKILL)


def main(argv: list[str]) -> None:
    if len(argv) < 4 or argv[2] != "--":
        sys.stderr.write("usage: guard.py FD -- COMMAND...\n")
        os._exit(2)
    fd, command = int(argv[1]), argv[3:]
    child = os.fork()
    if child == 0:
        os.close(fd)
        try:
            os.execvp(command[0], command)
        except OSError as error:
            sys.stderr.write(f"stenopod worker guard: cannot start {command[0]}: {error}\n")
            sys.stderr.flush()
        os._exit(127)
    threading.Thread(target=_watch, args=(fd,), daemon=True).start()

    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    _, status = os.waitpid(child, 0)
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)


if __name__ == "__main__":
    main(sys.argv)
